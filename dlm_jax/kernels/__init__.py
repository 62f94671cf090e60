"""Transition kernels of the interpolating family (DESIGN.md §3)."""

from dlm_jax.kernels.interpolating import make_kernel  # noqa: F401

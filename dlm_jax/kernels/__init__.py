"""Transition kernels: schedules, the family and its registry (family.py), one module per
structure (markov.py, topk.py), neighbour tables (neighbors.py), dense references for tests
(reference.py)."""

from dlm_jax.kernels.family import KERNELS, Kernel, make_kernel  # noqa: F401

"""Diffusion processes: the shared base (process.py), one module per member (masking.py,
uniform.py, semdlm.py, semdlm_plus_mask.py, semdlm_plus_uniform.py, topk.py), the pieces the
Markov members share (clusters.py, global_jump.py), the registry (family.py: make_process),
schedules, neighbour tables (neighbors.py) and dense references for tests (reference.py)."""

from dlm_jax.kernels.family import KERNELS, make_process  # noqa: F401
from dlm_jax.kernels.process import Process  # noqa: F401

"""CPU quickstart (configs/quickstart.py) with SemDLM+: semantic kernel plus a late global
transition (kernel.global_kind=uniform or mask). Only the kernel differs from the masking
setup.
"""

from configs import base, quickstart


def get_config():
  return base.use_kernel(quickstart.get_config(), "semdlm_plus")

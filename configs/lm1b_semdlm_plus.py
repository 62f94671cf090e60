"""LM1B (configs/lm1b_masking.py) with SemDLM+: semantic kernel plus a late global transition
(kernel.global_kind=uniform or mask). Only the kernel differs from the masking setup.
"""

from configs import base, lm1b_masking


def get_config():
  return base.use_kernel(lm1b_masking.get_config(), "semdlm_plus")

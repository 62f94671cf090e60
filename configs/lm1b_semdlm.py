"""LM1B (configs/lm1b_masking.py) with SemDLM: corruption towards semantic neighbours
(kernel.neighbors=partition (A), exact NELBO; topk (B), a bound). Only the kernel differs from
the masking setup.
"""

from configs import base, lm1b_masking


def get_config():
  return base.use_kernel(lm1b_masking.get_config(), "semdlm")

"""CPU quickstart (configs/quickstart.py) with SemDLM: corruption towards semantic neighbours
(kernel.neighbors=partition (A), exact NELBO; topk (B), a bound). Only the kernel differs from
the masking setup.
"""

from configs import base, quickstart


def get_config():
  return base.use_kernel(quickstart.get_config(), "semdlm")

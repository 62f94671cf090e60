"""CPU quickstart (configs/quickstart.py) with the uniform kernel. Only the kernel differs from
the masking setup.
"""

from configs import base, quickstart


def get_config():
  return base.use_kernel(quickstart.get_config(), "uniform")

"""OpenWebText (configs/owt_masking.py) with the uniform kernel. Only the kernel differs from the
masking setup.
"""

from configs import base, owt_masking


def get_config():
  return base.use_kernel(owt_masking.get_config(), "uniform")

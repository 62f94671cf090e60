"""OpenWebText (configs/owt_masking.py) with SemDLM+: semantic kernel plus a late global
transition (kernel.global_kind=uniform or mask). Only the kernel differs from the masking
setup.

  python -m dlm_jax.train --config=configs/owt_semdlm_plus.py --workdir=gs://.../run1
"""

from configs import base, owt_masking


def get_config():
  return base.use_kernel(owt_masking.get_config(), "semdlm_plus")

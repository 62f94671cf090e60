"""CPU quickstart with the semdlm_plus kernel (see configs/quickstart.py).

Global transition: uniform jump by default; --config.kernel.global_kind=mask for the mask.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.kernel.name = "semdlm_plus"
  c.model.time_conditioning = True     # x_hat depends on t once tokens can be corrupted
  return c

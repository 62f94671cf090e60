"""CPU quickstart with the semdlm kernel (see configs/quickstart.py).

Partition neighbourhoods (A) by default; --config.kernel.neighbors=topk for (B).
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.kernel.name = "semdlm"
  c.model.time_conditioning = True     # x_hat depends on t once tokens can be corrupted
  return c

"""CPU quickstart with the uniform kernel (see configs/quickstart.py)."""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.kernel.name = "uniform"
  c.model.time_conditioning = True     # x_hat depends on t once tokens can be corrupted
  return c

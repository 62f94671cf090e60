"""lm1b with the semdlm kernel: the lm1b_masking.py setup with only the kernel changed."""

from configs import lm1b_masking


def get_config():
  c = lm1b_masking.get_config()
  c.kernel.name = "semdlm"
  c.kernel.k = 8
  c.model.time_conditioning = True     # x_hat depends on t once tokens can be corrupted
  return c

"""owt with the semdlm kernel: the owt_masking.py setup with only the kernel changed."""

from configs import owt_masking


def get_config():
  c = owt_masking.get_config()
  c.kernel.name = "semdlm"
  c.kernel.k = 8
  c.model.time_conditioning = True     # x_hat depends on t once tokens can be corrupted
  return c

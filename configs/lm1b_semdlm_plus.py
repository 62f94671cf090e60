"""lm1b with the semdlm_plus kernel: the lm1b_masking.py setup with only the kernel changed."""

from configs import lm1b_masking


def get_config():
  c = lm1b_masking.get_config()
  c.kernel.name = "semdlm_plus"
  c.kernel.k = 8
  c.kernel.neighbors = "partition"     # (A): exact NELBO; "topk" for (B)
  c.kernel.global_kind = "uniform"     # or "mask"
  c.kernel.global_power = 2.0          # the global transition fires late, ~complete at t = 1
  c.model.time_conditioning = True     # x_hat depends on t once tokens can be corrupted
  return c

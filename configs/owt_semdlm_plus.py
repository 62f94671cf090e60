"""OpenWebText with SemDLM+: the owt_masking.py setup (DiT-small, L = 1024, batch 512,
AdamW 3e-4, EMA 0.9999) with the semantic kernel plus a global uniform transition.

  python -m dlm_jax.train --config=configs/owt_semdlm_plus.py --workdir=gs://.../run1
"""

from configs import owt_masking


def get_config():
  c = owt_masking.get_config()
  c.kernel.name = "semdlm_plus"
  c.kernel.k = 8
  c.kernel.neighbors = "partition"     # (A): exact NELBO; "topk" for (B)
  c.kernel.global_kind = "uniform"     # or "mask"
  c.kernel.global_power = 2.0          # the global transition fires late, ~complete at t = 1
  c.model.time_conditioning = True     # x_hat depends on t once tokens can be corrupted
  return c

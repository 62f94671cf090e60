r"""OpenWebText (configs/owt_masking.py) with SemDLM: corruption towards semantic neighbours
(kernel.neighbors=partition (A), exact NELBO; topk (B), a bound). Only the kernel differs from
the masking setup, and the neighbour table counts the first 100M training tokens
(kernel.cooc_max_tokens). The order of the commands (prepare, build_neighbors, train):
configs/owt_semdlm_plus.py.
"""

from configs import base, owt_masking


def get_config():
  c = base.use_kernel(owt_masking.get_config(), "semdlm")
  c.kernel.cooc_max_tokens = 100_000_000
  return c

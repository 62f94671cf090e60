r"""OpenWebText (configs/owt_masking.py) with SemDLM+: semantic kernel plus a late global
transition (kernel.global_kind=uniform or mask). Only the kernel differs from the masking
setup, and the neighbour table counts co-occurrences over the first 100M training tokens
(kernel.cooc_max_tokens). Measured at V = 50,257 on a 2-core CPU (docs/kernels.md "Cost"):
counting 0.64 s per million tokens at 4M tokens, PPMI + SVD 35 s, partition 1.4 s, top-k
58 s, peak 3.1 GiB; `python benchmarks/neighbors.py --tokens=...` measures other sizes.

In this order (the table is a file of its own: built once, before training, by one command):

  # 1. tokenize once into ArrayRecord shards (streamed; any number of hosts can then read)
  python -m dlm_jax.data.prepare --config=configs/owt_semdlm_plus.py \
      --output_dir=/data/owt_gpt2_1024
  # 2. the neighbour table, from the first 100M tokens of the shards (progress every 10 s)
  python -m dlm_jax.kernels.build_neighbors --config=configs/owt_semdlm_plus.py \
      --config.data.prepared_dir=/data/owt_gpt2_1024 --workdir=gs://.../run1
  # 3. train (finds the table by its fingerprint; a missing one is built first, as in 2)
  python -m dlm_jax.train --config=configs/owt_semdlm_plus.py \
      --config.data.prepared_dir=/data/owt_gpt2_1024 --workdir=gs://.../run1
"""

from configs import base, owt_masking


def get_config():
  c = base.use_kernel(owt_masking.get_config(), "semdlm_plus")
  c.kernel.cooc_max_tokens = 100_000_000
  return c

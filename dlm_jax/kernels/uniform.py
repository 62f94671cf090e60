"""The uniform process (UDLM, arXiv 2412.10193; Duo, arXiv 2506.10892): every token jumps to a
uniformly drawn token (docs/design.md §2). Its loss is the uniform jump of global_jump.py with
every token its own cluster: one pass over V.
"""

from __future__ import annotations

from dlm_jax.kernels import global_jump
from dlm_jax.kernels.clusters import MarkovProcess


class Uniform(MarkovProcess):

  def integrand(self, logits, x, z, t, key=None):
    del key
    return global_jump.integrand(self, logits, x, z, t)

"""SemDLM+ with the uniform global part, on a partition table: a token moves within its
cluster or jumps to a uniformly drawn token (docs/design.md §2).

Its loss is the uniform jump of global_jump.py over the clusters. The integrand reads the
logits slot by slot (slot k of every cluster, then slot k + 1): the network's head emits them
in that order (its weight columns permuted, `integrand_from_head`), so that per-cluster sums
are a sum of K slabs and no (B, L, V) gather is ever needed.
"""

from __future__ import annotations

from dlm_jax.kernels import global_jump
from dlm_jax.kernels.clusters import MarkovProcess


class SemDLMPlusUniform(MarkovProcess):

  def integrand(self, logits, x, z, t, key=None):
    """From logits in vocabulary order. (B, L) nats."""
    del key
    return global_jump.integrand(self, logits, x, z, t)

  def integrand_from_head(self, head, h, x, z, t, key=None):
    del key
    columns = self.table.members.T.reshape(-1)
    return global_jump.on_columns(self, head(h, columns), x, z, t)

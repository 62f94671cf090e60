"""SemDLM+ with the mask as its global part, on a partition table (C = 0): a token moves
within its cluster or is masked (docs/design.md §2).

A real z stays in x's cluster (semdlm.within_cluster_integrand); for z = m the KL between
q~(. | x) and q~(. | x_hat) lives on c(x), where q~(y | x_hat) = A x_hat(y) + B / n x_hat(c(x)):
one log-sum-exp over V, then O(k) per token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm_jax.kernels import logspace
from dlm_jax.kernels.clusters import MarkovProcess, e3
from dlm_jax.kernels.semdlm import within_cluster_integrand


class SemDLMPlusMask(MarkovProcess):

  def integrand(self, logits, x, z, t, key=None):
    """(B, L) nats."""
    del key
    table = self.table
    A, B, _, _ = self.coefficients(t)
    masked = z == self.mask_id
    real = within_cluster_integrand(self, logits, x, jnp.where(masked, x, z), t)
    logits = logits.astype(jnp.float32)
    members = table.members[table.cluster[x]]
    valid = members >= 0
    y = jnp.where(valid, members, 0)
    n = table.size[x][..., None]
    log_p = jnp.where(valid, jnp.take_along_axis(logits, y, -1)
                      - jax.nn.logsumexp(logits, -1, keepdims=True), logspace.NEG)
    log_q_hat = logspace.logsumexp_stack([
        e3(logspace.log(A)) + log_p,
        e3(logspace.log(B)) - jnp.log(n) + jax.nn.logsumexp(log_p, -1, keepdims=True)])
    q_x = e3(A) * (valid & (y == x[..., None])) + e3(B) / n
    kl = jnp.sum(jnp.where(valid & (q_x > 0), q_x * (logspace.log(q_x) - log_q_hat), 0.0), -1)
    return jnp.where(masked, self.masked_rate_weight(t)[:, None] * kl, real)

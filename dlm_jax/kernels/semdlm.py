"""SemDLM on a partition table: tokens are corrupted towards the other members of their
semantic cluster and never leave it (docs/design.md §2).

z stays in x's cluster, so x, the candidates C(z) and every y with r(y -> z) > 0 lie in c(z):
the integrand is computed on the k members of c(z) alone, one gather of the logits and then
O(k) per token (no pass over V).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.kernels import logspace
from dlm_jax.kernels.clusters import MarkovProcess, e3, kl_term, log_source_weights


def within_cluster_integrand(process, logits, x, z, t):
  """The exact integrand for a real z in x's cluster, on the members of c(z). (B, L) nats."""
  table = process.table
  A, B, _, _ = process.coefficients(t)
  s_sem = process.rates(t)[0]
  members = table.members[table.cluster[z]]                           # (B, L, k), -1 pad
  valid = members >= 0
  y = jnp.where(valid, members, 0)
  n = table.size[z][..., None]
  # Padding slots hold no token: were they read as token 0, z = 0 or x = 0 would match them.
  is_z, is_x = valid & (y == z[..., None]), valid & (y == x[..., None])
  candidate = valid & (is_z | (e3(B) > 0))
  picked = jnp.take_along_axis(logits.astype(jnp.float32), y, -1)
  log_x_hat = jax.nn.log_softmax(jnp.where(candidate, picked, logspace.NEG), -1)
  # Within one cluster q~(y | x') = A [y = x'] + B / n.
  q_z = e3(A) * is_z + e3(B) / n                                       # q~(z | x') over x'
  log_w = log_source_weights(process, log_x_hat, q_z, candidate, (-1,))
  log_rho_hat = logspace.logsumexp_stack([
      e3(logspace.log(A)) + log_w,
      e3(logspace.log(B)) - jnp.log(n) + jax.nn.logsumexp(log_w, -1, keepdims=True)])
  q_x = jnp.where(valid, e3(A) * is_x + e3(B) / n, 0.0)               # q~(y | x) over y
  log_q_x = logspace.log(q_x)
  log_rho = log_q_x - jnp.sum(jnp.where(is_z, log_q_x, 0.0), -1, keepdims=True)
  rho = jnp.where(q_x > 0, jnp.exp(log_rho), 0.0)
  term = kl_term(q_x > 0, rho, log_rho, log_rho_hat)
  live = valid & ~is_z & (e3(s_sem) > 0)
  return jnp.sum(jnp.where(live, e3(s_sem) / n * term, 0.0), -1)


class SemDLM(MarkovProcess):

  def integrand(self, logits, x, z, t, key=None):
    del key
    return within_cluster_integrand(self, logits, x, z, t)

  def prior_floor(self):
    """Pure SemDLM never leaves a token's cluster, so p_1 must guess the cluster: the
    cross-entropy of the training unigram inside each token's cluster, per token (V,)."""
    unigram = np.asarray(self.unigram, np.float64)
    cluster = np.asarray(self.table.cluster)
    mass = np.bincount(cluster, weights=unigram)[cluster]
    return -np.log(np.maximum(unigram, 1e-300) / np.maximum(mass, 1e-300))

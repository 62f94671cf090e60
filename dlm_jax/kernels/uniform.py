"""The uniform process (UDLM, arXiv 2412.10193; Duo, arXiv 2506.10892): every token jumps to a
uniformly drawn token (docs/design.md §2).

The mean-form loss in closed form (docs/design.md §3), two passes over V: the head's
log-sum-exp and one fused pass of a_y = c x_hat(y), c = N alpha / (1 - alpha). With
rho0 = (1 - alpha) / q-bar(z | x) the true reverse ratio of every y outside {x, z} and
u_y = K (1 + a_y), K = q-bar(z | x) / q-bar(z | x_hat), the bulk sum is
  sum_y f(u_y) = M f(K) + (K - 1) sum_y a_y + sum_y (a_y - log1p(a_y)),   f(u) = u - 1 - log u,
each part >= 0 or a product of per-token scalars, so nothing cancels; the token x (when it is
not z) is one exact log-space term. The mixture form keeps global_jump.py's form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm_jax.kernels import global_jump
from dlm_jax.kernels.clusters import MarkovProcess, kl_term


def mean_integrand(process, logits, x, z, t):
  """The exact mean-form integrand of the uniform process. (B, L) nats."""
  N = process.vocab_size
  ftype = jnp.promote_types(logits.dtype, jnp.float32)
  logits = logits.astype(ftype)
  one_minus = process.glob.one_minus_alpha(t).astype(ftype)[:, None]          # (B, 1)
  alpha = process.glob.alpha(t).astype(ftype)[:, None]
  rate = process.glob.rate(t).astype(ftype)[:, None]
  live = one_minus > 0
  # c = N alpha / (1 - alpha), capped at e^80 (1 - alpha > N e^-80 at every t float32 draws):
  # then a_y = c x_hat(y) <= c and its sums stay finite.
  log_c = jnp.minimum(jnp.log(N * alpha) - jnp.log(jnp.where(live, one_minus, 1.0)), 80.0)
  top = jax.lax.stop_gradient(jnp.max(logits, -1, keepdims=True))
  e = jnp.exp(logits - top)                                  # one exponential per entry
  total_e = jnp.sum(e, -1, keepdims=True)
  lse = (top + jnp.log(total_e))[..., 0]                                      # (B, L)
  shift = (log_c - lse)[..., None]
  a = e * (jnp.exp(log_c)[..., None] / total_e)                                # c x_hat
  vocab = jnp.arange(N)
  bulk = (vocab != x[..., None]) & (vocab != z[..., None])
  sum_a = jnp.sum(jnp.where(bulk, a, 0.0), -1)
  sum_gap = jnp.sum(jnp.where(bulk, a - jnp.log1p(a), 0.0), -1)
  at = lambda y: jnp.take_along_axis(logits, y[..., None], -1)[..., 0] + shift[..., 0]
  ell_z, ell_x = jax.nn.softplus(at(z)), jax.nn.softplus(at(x))               # log1p(c x_hat)
  same = z == x
  log1p_c = jax.nn.softplus(log_c)
  log_k = jnp.where(same, log1p_c, 0.0) - ell_z
  bulk_size = N - 1 - (~same).astype(ftype)
  rho0 = jnp.exp(-jnp.where(same, log1p_c, 0.0))
  f_k = kl_term(True, 1.0, 0.0, log_k)                 # K - 1 - log K, no cancellation
  bulk_sum = bulk_size * f_k + jnp.expm1(log_k) * sum_a + sum_gap
  to_x = kl_term(True, jnp.exp(log1p_c), log1p_c, ell_x - ell_z)          # y = x, when != z
  total = rate / N * (rho0 * bulk_sum + jnp.where(same, 0.0, to_x))
  return jnp.where(live, total, 0.0)


class Uniform(MarkovProcess):

  def integrand(self, logits, x, z, t, key=None):
    del key
    if self.mean_form:
      return mean_integrand(self, logits, x, z, t)
    return global_jump.integrand(self, logits, x, z, t)

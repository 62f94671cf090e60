"""Top-k (B) kernels: N_x is x's k most similar tokens (docs/design.md §2, §4, §5).

N is not idempotent, so the process is not Markov in z: the marginals come from the
x-conditioned jump-in rates g_t^x(z) = g_sem N_x(z) + g_glob / V + g_mask [z = m], and the
NELBO is a valid bound that stays loose even for a perfect denoiser. This module owns the
candidate set C(z) (through the inverted table of in-neighbours), the integrand (exact, or
with an unbiased estimate of its uniform-target sum) and the exact posterior step. One process
class serves SemDLM and SemDLM+ (either global part) on top-k tables: one loss covers them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from dlm_jax.kernels import logspace
from dlm_jax.kernels.process import Process, _alpha, _one_minus_alpha


class TopkTable(struct.PyTreeNode):
  """Device arrays of a top-k table and its inversion."""
  ids: Any              # (V, k) N_x's ids, -1 padded
  weights: Any          # (V, k) N_x's weights
  in_ids: Any           # (V, k_in) the x with z in N_x
  in_weights: Any       # (V, k_in) N_x(z)
  kind = "topk"

  @classmethod
  def from_numpy(cls, table) -> "TopkTable":
    return cls(ids=jnp.asarray(table.ids), weights=jnp.asarray(table.weights),
               in_ids=jnp.asarray(table.in_ids), in_weights=jnp.asarray(table.in_weights))


def _row_lookup(ids, weights, y):
  """N_x(y) for rows (ids, weights): (..., k) and targets y: (..., m) -> (..., m)."""
  hit = ids[..., None, :] == y[..., :, None]
  return jnp.sum(jnp.where(hit, weights[..., None, :], 0.0), -1)


def log_pushed(table, log_v):
  """log sum_x' v(x') N_x'(y) for every y, from log v: (B, L, V). A scan over the k_in
  in-neighbour slots gathers one (B, L, V) array at a time."""
  top = jax.lax.stop_gradient(jnp.max(log_v, -1, keepdims=True))
  flat = jnp.exp(log_v - top).reshape(-1, log_v.shape[-1])

  def add(acc, slot):
    ids, weights = slot
    return acc + jnp.take(flat, jnp.where(ids >= 0, ids, 0), axis=-1) * jnp.where(
        ids >= 0, weights, 0.0), None

  pushed, _ = jax.lax.scan(add, jnp.zeros_like(flat), (table.in_ids.T, table.in_weights.T))
  return logspace.log(pushed).reshape(log_v.shape) + top


class Topk(Process):
  """SemDLM / SemDLM+ on a top-k table: not Markov in z; its NELBO is a valid bound that stays
  loose even for a perfect denoiser."""
  exact_nelbo = False

  def jump_in_coefficients(self, t):
    """g_t^x = g_sem N_x + g_glob u + g_mask delta_m (docs/design.md §4), >= 0; 1 - alpha
    from the schedules (by subtraction it is 0 at small t in float32)."""
    s_sem, s_glob, s_mask = self.rates(t)
    a_glob, kappa = _alpha(self.glob, t), self.coefficients(t)[3]
    g_sem = s_sem * a_glob * kappa
    g_glob = (s_sem * _one_minus_alpha(self.glob, t) + s_glob) * kappa
    g_mask = s_mask + self.one_minus_kappa(t) * (s_sem + s_glob)
    return g_sem, g_glob, g_mask

  def neighbour_weight(self, x, z):
    """N_x(z) elementwise."""
    return _row_lookup(self.table.ids[x], self.table.weights[x], z[..., None])[..., 0]

  def _incoming(self, zr):
    """(B, L, V): N_x'(z) for every source x' (a scatter of z's in-neighbours)."""
    V = self.vocab_size
    in_ids, in_w = self.table.in_ids[zr], self.table.in_weights[zr]
    return jnp.zeros(zr.shape + (V + 1,)).at[
        jnp.arange(zr.shape[0])[:, None, None], jnp.arange(zr.shape[1])[None, :, None],
        jnp.where(in_ids >= 0, in_ids, V)].add(in_w)[..., :V]


  def candidates(self, z, t):
    """C(z) = {x : q_t(z | x) > 0} as a (B, L, V) mask (all of V where z is the mask)."""
    _, B, C, _ = self.coefficients(t)
    masked = z == self.mask_id
    zr = jnp.where(masked, 0, z)
    e3 = lambda c: jnp.reshape(c, (-1, 1, 1))
    return ((jnp.arange(self.vocab_size) == zr[..., None]) | (e3(C) > 0) | masked[..., None]
            | ((e3(B) > 0) & (self._incoming(zr) > 0)))


  def log_evidence(self, z, t):
    """log q~_t(z | x') for every x' (B, L, V) (0 where z is the mask)."""
    A, B, C, _ = self.coefficients(t)
    e3 = lambda c: jnp.reshape(c, (-1, 1, 1))
    masked = z == self.mask_id
    zr = jnp.where(masked, 0, z)
    q = self.real_marginal(e3(A), e3(B), e3(C), jnp.arange(self.vocab_size) == zr[..., None],
                             self._incoming(zr))
    return jnp.where(masked[..., None], 0.0, logspace.log(q))


  def integrand(self, logits, x, z, t, key=None):
    """(B) integrand in log space. With a uniform part and self.bulk_samples > 0 the bulk of
    the target sum is an unbiased Monte Carlo estimate (uniform targets); otherwise every term
    is exact. (B, L) nats."""
    V, table = self.vocab_size, self.table
    e2 = lambda c: c[:, None]
    e3 = lambda c: c[:, None, None]
    A, B, C, kappa = self.coefficients(t)
    alpha, ba, bb, bc = kappa * A, kappa * B, kappa * C, self.one_minus_kappa(t)
    g_sem, g_glob, g_mask = self.jump_in_coefficients(t)
    vocab = jnp.arange(V)
    masked = z == self.mask_id
    zr = jnp.where(masked, 0, z)
    ids_x, w_x = table.ids[x], table.weights[x]                          # (B, L, k)

    # Over sources x': q(z | x') and g^{x'}(z); v(x') = x_hat(x') g^{x'}(z) / q(z | x').
    n_to_z = self._incoming(zr)
    is_z = vocab == zr[..., None]
    q_z_src = jnp.where(masked[..., None], e3(bc),
                        e3(kappa) * self.real_marginal(e3(A), e3(B), e3(C), is_z, n_to_z))
    g_src = jnp.where(masked[..., None], e3(g_mask), e3(g_sem) * n_to_z + e3(g_glob) / V)
    cand = q_z_src > 0
    log_x_hat = logspace.restricted_log_softmax(logits, cand)
    # R^(z -> y) = sum_x' v(x') q(y | x'). The mixture form: v(x') = x_hat(x') g^{x'}(z) /
    # q(z | x'). The mean form: v(x') = x_hat(x') g^{x'}(z) / q(z | x_hat), the rate of the
    # chain its sampler runs (x drawn ∝ x_hat(x) q(z | x), then the exact posterior step given
    # x: Process.x_posterior), with q(z | x_hat) the x_hat-mean of q(z | x').
    live = cand & (g_src > 0)
    if self.mean_form:
      log_q_z = jax.nn.logsumexp(jnp.where(cand, log_x_hat + logspace.log(q_z_src), logspace.NEG),
                                 -1, keepdims=True)
    else:
      log_q_z = logspace.log(q_z_src)
    log_v = jnp.where(live, log_x_hat + logspace.log(g_src) - log_q_z, logspace.NEG)
    v = jnp.where(live, jnp.exp(log_v), 0.0)
    log_v_sum = jax.nn.logsumexp(log_v, -1)

    # The true side, for the clean x: R~(y) = true_scale q(y | x).
    n_x_z = _row_lookup(ids_x, w_x, zr[..., None])[..., 0]
    q_z_x = jnp.where(masked, e2(bc),
                      e2(kappa) * self.real_marginal(e2(A), e2(B), e2(C), x == zr, n_x_z))
    g_x = jnp.where(masked, e2(g_mask), e2(g_sem) * n_x_z + e2(g_glob) / V)
    true_scale = jnp.where(q_z_x > 0, g_x / jnp.where(q_z_x > 0, q_z_x, 1.0), 0.0)

    def log_model_rate(y):
      """log R^(z -> y) for real targets y: (B, L, m)."""
      y_in_ids, y_in_w = table.in_ids[y], table.in_weights[y]            # (B, L, m, k_in)
      flat = jnp.where(y_in_ids >= 0, y_in_ids, 0).reshape(y.shape[:2] + (-1,))
      lv_in = jnp.take_along_axis(log_v, flat, -1).reshape(y_in_ids.shape)
      log_in = jax.nn.logsumexp(jnp.where(y_in_ids >= 0, lv_in + logspace.log(y_in_w),
                                          logspace.NEG), -1)
      return logspace.logsumexp_stack([
          e3(logspace.log(alpha)) + jnp.take_along_axis(log_v, y, -1),
          e3(logspace.log(ba)) + log_in,
          e3(logspace.log(bb)) - jnp.log(V) + log_v_sum[..., None]])

    def true_q(y):
      """q(y | x) for real targets y: (B, L, m)."""
      return e3(kappa) * self.real_marginal(e3(A), e3(B), e3(C), y == x[..., None],
                                              _row_lookup(ids_x, w_x, y))

    def log_terms(y, valid):
      r_true = true_scale[..., None] * true_q(y)
      ok = valid & (r_true > 0)
      return jnp.sum(jnp.where(ok, r_true * (logspace.log(r_true) - log_model_rate(y)), 0.0), -1)

    # Special targets S = {x} + N_x (deduplicated, y != z).
    special = jnp.concatenate([x[..., None], jnp.where(ids_x >= 0, ids_x, x[..., None])], -1)
    k1 = special.shape[-1]
    earlier = jnp.tril(jnp.ones((k1, k1), bool), -1)
    dup = jnp.any((special[..., :, None] == special[..., None, :]) & earlier, -1)
    not_z = jnp.where(masked, -1, z)[..., None]
    total = log_terms(special, ~dup & (special != not_z))

    # The mask as a target (real z only): R~ = scale * bc, R^ = bc * sum(v).
    if self.has_mask_token:
      r_true_m = true_scale * e2(bc)
      log_model_m = e2(logspace.log(bc)) + log_v_sum
      total += jnp.where(masked | (r_true_m <= 0), 0.0,
                         r_true_m * (logspace.log(r_true_m) - log_model_m))

    # Bulk targets (uniform part only): real y outside S and != z, each with q(y|x) = bb / V.
    if self.glob is not None and self.bulk_samples > 0:
      y = jax.random.randint(key, x.shape + (self.bulk_samples,), 0, V)
      in_s = jnp.any(y[..., :, None] == special[..., None, :], -1)
      total += log_terms(y, ~in_s & (y != not_z)) * (V / self.bulk_samples)
    elif self.glob is not None:
      # Every y at once: R^(y) over the whole vocabulary, its in-neighbour sum pushed one slot
      # at a time (`_log_pushed`), never as (B, L, V, k_in).
      log_model = logspace.logsumexp_stack([
          e3(logspace.log(alpha)) + log_v,
          e3(logspace.log(ba)) + log_pushed(table, log_v),
          e3(logspace.log(bb)) - jnp.log(V) + log_v_sum[..., None]])
      r_true = (true_scale * e2(bb) / V)[..., None]
      in_s = jnp.any(vocab[:, None] == special[..., None, :], -1)
      ok = ~in_s & (vocab != not_z) & (r_true > 0)
      total += jnp.sum(jnp.where(ok, r_true * (logspace.log(r_true) - log_model), 0.0), -1)

    sum_model = jnp.sum(v * (1.0 - q_z_src), -1)
    sum_true = true_scale * (1.0 - q_z_x)
    return sum_model - sum_true + total


  def posterior_sample(self, key, z, x, t, s):
    """z_s ~ q(z_s | z_t = z, x) for scalar times s < t.

    q(z_t | z_s, x) = a_{t|s} delta_{z_s} + (q_t - a_{t|s} q_s)(z_t | x), so the posterior
    keeps z w.p. a_{t|s} q_s(z|x) / q_t(z|x) and otherwise draws z_s ~ q_s(. | x)."""
    masked = z == self.mask_id
    zr = jnp.where(masked, 0, z)
    n_xz = self.neighbour_weight(x, zr)

    def q_of_z(time):
      A, B, C, kappa = self.coefficients(time)
      return jnp.where(masked, self.one_minus_kappa(time),
                       kappa * self.real_marginal(A, B, C, zr == x, n_xz))

    k_stay, k_fresh = jax.random.split(key)
    keep = self.alpha(t) / self.alpha(s) * q_of_z(s) / q_of_z(t)
    fresh = self.sample_forward(k_fresh, x, jnp.full(z.shape[:1], s))
    return jnp.where(jax.random.uniform(k_stay, z.shape) < keep, z, fresh)

"""Markov kernels: masking, uniform and the partition (A) tables (docs/design.md §2, §3, §5).

With N_y uniform over y's cluster c(y) of n(y) tokens (self included), N is idempotent and
the forward process is a CTMC in z with rates r_t(y -> z) = s_sem' N_y(z) + s_glob' / V
+ s_mask' [z = m]. Masking and uniform are the table-free members (every token its own
cluster). This module owns everything that depends on that structure: the candidate set
C(z), the exact NELBO integrand (in log space: the O(V) reference form and the cheaper
form each kernel runs, `integrand`), and the exact posterior step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.kernels import logspace

EXACT_NELBO = True


@dataclasses.dataclass(frozen=True, eq=False)
class PartitionTable:
  """Device arrays of a partition table. ids/weights: (V, k) rows of N (the cluster)."""
  ids: Any
  weights: Any
  cluster: Any          # (V,) cluster id
  members: Any          # (n_clusters, k_max) ids, -1 padded
  size: Any             # (V,) n(y) = |c(y)|, float32
  kind = "partition"

  @classmethod
  def from_numpy(cls, table) -> "PartitionTable":
    """From a `neighbors.NeighborTable` of kind partition: a row of N lists y's cluster."""
    cluster = np.asarray(table.cluster)
    first = np.zeros(cluster.max() + 1, np.int64)
    first[cluster[::-1]] = np.arange(len(cluster))[::-1]       # one member per cluster
    members = np.asarray(table.ids)[first]
    return cls(ids=jnp.asarray(table.ids), weights=jnp.asarray(table.weights),
               cluster=jnp.asarray(cluster), members=jnp.asarray(members),
               size=jnp.asarray(np.bincount(cluster)[cluster], jnp.float32))


def _grouping(kernel, y):
  """(c(y), n(y)) per token; without a table every token is its own cluster."""
  if kernel.table is None:
    return y, jnp.ones(y.shape, jnp.float32)
  return kernel.table.cluster[y], kernel.table.size[y]


def same_group(kernel, a):
  """[c(a) = c(y)] for every y of the vocabulary: (..., V) for a: (...)."""
  return _grouping(kernel, jnp.arange(kernel.vocab_size))[0] == _grouping(kernel, a)[0][..., None]


def neighbour_weight(kernel, x, z):
  """N_x(z) elementwise (0 without a table)."""
  if kernel.table is None:
    return jnp.zeros(x.shape, jnp.float32)
  cx, n = _grouping(kernel, x)
  return (cx == _grouping(kernel, z)[0]) / n


def candidates(kernel, z, t):
  """C(z) = {x : q_t(z | x) > 0} as a (B, L, V) mask (all of V where z is the mask)."""
  _, B, C, _ = kernel.coefficients(t)
  masked = z == kernel.mask_id
  zr = jnp.where(masked, 0, z)
  e3 = lambda c: jnp.reshape(c, (-1, 1, 1))
  cand = (jnp.arange(kernel.vocab_size) == zr[..., None]) | (e3(C) > 0) | masked[..., None]
  if kernel.table is not None:
    cand |= (e3(B) > 0) & same_group(kernel, zr)
  return cand


def _group_logsumexp(kernel, log_v):
  """For every y, log sum_{y' in c(y)} exp(log_v(y')). log_v: (B, L, V)."""
  if kernel.table is None:
    return log_v
  return _cluster_logsumexp(kernel.table, log_v)


def _member_grid(table, v, fill):
  """v (..., V) laid out on the (n_clusters, k_max) member grid; padding slots = fill."""
  flat = v.reshape(-1, v.shape[-1])      # 2-D: XLA:CPU gathers a 3-D minor axis ~8x slower
  valid = table.members >= 0
  # Clipped ids and a select, not a padding column: concatenating one copies all of v, and
  # XLA:CPU fuses that copy into the gather's reduction at ~4x the cost.
  grid = jnp.take(flat, jnp.where(valid, table.members, 0).reshape(-1), axis=-1)
  grid = jnp.where(valid.reshape(-1), grid, jnp.asarray(fill, v.dtype))
  return grid.reshape(v.shape[:-1] + valid.shape)


def _per_member(table, per_cluster):
  """(..., n_clusters) -> (..., V): each y gets its cluster's value."""
  flat = per_cluster.reshape(-1, per_cluster.shape[-1])
  return jnp.take(flat, table.cluster, axis=-1).reshape(per_cluster.shape[:-1] + (-1,))


def _cluster_sum(table, g):
  """For every y, sum_{y' in c(y)} g(y'): two gathers, no scatter."""
  return _per_member(table, _member_grid(table, g, 0.0).sum(-1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _cluster_logsumexp(table, log_v):
  return _per_member(table, jax.nn.logsumexp(_member_grid(table, log_v, logspace.NEG), -1))


def _cluster_logsumexp_fwd(table, log_v):
  out = _cluster_logsumexp(table, log_v)
  return out, (log_v, out)


def _cluster_logsumexp_bwd(table, residuals, g):
  # d out(y) / d log_v(y') = exp(log_v(y') - out(y')) for y' in c(y); summed over the y of
  # the cluster. Written out so that the backward pass is gathers (autodiff of the forward
  # gathers would scatter-add over (B, L, V), slow on every backend).
  log_v, out = residuals
  weight = jnp.where(log_v > logspace.NEG / 2, jnp.exp(log_v - out), 0.0)
  return (weight * _cluster_sum(table, g),)


_cluster_logsumexp.defvjp(_cluster_logsumexp_fwd, _cluster_logsumexp_bwd)


def _log_mixture(kernel, A, B, C, log_v, size):
  """log [A v(y) + B/n(y) sum_{c(y)} v + C/V sum_all v] for all y, from log v (B, L, V)."""
  e3 = lambda c: jnp.reshape(c, (-1, 1, 1))
  V = kernel.vocab_size
  parts = [e3(logspace.log(A)) + log_v,
           e3(logspace.log(C)) - jnp.log(V) + jax.nn.logsumexp(log_v, -1, keepdims=True)]
  if kernel.table is not None:
    parts.append(e3(logspace.log(B)) - jnp.log(size) + _group_logsumexp(kernel, log_v))
  return logspace.logsumexp_stack(parts)


def absorbing_integrand(kernel, logits, x, z, t):
  """MDLM's closed form for the pure mask kernel: -alpha'/(1 - alpha) (-log x_hat(x)) on
  masked positions. (B, L) nats."""
  nll = logspace.nll_at(logits, x)
  one_minus = kernel.mask.one_minus_alpha(t)
  weight = jnp.where(one_minus > 0, -kernel.mask.dalpha(t) / jnp.where(one_minus > 0, one_minus,
                                                                       1.0), 0.0)
  return jnp.where(z == kernel.mask_id, weight[:, None] * nll, 0.0)


def within_cluster_integrand(kernel, logits, x, z, t):
  """Pure SemDLM on a partition (no global part, no mask): z stays in x's cluster, so x, the
  candidates C(z) and every y with r(y -> z) > 0 lie in c(z), and the integrand of
  `integrand` is computed on the k members of c(z) alone: one gather of the logits, then
  O(k) per token (no pass over V). (B, L) nats."""
  table = kernel.table
  e3 = lambda c: jnp.reshape(c, (-1, 1, 1))
  A, B, _, _ = kernel.coefficients(t)
  s_sem = kernel.rates(t)[0]
  members = table.members[table.cluster[z]]                           # (B, L, k), -1 pad
  valid = members >= 0
  y = jnp.where(valid, members, 0)
  n = table.size[z][..., None]
  is_z, is_x = y == z[..., None], y == x[..., None]
  candidate = valid & (is_z | (e3(B) > 0))
  picked = jnp.take_along_axis(logits.astype(jnp.float32), y, -1)
  log_x_hat = jax.nn.log_softmax(jnp.where(candidate, picked, logspace.NEG), -1)
  # Within one cluster q~(y | x') = A [y = x'] + B / n.
  q_z = e3(A) * is_z + e3(B) / n                                       # q~(z | x') over x'
  log_w = jnp.where(candidate, log_x_hat - logspace.log(q_z), logspace.NEG)
  log_rho_hat = logspace.logsumexp_stack([
      e3(logspace.log(A)) + log_w,
      e3(logspace.log(B)) - jnp.log(n) + jax.nn.logsumexp(log_w, -1, keepdims=True)])
  q_x = e3(A) * is_x + e3(B) / n                                       # q~(y | x) over y
  log_q_x = logspace.log(q_x)
  log_rho = log_q_x - jnp.sum(jnp.where(is_z, log_q_x, 0.0), -1, keepdims=True)
  rho = jnp.where(q_x > 0, jnp.exp(log_rho), 0.0)
  term = (jnp.exp(log_rho_hat) - rho
          + jnp.where(q_x > 0, rho * (log_rho - log_rho_hat), 0.0))
  live = valid & ~is_z & (e3(s_sem) > 0)
  return jnp.sum(jnp.where(live, e3(s_sem) / n * term, 0.0), -1)


def masked_semantic_integrand(kernel, logits, x, z, t):
  """SemDLM+ with the mask as its global part, on a partition (C = 0): a real z stays in x's
  cluster (`within_cluster_integrand`); for z = m the KL between q~(. | x) and
  q~(. | x_hat) lives on c(x), where q~(y | x_hat) = A x_hat(y) + B / n x_hat(c(x)). One
  log-sum-exp over V, then O(k) per token. (B, L) nats."""
  table = kernel.table
  e3 = lambda c: jnp.reshape(c, (-1, 1, 1))
  A, B, _, kappa = kernel.coefficients(t)
  masked = z == kernel.mask_id
  real = within_cluster_integrand(kernel, logits, x, jnp.where(masked, x, z), t)
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
  q_x = e3(A) * (y == x[..., None]) + e3(B) / n
  kl = jnp.sum(jnp.where(valid & (q_x > 0), q_x * (logspace.log(q_x) - log_q_hat), 0.0), -1)
  one_minus = kernel.mask.one_minus_alpha(t)
  weight = jnp.where(one_minus > 0, kernel.rates(t)[2] * kappa
                     / jnp.where(one_minus > 0, one_minus, 1.0), 0.0)
  return jnp.where(masked, weight[:, None] * kl, real)


def _rows(kernel):
  """The clusters as rows, numbered as `_grouping` numbers them: (ids (R, K) -1 padded, row
  sizes (R,)). Without a table every token is a row of one."""
  if kernel.table is None:
    return jnp.arange(kernel.vocab_size)[:, None], jnp.ones((kernel.vocab_size,), jnp.float32)
  members = kernel.table.members
  return members, jnp.sum(members >= 0, -1).astype(jnp.float32)


def logit_columns(kernel):
  """The vocabulary order in which `integrand_on_columns` wants the logits (-1: a padding
  column), or None for the vocabulary's own. The uniform jump on a partition reads logits
  slot by slot (slot k of every cluster, then slot k + 1): the output head emits them in
  that order (its weight columns permuted), so that per-cluster sums are a sum of K slabs and
  no (B, L, V) gather is ever needed."""
  if isinstance(kernel.table, PartitionTable) and kernel.glob is not None and not kernel.has_mask:
    return kernel.table.members.T.reshape(-1)
  return None


def integrand_on_columns(kernel, logits, x, z, t):
  """`integrand` from logits laid out in `logit_columns(kernel)` order. (B, L) nats."""
  ids = _rows(kernel)[0]
  return _global_jump_on_rows(kernel, logits.reshape(logits.shape[:-1] + ids.T.shape), x, z, t)


def global_jump_integrand(kernel, logits, x, z, t):
  """Uniform, and SemDLM+ with the uniform jump on a partition (no mask): the integrand of
  `integrand` summed exactly over the special set S = c(z) u c(x) (O(k), log space) plus the
  bulk y outside S in one pass over V. There r(y -> z) = s_glob' / V and rho(y) = rho0 =
  (C / V) / q~(z | x) are constants and rho^(y) = (V / C) (A x_hat(y) + B / n(y)
  x_hat(c(y))) + (C / V) W, W = sum_x' x_hat(x') / q~(z | x'), so the bulk is
  s_glob' / V rho0 sum_y f(rho^(y) / rho0), f(u) = u - 1 - log u. Logits in vocabulary
  order. (B, L) nats."""
  grid = (logits[..., None, :] if kernel.table is None
          else jnp.swapaxes(_member_grid(kernel.table, logits, logspace.NEG), -1, -2))
  return _global_jump_on_rows(kernel, grid, x, z, t)


def _log1p_gap(d):
  """f(1 + d) = d - log(1 + d) for u = 1 + d, d > -1."""
  return d - jnp.log1p(d)


def _bulk_forward(grid, lse, alpha, c1, offset, kappa, outside, n_pad):
  p = jnp.exp(grid - lse[..., None, None])                   # x_hat on the rows
  totals = jnp.sum(p, -2)                                      # x_hat(c): (B, L, R)
  p_out = jnp.sum(jnp.where(outside, totals, 0.0), -1)
  beta = c1 * totals + (offset + kappa * p_out)[..., None]
  d = alpha[..., None, None] * p + beta[..., None, :]
  # A padding slot has x_hat = 0, so d = beta: its f is taken back out per row (a mask over
  # (B, L, K, R) costs XLA:CPU more than the whole pass).
  per_row = jnp.sum(_log1p_gap(d), -2) - n_pad * _log1p_gap(beta)
  return (jnp.sum(jnp.where(outside, per_row, 0.0), -1), p_out), (p, totals, p_out, beta)


@jax.custom_vjp
def _bulk(grid, lse, alpha, c1, offset, kappa, outside, n_pad):
  """(sum_{r outside} [sum_k f(d_rk) - n_pad_r f(beta_r)], p_out) on the (B, L, K, R) slots,
  where f(d) = d - log(1 + d), d_rk = alpha x_hat_rk + beta_r, x_hat = exp(grid - lse),
  beta_r = c1_r T_r + offset + kappa p_out, T_r = sum_k x_hat_rk, p_out = sum_{r outside} T_r.
  Its backward pass is two passes over the rows (autodiff would take several)."""
  return _bulk_forward(grid, lse, alpha, c1, offset, kappa, outside, n_pad)[0]


def _bulk_fwd(grid, lse, alpha, c1, offset, kappa, outside, n_pad):
  out, (p, totals, p_out, beta) = _bulk_forward(grid, lse, alpha, c1, offset, kappa, outside,
                                                n_pad)
  return out, (p, totals, p_out, beta, alpha, c1, kappa, outside, n_pad)


def _bulk_bwd(residuals, cotangents):
  p, totals, p_out, beta, alpha, c1, kappa, outside, n_pad = residuals
  ct_value, ct_p_out = cotangents
  slope = lambda d: d / (1.0 + d)                              # f'(d)
  d = alpha[..., None, None] * p + beta[..., None, :]
  live = jnp.where(outside, ct_value[..., None], 0.0)          # (B, L, R)
  g = live * (jnp.sum(slope(d), -2) - n_pad * slope(beta))     # d value / d beta_r
  g_offset = jnp.sum(g, -1)
  d_alpha = jnp.sum(live * jnp.sum(slope(d) * p, -2), -1)
  d_totals = g * c1 + jnp.where(outside, (kappa * g_offset + ct_p_out)[..., None], 0.0)
  d_p = (live * alpha[..., None])[..., None, :] * slope(d) + d_totals[..., None, :]
  d_grid = p * d_p
  return (d_grid, -jnp.sum(d_grid.reshape(d_grid.shape[:2] + (-1,)), -1), d_alpha, g * totals, g_offset, g_offset * p_out,
          None, None)


_bulk.defvjp(_bulk_fwd, _bulk_bwd)


def _global_jump_on_rows(kernel, grid, x, z, t):
  """`global_jump_integrand` from logits on the clusters' slots (K, R): slot k of every
  cluster r, clusters on the minor axis (a TPU pads a minor axis to 128 lanes: K = 8 there
  would cost 16x the memory). (B, L) nats."""
  V = kernel.vocab_size
  ids, row_size = _rows(kernel)
  e3 = lambda c: jnp.reshape(c, (-1, 1, 1))
  e4 = lambda c: jnp.reshape(c, (-1, 1, 1, 1))
  A, B, C, _ = kernel.coefficients(t)
  s_sem, s_glob, _ = kernel.rates(t)
  grid = grid.astype(jnp.float32)              # (B, L, K, R); padding slots hold NEG
  (rz, n_z), (rx, n_x) = _grouping(kernel, z), _grouping(kernel, x)
  # S as two rows: c(z), and c(x) when it is another cluster.
  rows = jnp.stack([rz, rx], -1)
  y_ids = ids[rows]                                                      # (B, L, 2, K)
  second = jnp.arange(2) == 1
  valid = (y_ids >= 0) & ~(second[:, None] & (rx == rz)[..., None, None])
  y = jnp.where(valid, y_ids, 0)
  in_z = ~second[:, None] & valid
  in_x = (second[:, None] | (rx == rz)[..., None, None]) & valid
  is_z, is_x = y == z[..., None, None], y == x[..., None, None]
  n_z, n_x = n_z[..., None, None], n_x[..., None, None]
  size = jnp.where(second[:, None], n_x, n_z)
  picked = jnp.swapaxes(jnp.take_along_axis(grid, rows[..., None, :], -1), -1, -2)
  # x_hat over the candidates C(z): all of V when C > 0, else z and (if B > 0) c(z).
  candidate = valid & ((e4(C) > 0) | is_z | ((e4(B) > 0) & in_z))
  lse_all = jax.nn.logsumexp(grid.reshape(grid.shape[:2] + (-1,)), -1)  # XLA:CPU: one axis
  lse_z = jax.nn.logsumexp(jnp.where(candidate, picked, logspace.NEG), (-2, -1))
  lse = jnp.where((C > 0)[:, None], lse_all, lse_z)
  log_p = jnp.where(candidate, picked - lse[..., None, None], logspace.NEG)
  q_z = e4(A) * is_z + e4(B) / n_z * in_z + e4(C) / V                 # q~(z | y) over S
  log_w = jnp.where(candidate, log_p - logspace.log(q_z), logspace.NEG)
  log_w_row = jax.nn.logsumexp(log_w, -1, keepdims=True)                # log W(c) per row

  # The bulk y outside S, in one pass over the rows (`_bulk`), from u - 1 = (rho^ - rho0) /
  # rho0 = alpha x_hat(y) + beta(c(y)) written without cancellation: g / rho0 - 1 =
  # W q~(z|x) - 1 = sum_x' x_hat(x') (q~(z|x) / q~(z|x') - 1), over S and (q~(z|x') = C / V)
  # the bulk.
  safe_c = jnp.where(C > 0, C, 1.0)
  q_zx = A[:, None] * (z == x) + B[:, None] / n_z[..., 0, 0] * (rz == rx) + C[:, None] / V
  ratio = q_zx[..., None, None] / jnp.where(candidate, q_z, 1.0)
  offset = jnp.sum(jnp.where(candidate, jnp.exp(log_p), 0.0) * (ratio - 1.0), (-2, -1))
  scale = q_zx * (V / safe_c)[:, None] ** 2
  row_ids = jnp.arange(ids.shape[0])
  outside = (row_ids != rz[..., None]) & (row_ids != rx[..., None])
  f32 = lambda a: a.astype(jnp.float32)
  bulk, p_out = _bulk(grid, f32(lse_all), f32(scale * A[:, None]),
                      f32(scale[..., None] * (e3(B) / row_size)), f32(offset),
                      f32(q_zx * (V / safe_c)[:, None] - 1.0), outside, ids.shape[1] - row_size)
  log_bulk_w = jnp.where((C > 0)[:, None], jnp.log(V / safe_c)[:, None] + logspace.log(p_out),
                         logspace.NEG)
  log_w_total = jax.nn.logsumexp(jnp.concatenate(
      [log_w_row[..., 0], log_bulk_w[..., None]], -1), -1)                # log W

  # Special set, in log space.
  log_rho_hat = logspace.logsumexp_stack([
      e4(logspace.log(A)) + log_w,
      e4(logspace.log(B)) - jnp.log(size) + log_w_row,
      e4(logspace.log(C / V)) + log_w_total[..., None, None]])
  q_x = e4(A) * is_x + e4(B) / n_x * in_x + e4(C) / V                 # q~(y | x) over S
  log_rho = logspace.log(q_x) - jnp.log(q_zx)[..., None, None]
  rho = jnp.where(q_x > 0, jnp.exp(log_rho), 0.0)
  r = e4(s_sem) * in_z / n_z + e4(s_glob) / V
  term = jnp.exp(log_rho_hat) - rho + jnp.where(q_x > 0, rho * (log_rho - log_rho_hat), 0.0)
  special = jnp.sum(jnp.where(valid & ~is_z & (r > 0), r * term, 0.0), (-2, -1))
  rho0 = (safe_c / V)[:, None] / q_zx
  return special + jnp.where((C > 0)[:, None], s_glob[:, None] / V * rho0 * bulk, 0.0)


def integrand(kernel, logits, x, z, t, key=None):
  """Exact per-token NELBO integrand (docs/design.md §3), O(V) per token (O(k) for pure
  SemDLM), in log space so that a confidently wrong denoiser gets a large loss and a
  gradient. (B, L) nats."""
  del key
  if kernel.is_absorbing:
    return absorbing_integrand(kernel, logits, x, z, t)
  if kernel.table is not None and kernel.glob is None:
    return (masked_semantic_integrand if kernel.has_mask else within_cluster_integrand)(
        kernel, logits, x, z, t)
  if not kernel.has_mask:
    return global_jump_integrand(kernel, logits, x, z, t)
  return full_vocabulary_integrand(kernel, logits, x, z, t)


def full_vocabulary_integrand(kernel, logits, x, z, t):
  """`integrand` for every Markov kernel, over the whole vocabulary. (B, L) nats."""
  V = kernel.vocab_size
  e3 = lambda c: c[:, None, None]
  A, B, C, kappa = kernel.coefficients(t)
  s_sem, s_glob, s_mask = kernel.rates(t)
  masked = z == kernel.mask_id
  zr = jnp.where(masked, 0, z)
  vocab = jnp.arange(V)
  is_x, is_z = vocab == x[..., None], vocab == zr[..., None]
  same_x, same_z = same_group(kernel, x), same_group(kernel, zr)
  _, size = _grouping(kernel, vocab)
  n_x, n_z = _grouping(kernel, x)[1][..., None], _grouping(kernel, zr)[1][..., None]
  log_x_hat = logspace.restricted_log_softmax(logits, candidates(kernel, z, t))
  q_x = kernel.real_marginal(e3(A), e3(B), e3(C), is_x, same_x / n_x)   # q~(y | x)
  log_q_x = logspace.log(q_x)

  # Masked z: s_mask' kappa / (1 - kappa) KL(q~(. | x) || q~(. | x_hat)).
  if kernel.has_mask:
    log_q_hat = _log_mixture(kernel, A, B, C, log_x_hat, size)
    kl = jnp.sum(jnp.where(q_x > 0, q_x * (log_q_x - log_q_hat), 0.0), -1)
    one_minus = kernel.mask.one_minus_alpha(t)
    masked_term = jnp.where(one_minus > 0, s_mask * kappa / jnp.where(one_minus > 0, one_minus,
                                                                      1.0), 0.0)[:, None] * kl
  else:
    masked_term = jnp.zeros(x.shape)

  # Real z: sum_{y != z} r(y -> z) [rho^ - rho + rho log(rho / rho^)], with
  # rho(y) = q~(y|x) / q~(z|x) and rho^(y) = sum_x' x_hat(x') q~(y|x') / q~(z|x').
  q_z = kernel.real_marginal(e3(A), e3(B), e3(C), is_z, same_z / n_z)   # q~(z | x') over x'
  log_w = jnp.where(q_z > 0, log_x_hat - logspace.log(q_z), logspace.NEG)
  log_rho_hat = _log_mixture(kernel, A, B, C, log_w, size)
  log_q_x_z = jnp.where(masked[..., None], 0.0, jnp.take_along_axis(log_q_x, zr[..., None], -1))
  log_rho = log_q_x - log_q_x_z
  rho = jnp.where(q_x > 0, jnp.exp(log_rho), 0.0)
  r = e3(s_sem) * same_z / n_z + e3(s_glob) / V
  live = (r > 0) & ~is_z
  term = (jnp.exp(log_rho_hat) - rho
          + jnp.where(q_x > 0, rho * (log_rho - log_rho_hat), 0.0))
  real_term = jnp.sum(jnp.where(live, r * term, 0.0), -1)
  return jnp.where(masked, masked_term, real_term)


def posterior_sample(kernel, key, z, x, t, s):
  """z_s ~ q(z_s | z_t = z, x) for scalar times s < t; x must be a candidate of z.

  q(z_t | z_s) has the marginal's closed form with rate increments s_c(t) - s_c(s)
  (A1, B1, C1 below). For real z_t the posterior over real z_s is the mixture
  A1 q~_s(z|x) [z_s = z] + B1/n q~_s(z_s|x) [c(z_s) = c(z)] + C1/V q~_s(z_s|x); for
  z_t = m it keeps the mask w.p. (1 - kappa_s) / (1 - kappa_t), else draws z_s ~ q~_s(.|x).
  """
  V = kernel.vocab_size
  As, Bs, Cs, kap_s = kernel.coefficients(s)
  kap_t = kernel.coefficients(t)[3]
  a_sem, a_glob = kernel.component_alpha_ratio(t, s)
  A1, B1, C1 = a_sem * a_glob, (1.0 - a_sem) * a_glob, 1.0 - a_glob
  k_fresh, k_mix, k_in, k_member, k_stay = jax.random.split(key, 5)
  fresh = kernel.sample_real(k_fresh, x, s)                       # ~ q~_s(. | x)
  masked = z == kernel.mask_id
  zr = jnp.where(masked, 0, z)
  q_z = kernel.real_marginal(As, Bs, Cs, zr == x, neighbour_weight(kernel, x, zr))
  if kernel.table is not None:
    table = kernel.table
    same = table.cluster[zr] == table.cluster[x]
    n = table.size[zr]
    w2 = B1 / n * ((As + Bs) * same + Cs * n / V)                  # B1/n q~_s(c(z) | x)
    # z_s ~ q~_s(. | x) restricted to c(z): x itself (A_s), else uniform over the cluster.
    point_x = As * same
    spread = Bs * same + Cs * n / V
    slot = jnp.floor(jax.random.uniform(k_member, z.shape) * n).astype(jnp.int32)
    member = table.members[table.cluster[zr], jnp.minimum(slot, table.members.shape[1] - 1)]
    in_cluster = jnp.where(jax.random.uniform(k_in, z.shape) * (point_x + spread) < point_x,
                           x, member)
  else:
    w2, in_cluster = 0.0, zr
  w1, w3 = A1 * q_z, C1 / V
  u = jax.random.uniform(k_mix, z.shape) * (w1 + w2 + w3)
  y = jnp.where(u < w1, zr, jnp.where(u < w1 + w2, in_cluster, fresh))
  if kernel.has_mask:
    stay = jax.random.uniform(k_stay, z.shape) * (1.0 - kap_t) < 1.0 - kap_s
    y = jnp.where(masked, jnp.where(stay, kernel.mask_id, fresh), y)
  return y

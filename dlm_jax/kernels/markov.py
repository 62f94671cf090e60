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


def log_evidence(kernel, z, t):
  """log q~_t(z | x') for every x' (B, L, V): the tilt that turns x_hat into the mean form's
  posterior over x (0 where z is the mask: q_t(m | x') does not depend on x')."""
  A, B, C, _ = kernel.coefficients(t)
  e3 = lambda c: jnp.reshape(c, (-1, 1, 1))
  masked = z == kernel.mask_id
  zr = jnp.where(masked, 0, z)
  q = kernel.real_marginal(e3(A), e3(B), e3(C), jnp.arange(kernel.vocab_size) == zr[..., None],
                           same_group(kernel, zr) / _grouping(kernel, zr)[1][..., None])
  return jnp.where(masked[..., None], 0.0, logspace.log(q))


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


def _kl_term(positive, rho, log_rho, log_rho_hat):
  """rho^ - rho + rho log(rho / rho^) = rho (e^d - 1 - d), d = log(rho^ / rho), where rho > 0
  (its three terms cancel to O(rho d^2): summed directly they lose ~log(rho) digits), else
  rho^."""
  d = jnp.where(positive, log_rho_hat - log_rho, 0.0)
  small = jnp.abs(d) < 1e-3
  series = d * d * (0.5 + d * (1.0 / 6.0 + d * (1.0 / 24.0 + d / 120.0)))
  gap = jnp.where(small, series, jnp.expm1(jnp.where(small, 1.0, d)) - d)
  return jnp.where(positive, rho * gap, jnp.exp(log_rho_hat))


def _log_source_weights(kernel, log_x_hat, q_z, candidate, axes):
  """log w(x') over the candidates, the weights that make rho^ = A w + B/n W_c + C/V W:
  the mixture form's w = x_hat(x') / q~(z | x'), or the mean form's w = x_hat(x') /
  q~(z | x_hat) with q~(z | x_hat) = sum_x' x_hat(x') q~(z | x') (design.md §3)."""
  log_q_z = logspace.log(q_z)
  if kernel.mean_form:
    log_q_z = jax.nn.logsumexp(jnp.where(candidate, log_x_hat + log_q_z, logspace.NEG), axes,
                               keepdims=True)
  return jnp.where(candidate, log_x_hat - log_q_z, logspace.NEG)


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
  log_w = _log_source_weights(kernel, log_x_hat, q_z, candidate, (-1,))
  log_rho_hat = logspace.logsumexp_stack([
      e3(logspace.log(A)) + log_w,
      e3(logspace.log(B)) - jnp.log(n) + jax.nn.logsumexp(log_w, -1, keepdims=True)])
  q_x = e3(A) * is_x + e3(B) / n                                       # q~(y | x) over y
  log_q_x = logspace.log(q_x)
  log_rho = log_q_x - jnp.sum(jnp.where(is_z, log_q_x, 0.0), -1, keepdims=True)
  rho = jnp.where(q_x > 0, jnp.exp(log_rho), 0.0)
  term = _kl_term(q_x > 0, rho, log_rho, log_rho_hat)
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


def integrand_from_head(kernel, head, h, x, z, t, key=None):
  """`integrand` from hidden states h (..., d) and the network's head(h, columns=None): the
  logits are asked for in the column order this structure reads (`logit_columns`). (B, L)."""
  columns = logit_columns(kernel)
  if columns is not None:
    return integrand_on_columns(kernel, head(h, columns), x, z, t)
  return integrand(kernel, head(h), x, z, t, key)


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


def _log_u(e, offset, inv_1p_offset, log_1p_offset):
  """(u - 1, log u) for u = 1 + offset + e, e >= 0, with 1 + offset > 0 also known in log
  space. log1p(u - 1) where u - 1 > -1/2 (accurate there); else log(1 + offset) +
  log1p(e / (1 + offset)): where a denoiser is sure of a z that is not x, 1 + offset ~ C / V
  and u - 1 rounds to -1 in float32, and log1p(-1) made the value and gradient NaN."""
  d = e + offset
  far = log_1p_offset + jnp.log1p(e * inv_1p_offset)
  return d, jnp.where(d > -0.5, jnp.log1p(jnp.maximum(d, -0.5)), far)


def _bulk_forward(grid, lse, alpha, c1, offset, kappa, log_1p_offset, outside, n_pad):
  p = jnp.exp(grid - lse[..., None, None])                   # x_hat on the rows
  totals = jnp.sum(p, -2)                                      # x_hat(c): (B, L, R)
  p_out = jnp.sum(jnp.where(outside, totals, 0.0), -1)
  e_row = c1 * totals + (kappa * p_out)[..., None]             # e at x_hat(y) = 0
  inv = jnp.exp(jnp.minimum(-log_1p_offset, 80.0))             # 1 / (1 + offset)
  d, log_u = _log_u(alpha[..., None, None] * p + e_row[..., None, :], offset[..., None, None],
                    inv[..., None, None], log_1p_offset[..., None, None])
  d_row, log_u_row = _log_u(e_row, offset[..., None], inv[..., None], log_1p_offset[..., None])
  # A padding slot has x_hat = 0, so e = e_row: its f is taken back out per row (a mask over
  # (B, L, K, R) costs XLA:CPU more than the whole pass).
  per_row = jnp.sum(d - log_u, -2) - n_pad * (d_row - log_u_row)
  value = jnp.sum(jnp.where(outside, per_row, 0.0), -1)
  return (value, p_out), (p, totals, p_out, e_row, inv)


@jax.custom_vjp
def _bulk(grid, lse, alpha, c1, offset, kappa, log_1p_offset, outside, n_pad):
  """(sum_{r outside} [sum_k f(u_rk) - n_pad_r f(u_r0)], p_out) on the (B, L, K, R) slots,
  where f(u) = u - 1 - log u, u_rk = 1 + offset + alpha x_hat_rk + c1_r T_r + kappa p_out
  (u_r0: the same at x_hat = 0), x_hat = exp(grid - lse), T_r = sum_k x_hat_rk,
  p_out = sum_{r outside} T_r, and log(1 + offset) = log_1p_offset given in log space.
  Its backward pass is two passes over the rows (autodiff would take several)."""
  return _bulk_forward(grid, lse, alpha, c1, offset, kappa, log_1p_offset, outside, n_pad)[0]


def _bulk_fwd(grid, lse, alpha, c1, offset, kappa, log_1p_offset, outside, n_pad):
  out, (p, totals, p_out, e_row, inv) = _bulk_forward(grid, lse, alpha, c1, offset, kappa,
                                                      log_1p_offset, outside, n_pad)
  return out, (p, totals, p_out, e_row, inv, alpha, c1, kappa, outside, n_pad)


def _bulk_bwd(residuals, cotangents):
  p, totals, p_out, e_row, inv, alpha, c1, kappa, outside, n_pad = residuals
  ct_value, ct_p_out = cotangents
  # f'(u) = 1 - 1 / u, 1 / u = inv / (1 + e inv).
  slope = lambda e, inv: 1.0 - inv / (1.0 + e * inv)
  s = slope(alpha[..., None, None] * p + e_row[..., None, :], inv[..., None, None])
  s_row = slope(e_row, inv[..., None])
  live = jnp.where(outside, ct_value[..., None], 0.0)          # (B, L, R)
  g = live * (jnp.sum(s, -2) - n_pad * s_row)                  # d value / d e_row_r
  g_offset = jnp.sum(g, -1)                                    # = d value / d offset
  d_alpha = jnp.sum(live * jnp.sum(s * p, -2), -1)
  d_totals = g * c1 + jnp.where(outside, (kappa * g_offset + ct_p_out)[..., None], 0.0)
  d_p = (live * alpha[..., None])[..., None, :] * s + d_totals[..., None, :]
  d_grid = p * d_p
  # log_1p_offset only rewrites log u; the value's dependence on offset is all in g.
  return (d_grid, -jnp.sum(d_grid.reshape(d_grid.shape[:2] + (-1,)), -1), d_alpha, g * totals,
          g_offset, g_offset * p_out, None, None, None)


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
  ftype = jnp.promote_types(grid.dtype, jnp.float32)    # float64 stays float64 (tests)
  grid = grid.astype(ftype)                    # (B, L, K, R); padding slots hold NEG
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
  safe_c = jnp.where(C > 0, C, 1.0)
  q_zx = A[:, None] * (z == x) + B[:, None] / n_z[..., 0, 0] * (rz == rx) + C[:, None] / V
  log_q_zx = jnp.log(q_zx)
  row_ids = jnp.arange(ids.shape[0])
  outside = (row_ids != rz[..., None]) & (row_ids != rx[..., None])
  cast = lambda a: a.astype(ftype)
  n_pad = ids.shape[1] - row_size
  # The bulk y outside S, in one pass over the rows (`_bulk`): with rho0 = (C / V) / q~(z|x)
  # (rho there), u = rho^(y) / rho0 = 1 + offset + (A x_hat(y) + B / n(y) x_hat(c(y))) * gain
  # [+ the mixture's bulk share of W], every part written without cancellation.
  if kernel.mean_form:
    # rho^(y) = q~(y | x_hat) / Q, Q = q~(z | x_hat) = A x_hat(z) + B / n x_hat(c(z)) + C / V.
    log_p_z = jax.nn.logsumexp(jnp.where(is_z & candidate, log_p, logspace.NEG), (-2, -1))
    log_p_cz = jax.nn.logsumexp(jnp.where(in_z & candidate, log_p, logspace.NEG), (-2, -1))
    e2 = lambda c: jnp.reshape(c, (-1, 1))
    log_q_hat_z = logspace.logsumexp_stack([
        e2(logspace.log(A)) + log_p_z,
        e2(logspace.log(B)) - jnp.log(n_z[..., 0, 0]) + log_p_cz,
        e2(logspace.log(C / V)) + jnp.zeros_like(log_p_z)])
    log_w = jnp.where(candidate, log_p - log_q_hat_z[..., None, None], logspace.NEG)
    # q~(z|x) - Q = A ([z = x] - x_hat(z)) + B / n ([c(z) = c(x)] - x_hat(c(z))).
    miss = lambda hit, log_q: jnp.where(hit, -jnp.expm1(log_q), -jnp.exp(log_q))
    diff = (A[:, None] * miss(z == x, log_p_z)
            + B[:, None] / n_z[..., 0, 0] * miss(rz == rx, log_p_cz))
    offset = diff * jnp.exp(-log_q_hat_z)
    log_1p_offset = log_q_zx - log_q_hat_z
    gain = jnp.exp(log_1p_offset) * (V / safe_c)[:, None]
    kappa = jnp.zeros_like(offset)
  else:
    # rho^(y) = (V / C) (A x_hat(y) + B / n x_hat(c(y))) + (C / V) W, W = W_S + (V / C) p_out:
    # 1 + offset = q~(z|x) W_S, and the bulk's share of W enters through kappa p_out.
    log_w = _log_source_weights(kernel, log_p, q_z, candidate, (-2, -1))
    log_1p_offset = log_q_zx + jax.nn.logsumexp(log_w, (-2, -1))
    offset = jnp.expm1(log_1p_offset)
    gain = q_zx * (V / safe_c)[:, None] ** 2
    kappa = q_zx * (V / safe_c)[:, None]
  log_w_row = jax.nn.logsumexp(log_w, -1, keepdims=True)                # log W(c) per row
  bulk, p_out = _bulk(grid, cast(lse_all), cast(gain * A[:, None]),
                      cast(gain[..., None] * (e3(B) / row_size)), cast(offset), cast(kappa),
                      cast(log_1p_offset), outside, n_pad)
  log_bulk_denominator = (log_q_hat_z if kernel.mean_form
                          else jnp.log(safe_c / V)[:, None])
  log_bulk_w = jnp.where((C > 0)[:, None], logspace.log(p_out) - log_bulk_denominator,
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
  term = _kl_term(q_x > 0, rho, log_rho, log_rho_hat)
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
  log_w = _log_source_weights(kernel, log_x_hat, q_z, q_z > 0, (-1,))
  log_rho_hat = _log_mixture(kernel, A, B, C, log_w, size)
  log_q_x_z = jnp.where(masked[..., None], 0.0, jnp.take_along_axis(log_q_x, zr[..., None], -1))
  log_rho = log_q_x - log_q_x_z
  rho = jnp.where(q_x > 0, jnp.exp(log_rho), 0.0)
  r = e3(s_sem) * same_z / n_z + e3(s_glob) / V
  live = (r > 0) & ~is_z
  term = _kl_term(q_x > 0, rho, log_rho, log_rho_hat)
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

"""The loss of a uniform jump (docs/design.md §3): the uniform process, and SemDLM+ with the
uniform global part on a partition table (no mask). uniform.py and semdlm_plus_uniform.py
call it; the uniform process is the case where every token is its own cluster.

The integrand is summed exactly over the special set S = c(z) u c(x) (O(k), log space) plus
the bulk y outside S in one pass over V. There r(y -> z) = s_glob' / V and rho(y) = rho0 =
(C / V) / q~(z | x) are constants and rho^(y) = (V / C) (A x_hat(y) + B / n(y)
x_hat(c(y))) + (C / V) W, W = sum_x' x_hat(x') / q~(z | x'), so the bulk is
s_glob' / V rho0 sum_y f(rho^(y) / rho0), f(u) = u - 1 - log u.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm_jax.kernels import logspace
from dlm_jax.kernels.clusters import e3, kl_term, log_source_weights, member_grid


def integrand(process, logits, x, z, t):
  """The integrand from logits in vocabulary order. (B, L) nats."""
  grid = (logits[..., None, :] if process.table is None
          else jnp.swapaxes(member_grid(process.table.members, logits, logspace.NEG), -1, -2))
  return on_rows(process, grid, x, z, t)


def on_columns(process, logits, x, z, t):
  """The integrand from logits laid out slot by slot (`process.rows()[0].T` order). (B, L)."""
  ids = process.rows()[0]
  return on_rows(process, logits.reshape(logits.shape[:-1] + ids.T.shape), x, z, t)


def _bulk_forward(grid, lse, alpha, c1, offset, kappa, log_1p_offset, outside, n_pad):
  p = jnp.exp(grid - lse[..., None, None])                   # x_hat on the rows
  totals = jnp.sum(p, -2)                                      # x_hat(c): (B, L, R)
  p_out = jnp.sum(jnp.where(outside, totals, 0.0), -1)
  e_row = c1 * totals + (kappa * p_out)[..., None]             # E_r - 1 - offset
  d_row = offset[..., None] + e_row                            # E_r - 1
  # log E_r: log1p(E_r - 1) where that is accurate; else log(1 + offset) + log1p(e_row /
  # (1 + offset)): where a denoiser is sure of a z that is not x, 1 + offset ~ C / V and
  # E_r - 1 rounds to -1 in float32.
  inv = jnp.exp(jnp.minimum(-log_1p_offset, 80.0))[..., None]             # 1 / (1 + offset)
  far = log_1p_offset[..., None] + jnp.log1p(e_row * inv)
  log_e = jnp.where(d_row > -0.5, jnp.log1p(jnp.maximum(d_row, -0.5)), far)
  inv_e = jnp.exp(-log_e)                                      # 1 / E_r
  b = (alpha[..., None] * inv_e)[..., None, :] * p
  slots = grid.shape[-2] - n_pad
  per_row = (slots * (d_row - log_e) + d_row * jnp.sum(b, -2)
             + jnp.sum(b - jnp.log1p(b), -2))
  value = jnp.sum(jnp.where(outside, per_row, 0.0), -1)
  return (value, p_out), (p, totals, b, inv_e)


@jax.custom_vjp
def _bulk(grid, lse, alpha, c1, offset, kappa, log_1p_offset, outside, n_pad):
  """(sum_{r outside} [sum_k f(u_rk) - n_pad_r f(u_r0)], p_out) on the (B, L, K, R) slots,
  where f(u) = u - 1 - log u, u_rk = 1 + offset + alpha x_hat_rk + c1_r T_r + kappa p_out
  (u_r0: the same at x_hat = 0), x_hat = exp(grid - lse), T_r = sum_k x_hat_rk,
  p_out = sum_{r outside} T_r, and log(1 + offset) = log_1p_offset given in log space.

  With E_r = u_r0 and b_rk = alpha x_hat_rk / E_r, f(u_rk) = f(E_r) + (E_r - 1) b_rk +
  (b_rk - log1p(b_rk)): per row (K - n_pad_r) f(E_r) + (E_r - 1) sum_k b + sum_k (b -
  log1p b), one log1p per slot; what needs care (f and log of E_r) is per-row scalars. Its
  backward pass is one pass over the slots."""
  return _bulk_forward(grid, lse, alpha, c1, offset, kappa, log_1p_offset, outside, n_pad)[0]


def _bulk_fwd(grid, lse, alpha, c1, offset, kappa, log_1p_offset, outside, n_pad):
  out, (p, totals, b, inv_e) = _bulk_forward(grid, lse, alpha, c1, offset, kappa,
                                             log_1p_offset, outside, n_pad)
  return out, (p, totals, out[1], b, inv_e, alpha, c1, kappa, outside, n_pad)


def _bulk_bwd(residuals, cotangents):
  p, totals, p_out, b, inv_e, alpha, c1, kappa, outside, n_pad = residuals
  ct_value, ct_p_out = cotangents
  # f'(u) = 1 - 1 / u with 1 / u_rk = (1 / E_r) / (1 + b_rk); at x_hat = 0, 1 - 1 / E_r.
  s = 1.0 - inv_e[..., None, :] / (1.0 + b)
  s_row = 1.0 - inv_e
  live = jnp.where(outside, ct_value[..., None], 0.0)          # (B, L, R)
  g = live * (jnp.sum(s, -2) - n_pad * s_row)                  # d value / d E_r
  g_offset = jnp.sum(g, -1)                                    # = d value / d offset
  d_alpha = jnp.sum(live * jnp.sum(s * p, -2), -1)
  d_totals = g * c1 + jnp.where(outside, (kappa * g_offset + ct_p_out)[..., None], 0.0)
  d_p = (live * alpha[..., None])[..., None, :] * s + d_totals[..., None, :]
  d_grid = p * d_p
  # log_1p_offset is log(1 + offset) written in log space: its dependence is all in g.
  return (d_grid, -jnp.sum(d_grid.reshape(d_grid.shape[:2] + (-1,)), -1), d_alpha, g * totals,
          g_offset, g_offset * p_out, None, None, None)


_bulk.defvjp(_bulk_fwd, _bulk_bwd)


def on_rows(process, grid, x, z, t):
  """`integrand` from logits on the clusters' slots (K, R): slot k of every
  cluster r, clusters on the minor axis (a TPU pads a minor axis to 128 lanes: K = 8 there
  would cost 16x the memory). (B, L) nats."""
  V = process.vocab_size
  ids, row_size = process.rows()
  e4 = lambda c: jnp.reshape(c, (-1, 1, 1, 1))
  A, B, C, _ = process.coefficients(t)
  s_sem, s_glob, _ = process.rates(t)
  ftype = jnp.promote_types(grid.dtype, jnp.float32)    # float64 stays float64 (tests)
  grid = grid.astype(ftype)                    # (B, L, K, R); padding slots hold NEG
  (rz, n_z), (rx, n_x) = process.grouping(z), process.grouping(x)
  # S as two rows: c(z), and c(x) when it is another cluster.
  rows = jnp.stack([rz, rx], -1)
  y_ids = ids[rows]                                                      # (B, L, 2, K)
  second = jnp.arange(2) == 1
  valid = (y_ids >= 0) & ~(second[:, None] & (rx == rz)[..., None, None])
  y = jnp.where(valid, y_ids, 0)
  in_z = ~second[:, None] & valid
  in_x = (second[:, None] | (rx == rz)[..., None, None]) & valid
  is_z, is_x = valid & (y == z[..., None, None]), valid & (y == x[..., None, None])
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
  if process.mean_form:
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
    log_w = log_source_weights(process, log_p, q_z, candidate, (-2, -1))
    log_1p_offset = log_q_zx + jax.nn.logsumexp(log_w, (-2, -1))
    offset = jnp.expm1(log_1p_offset)
    gain = q_zx * (V / safe_c)[:, None] ** 2
    kappa = q_zx * (V / safe_c)[:, None]
  log_w_row = jax.nn.logsumexp(log_w, -1, keepdims=True)                # log W(c) per row
  bulk, p_out = _bulk(grid, cast(lse_all), cast(gain * A[:, None]),
                      cast(gain[..., None] * (e3(B) / row_size)), cast(offset), cast(kappa),
                      cast(log_1p_offset), outside, n_pad)
  log_bulk_denominator = (log_q_hat_z if process.mean_form
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
  term = kl_term(q_x > 0, rho, log_rho, log_rho_hat)
  special = jnp.sum(jnp.where(valid & ~is_z & (r > 0), r * term, 0.0), (-2, -1))
  rho0 = (safe_c / V)[:, None] / q_zx
  return special + jnp.where((C > 0)[:, None], s_glob[:, None] / V * rho0 * bulk, 0.0)

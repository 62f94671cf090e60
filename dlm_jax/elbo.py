"""Continuous-time NELBO for the kernel family (DESIGN.md §3) and the AR loss.

    -log p(x) <= E_t E_{z ~ q_t(.|x)} [ integrand_t(x, z) ] + KL(q_1(.|x) || p_1)

    integrand = sum_{y != z} [ R^ - R~ log R^ + R~ log R~ - R~ ]
    R~(z -> y | x) = rate(y -> z | x) q_t(y|x) / q_t(z|x)              true reverse rate
    R^(z -> y)     = sum_x' x_hat(x') rate(y -> z | x') q_t(y|x') / q_t(z|x')

rate(y -> z | x) is the Markov rate r_t(y -> z) for masking, uniform and
partition (A) kernels, and the x-conditioned jump-in rate g_t^x(z) for top-k (B)
kernels. x_hat is the denoiser's softmax restricted to the candidates
C(z) = {x' : q_t(z|x') > 0} (masking: SUBS).

- `dense_integrand`: the generic reference over all states (O(V^2), tiny V, tests);
- `markov_integrand`: masking / uniform / (A), exact, O(V) per token (elementwise
  passes over a logits-sized array plus per-cluster sums);
- `masking_integrand`: MDLM's closed form, -alpha'/(1 - alpha) (-log x_hat(x));
- `topk_integrand`: (B), exact without a uniform part (O(k k_in) per token); with
  one, exact (O(V k) per token) or an unbiased estimate over `bulk_samples`
  uniformly drawn targets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = -1e30   # "minus infinity" that keeps gradients finite


def _safe_log(v):
  return jnp.log(jnp.where(v > 0, v, 1.0))


def _restricted_probs(logits, candidates):
  return jax.nn.softmax(jnp.where(candidates, logits.astype(jnp.float32), _NEG), axis=-1)


def masking_integrand(kernel, logits, x, z, t):
  """MDLM: on masked positions, -alpha'_t / (1 - alpha_t) * -log x_hat(x). (B, L) nats."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, x[..., None], axis=-1)[..., 0]
  alpha = kernel.alpha(t)
  weight = -kernel.mask.dalpha(t) / (1.0 - alpha)
  return jnp.where(z == kernel.mask_id, weight[:, None] * nll, 0.0)


def _cluster_sum(kernel, v):
  """For every y, sum of v over y's cluster (identity without clusters). v: (B, L, V)."""
  if kernel.members is None:
    return v
  padded = jnp.concatenate([v, jnp.zeros(v.shape[:-1] + (1,), v.dtype)], -1)
  idx = jnp.where(kernel.members >= 0, kernel.members, kernel.vocab_size)
  per_cluster = jnp.take(padded, idx, axis=-1).sum(-1)            # (B, L, n_clusters)
  return jnp.take(per_cluster, kernel.cluster, axis=-1)


def markov_integrand(kernel, logits, x, z, t):
  """Exact integrand for masking / uniform / partition (A) kernels (DESIGN.md §3, "(A) in O(V)")."""
  V = kernel.vocab_size
  e3 = lambda c: c[:, None, None]
  A, B, C, kappa = kernel.coefficients(t)
  s_sem, s_glob, s_mask = kernel.rates(t)
  vocab = jnp.arange(V)
  masked = z == kernel.mask_id
  zr = jnp.where(masked, 0, z)
  if kernel.cluster is not None:
    cl, size = kernel.cluster, kernel.cluster_size
    same_z = cl[None, None, :] == cl[zr][..., None]
    same_x = cl[None, None, :] == cl[x][..., None]
  else:
    size = jnp.ones((V,))
    same_z = vocab == zr[..., None]
    same_x = vocab == x[..., None]
  n_z, n_x = size[zr][..., None], size[x][..., None]
  is_z, is_x = vocab == zr[..., None], vocab == x[..., None]

  cand_real = (e3(C) > 0) | ((e3(B) > 0) & same_z) | is_z
  cand = masked[..., None] | cand_real
  x_hat = _restricted_probs(logits, cand)
  q_x = e3(A) * is_x + e3(B) * same_x / n_x + e3(C) / V               # q~(y | x)

  # Masked z: s_mask' kappa / (1 - kappa) KL(q~(.|x) || q~(.|x_hat)).
  if kernel.has_mask:
    q_hat = e3(A) * x_hat + e3(B) * _cluster_sum(kernel, x_hat) / size + e3(C) / V
    kl = jnp.sum(jnp.where(q_x > 0, q_x * (_safe_log(q_x) - _safe_log(q_hat)), 0.0), -1)
    masked_term = (s_mask * kappa / jnp.maximum(1.0 - kappa, 1e-30))[:, None] * kl
  else:
    masked_term = jnp.zeros(x.shape)

  # Real z: sum_{y != z} r(y) [rho^ - rho + rho log(rho / rho^)].
  q_z = e3(A) * is_z + e3(B) * same_z / n_z + e3(C) / V               # q~(z | x') over x'
  w = jnp.where(cand_real, x_hat / jnp.where(q_z > 0, q_z, 1.0), 0.0)
  rho_hat = (e3(A) * w + e3(B) * _cluster_sum(kernel, w) / size
             + e3(C) * w.sum(-1, keepdims=True) / V)
  q_x_z = jnp.take_along_axis(q_x, zr[..., None], -1)              # 0 only where z is masked
  rho = q_x / jnp.where(q_x_z > 0, q_x_z, 1.0)
  r = e3(s_sem) * same_z / n_z + e3(s_glob) / V
  live = (r > 0) & ~is_z
  term = rho_hat - rho + jnp.where(rho > 0, rho * (_safe_log(rho) - _safe_log(rho_hat)), 0.0)
  real_term = jnp.sum(jnp.where(live, r * term, 0.0), -1)
  return jnp.where(masked, masked_term, real_term)


def _row_lookup(ids, weights, y):
  """N_x(y) for rows (ids, weights): (..., k) and targets y: (..., m) -> (..., m)."""
  hit = ids[..., None, :] == y[..., :, None]
  return jnp.sum(jnp.where(hit, weights[..., None, :], 0.0), -1)


def topk_integrand(kernel, logits, x, z, t, key=None, bulk_samples: int = 0):
  """(B) integrand. With a uniform part and bulk_samples > 0 the bulk of the target sum is an
  unbiased Monte Carlo estimate (uniform targets); otherwise every term is exact."""
  V = kernel.vocab_size
  e2 = lambda c: c[:, None]
  e3 = lambda c: c[:, None, None]
  A, B, C, kappa = kernel.coefficients(t)
  alpha, ba, bb, bc = kappa * A, kappa * B, kappa * C, 1.0 - kappa
  g_sem, g_glob, g_mask = kernel.jump_in_coefficients(t)
  vocab = jnp.arange(V)
  masked = z == kernel.mask_id
  zr = jnp.where(masked, 0, z)
  ids_x, w_x = kernel.ids[x], kernel.weights[x]                        # (B, L, k)

  # Over sources x': N_x'(z), q(z | x'), g^{x'}(z).
  in_ids, in_w = kernel.in_ids[zr], kernel.in_weights[zr]              # (B, L, k_in)
  n_to_z = jnp.zeros(x.shape + (V + 1,)).at[
      jnp.arange(x.shape[0])[:, None, None], jnp.arange(x.shape[1])[None, :, None],
      jnp.where(in_ids >= 0, in_ids, V)].add(in_w)[..., :V]            # (B, L, V)
  is_z = vocab == zr[..., None]
  q_z_src = jnp.where(masked[..., None], e3(bc),
                      e3(alpha) * is_z + e3(ba) * n_to_z + e3(bb) / V)
  g_src = jnp.where(masked[..., None], e3(g_mask), e3(g_sem) * n_to_z + e3(g_glob) / V)
  cand = q_z_src > 0
  x_hat = _restricted_probs(logits, cand)
  v = jnp.where(cand, x_hat * g_src / jnp.where(cand, q_z_src, 1.0), 0.0)
  v_sum = v.sum(-1)

  # The true side, for the clean x.
  n_x_z = _row_lookup(ids_x, w_x, zr[..., None])[..., 0]
  q_z_x = jnp.where(masked, bc[:, None], e2(alpha) * (x == zr) + e2(ba) * n_x_z + e2(bb) / V)
  g_x = jnp.where(masked, g_mask[:, None], e2(g_sem) * n_x_z + e2(g_glob) / V)
  true_scale = g_x / q_z_x                                             # R~(y) = scale q(y|x)

  def model_rate(y):
    """R^(z -> y) for real targets y: (B, L, m)."""
    y_in_ids, y_in_w = kernel.in_ids[y], kernel.in_weights[y]          # (B, L, m, k_in)
    flat = jnp.where(y_in_ids >= 0, y_in_ids, 0).reshape(y.shape[:2] + (-1,))
    v_in = jnp.take_along_axis(v, flat, -1).reshape(y_in_ids.shape)
    vn = jnp.sum(jnp.where(y_in_ids >= 0, v_in * y_in_w, 0.0), -1)
    return (e3(alpha) * jnp.take_along_axis(v, y, -1) + e3(ba) * vn
            + e3(bb) * v_sum[..., None] / V)

  def true_q(y):
    """q(y | x) for real targets y: (B, L, m)."""
    return (e3(alpha) * (y == x[..., None]) + e3(ba) * _row_lookup(ids_x, w_x, y)
            + e3(bb) / V)

  def log_terms(y, valid):
    r_true = true_scale[..., None] * true_q(y)
    r_model = model_rate(y)
    ok = valid & (r_true > 0)
    return jnp.sum(jnp.where(ok, r_true * (_safe_log(r_true) - _safe_log(r_model)), 0.0), -1)

  # Special targets S = {x} + N_x (deduplicated, y != z).
  special = jnp.concatenate([x[..., None], jnp.where(ids_x >= 0, ids_x, x[..., None])], -1)
  k1 = special.shape[-1]
  earlier = jnp.tril(jnp.ones((k1, k1), bool), -1)
  dup = jnp.any((special[..., :, None] == special[..., None, :]) & earlier, -1)
  special_valid = ~dup & (special != jnp.where(masked, -1, z)[..., None])
  total = log_terms(special, special_valid)

  # The mask as a target (real z only): R~ = scale * bc, R^ = bc * sum(v).
  if kernel.has_mask:
    r_true_m = true_scale * bc[:, None]
    r_model_m = bc[:, None] * v_sum
    total += jnp.where(masked | (r_true_m <= 0), 0.0,
                       r_true_m * (_safe_log(r_true_m) - _safe_log(r_model_m)))

  # Bulk targets (uniform part only): real y outside S and != z, each with q(y|x) = bb / V.
  if kernel.glob is not None:
    if bulk_samples > 0:
      y = jax.random.randint(key, x.shape + (bulk_samples,), 0, V)
      in_s = jnp.any(y[..., :, None] == special[..., None, :], -1)
      valid = ~in_s & (y != jnp.where(masked, -1, z)[..., None])
      total += log_terms(y, valid) * (V / bulk_samples)
    else:
      y = jnp.broadcast_to(vocab, x.shape + (V,))
      in_s = jnp.any(y[..., :, None] == special[..., None, :], -1)
      valid = ~in_s & (y != jnp.where(masked, -1, z)[..., None])
      total += log_terms(y, valid)

  sum_model = jnp.sum(v * (1.0 - q_z_src), -1)
  sum_true = true_scale * (1.0 - q_z_x)
  return sum_model - sum_true + total


def nelbo_integrand(kernel, logits, x, z, t, key=None):
  """Per-token integrand of the NELBO at (x, z, t); logits over the V real tokens. (B, L)."""
  if kernel.structure == "topk":
    return topk_integrand(kernel, logits, x, z, t, key, kernel.bulk_samples)
  if kernel.name == "masking":
    return masking_integrand(kernel, logits, x, z, t)
  return markov_integrand(kernel, logits, x, z, t)


def prior_kl(kernel, x):
  """KL(q_1(.|x) || p_1) per token, (B, L) nats."""
  return kernel.prior_kl(x)


def dense_integrand(kernel, x_hat, x: int, z: int, t: float):
  """Reference integrand for one token, from dense marginals and rates (tiny V).

  x_hat: (V,) the denoiser's distribution; it is renormalised over C(z).
  """
  V = kernel.vocab_size
  q = kernel.marginal(jnp.arange(V), t)                      # (V, n): q_t(. | x')
  cand = q[:, z] > 0
  x_hat = jnp.where(cand, x_hat, 0.0)
  x_hat = x_hat / x_hat.sum()
  if kernel.is_markov:
    rate_in = jnp.broadcast_to(kernel.markov_rates(t)[:, z], q.shape)   # rate(y -> z), any x'
  else:
    g = jax.vmap(lambda xp: kernel.jump_in_rates(xp, t))(jnp.arange(V))  # (V, n)
    rate_in = jnp.broadcast_to(g[:, z][:, None], q.shape)               # g^{x'}(z), any y
  ratio = jnp.where(cand[:, None], q / jnp.where(cand, q[:, z], 1.0)[:, None], 0.0)
  true = rate_in[x] * ratio[x]
  model = jnp.sum(x_hat[:, None] * rate_in * ratio, 0)
  others = jnp.arange(q.shape[1]) != z
  terms = model - true + jnp.where(true > 0, true * (_safe_log(true) - _safe_log(model)), 0.0)
  return jnp.sum(jnp.where(others, terms, 0.0))


def dense_prior_kl(kernel, x):
  q1 = kernel.marginal(jnp.asarray(x), 1.0)
  p1 = kernel.prior_probs()
  return jnp.sum(jnp.where(q1 > 0, q1 * (_safe_log(q1) - _safe_log(p1)), 0.0))


def ar_nll(logits, tokens):
  """Next-token NLL: logits at i predict tokens[i + 1]. (B, L - 1) nats."""
  log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]

"""Dense O(V^2) references of the kernel family, for tests on tiny vocabularies only.

Everything here is the definition written out over all states: the marginal q_t(. | x),
the Markov generator, the (B) jump-in rates, the NELBO integrand of one token by
enumeration, and the prior KL. Each member's own loss must agree with these to float32 rounding;
`full_vocabulary_integrand` is the O(V) log-space form of every Markov member's loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm_jax.kernels import clusters, logspace


def neighbours(kernel):
  """(V, V) N, N[x, y] = N_x(y) (the identity without a table)."""
  V = kernel.vocab_size
  if kernel.table is None:
    return jnp.eye(V)
  ids, weights = kernel.table.ids, kernel.table.weights
  rows = jnp.repeat(jnp.arange(V), ids.shape[1])
  valid = ids.ravel() >= 0
  return jnp.zeros((V, V)).at[rows, jnp.where(valid, ids.ravel(), 0)].add(
      jnp.where(valid, weights.ravel(), 0.0))


def marginal(kernel, x, t):
  """Dense q_t(. | x) over the V (+1) states; x: (...) ints, t broadcastable."""
  V, n = kernel.vocab_size, kernel.input_vocab_size
  A, B, C, kappa = [jnp.asarray(c)[..., None] for c in kernel.coefficients(jnp.asarray(t))]
  real = A * jax.nn.one_hot(x, V) + B * neighbours(kernel)[x] + C / V
  out = kappa * jnp.pad(real, [(0, 0)] * (real.ndim - 1) + [(0, n - V)])
  if kernel.has_mask_token:
    one_minus_kappa = kernel.one_minus_kappa(jnp.asarray(t))[..., None]
    out = out + one_minus_kappa * jax.nn.one_hot(kernel.mask_id, n)
  return out


def markov_rates(kernel, t):
  """(A) kernels: the forward generator R[y, z] = r_t(y -> z), diagonal = -row sum."""
  V, n = kernel.vocab_size, kernel.input_vocab_size
  s_sem, s_glob, s_mask = kernel.rates(jnp.asarray(t))
  r = jnp.zeros((n, n))
  r = r.at[:V, :V].add(s_sem * neighbours(kernel) + s_glob / V)
  if kernel.has_mask_token:
    r = r.at[:V, kernel.mask_id].add(s_mask)
  r = r * (1.0 - jnp.eye(n))
  return r - jnp.diag(r.sum(1))


def jump_in_rates(kernel, x, t):
  """(B) kernels: dense g_t^x(.) over the V (+1) states for clean token x."""
  V, n = kernel.vocab_size, kernel.input_vocab_size
  g_sem, g_glob, g_mask = kernel.jump_in_coefficients(jnp.asarray(t))
  g = jnp.zeros((n,)).at[:V].set(g_sem * neighbours(kernel)[x] + g_glob / V)
  if kernel.has_mask_token:
    g = g.at[kernel.mask_id].set(g_mask)
  return g


def _rates(kernel, x_hat, x: int, z: int, t: float):
  """(true, model, others): the true reverse rates out of z for the clean x, the model's
  (the chain its sampler runs), over all states, and the mask of states other than z."""
  V = kernel.vocab_size
  q = marginal(kernel, jnp.arange(V), t)                     # (V, n): q_t(. | x')
  cand = q[:, z] > 0
  x_hat = jnp.where(cand, x_hat, 0.0)
  x_hat = x_hat / x_hat.sum()
  if kernel.exact_nelbo:
    rate_in = jnp.broadcast_to(markov_rates(kernel, t)[:, z], q.shape)   # rate(y -> z)
  else:
    g = jax.vmap(lambda xp: jump_in_rates(kernel, xp, t))(jnp.arange(V))  # (V, n)
    rate_in = jnp.broadcast_to(g[:, z][:, None], q.shape)                # g^{x'}(z)
  ratio = jnp.where(cand[:, None], q / jnp.where(cand, q[:, z], 1.0)[:, None], 0.0)
  true = rate_in[x] * ratio[x]
  if kernel.mean_form:   # sum_x' x_hat(x') rate(y -> z | x') q_t(y | x') / q_t(z | x_hat)
    model = jnp.sum(x_hat[:, None] * rate_in * q, 0) / (x_hat @ q)[z]
  else:                  # sum_x' x_hat(x') rate(y -> z | x') q_t(y | x') / q_t(z | x')
    model = jnp.sum(x_hat[:, None] * rate_in * ratio, 0)
  return true, model, jnp.arange(q.shape[1]) != z


def model_rates(kernel, x_hat, z: int, t: float):
  """The model's reverse rates R^(z -> y) over all states (0 at y = z), from the denoiser's
  distribution x_hat (V,): what the NELBO integrand scores and the sampler must run."""
  _, model, others = _rates(kernel, x_hat, 0, z, t)
  return jnp.where(others, model, 0.0)


def integrand(kernel, x_hat, x: int, z: int, t: float):
  """The NELBO integrand of one token by enumeration over all states.

  x_hat: (V,) the denoiser's distribution; it is renormalised over C(z).
  """
  true, model, others = _rates(kernel, x_hat, x, z, t)
  terms = model - true + jnp.where(true > 0, true * (logspace.log(true) - logspace.log(model)),
                                   0.0)
  return jnp.sum(jnp.where(others, terms, 0.0))


def prior_kl(kernel, x):
  q1 = marginal(kernel, jnp.asarray(x), 1.0)
  p1 = kernel.prior_probs()
  return jnp.sum(jnp.where(q1 > 0, q1 * (logspace.log(q1) - logspace.log(p1)), 0.0))


def full_vocabulary_integrand(kernel, logits, x, z, t):
  """The exact integrand of every Markov member (clusters.MarkovProcess), over the whole
  vocabulary in log space: the O(V) form the members' own losses must agree with, for tests
  and benchmarks. (B, L) nats."""
  V = kernel.vocab_size
  e3 = lambda c: c[:, None, None]
  A, B, C, _ = kernel.coefficients(t)
  s_sem, s_glob, _ = kernel.rates(t)
  masked = z == kernel.mask_id
  zr = jnp.where(masked, 0, z)
  vocab = jnp.arange(V)
  is_x, is_z = vocab == x[..., None], vocab == zr[..., None]
  same_x, same_z = kernel.same_group(x), kernel.same_group(zr)
  _, size = kernel.grouping(vocab)
  n_x, n_z = kernel.grouping(x)[1][..., None], kernel.grouping(zr)[1][..., None]
  log_x_hat = logspace.restricted_log_softmax(logits, kernel.candidates(z, t))
  q_x = kernel.real_marginal(e3(A), e3(B), e3(C), is_x, same_x / n_x)   # q~(y | x)
  log_q_x = logspace.log(q_x)

  # Masked z: s_mask' kappa / (1 - kappa) KL(q~(. | x) || q~(. | x_hat)).
  if kernel.has_mask_token:
    log_q_hat = kernel.log_mixture(A, B, C, log_x_hat, size)
    kl = jnp.sum(jnp.where(q_x > 0, q_x * (log_q_x - log_q_hat), 0.0), -1)
    masked_term = kernel.masked_rate_weight(t)[:, None] * kl
  else:
    masked_term = jnp.zeros(x.shape)

  # Real z: sum_{y != z} r(y -> z) [rho^ - rho + rho log(rho / rho^)], with
  # rho(y) = q~(y|x) / q~(z|x) and rho^(y) = sum_x' x_hat(x') q~(y|x') / q~(z|x').
  q_z = kernel.real_marginal(e3(A), e3(B), e3(C), is_z, same_z / n_z)   # q~(z | x') over x'
  log_w = clusters.log_source_weights(kernel, log_x_hat, q_z, q_z > 0, (-1,))
  log_rho_hat = kernel.log_mixture(A, B, C, log_w, size)
  log_q_x_z = jnp.where(masked[..., None], 0.0, jnp.take_along_axis(log_q_x, zr[..., None], -1))
  log_rho = log_q_x - log_q_x_z
  rho = jnp.where(q_x > 0, jnp.exp(log_rho), 0.0)
  r = e3(s_sem) * same_z / n_z + e3(s_glob) / V
  live = (r > 0) & ~is_z
  term = clusters.kl_term(q_x > 0, rho, log_rho, log_rho_hat)
  real_term = jnp.sum(jnp.where(live, r * term, 0.0), -1)
  return jnp.where(masked, masked_term, real_term)

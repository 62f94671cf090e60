"""Dense O(V^2) references of the kernel family, for tests on tiny vocabularies only.

Everything here is the definition written out over all states: the marginal q_t(. | x),
the Markov generator, the (B) jump-in rates, the NELBO integrand of one token by
enumeration, and the prior KL. The production code (markov.py, topk.py) must agree with
these to float32 rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm_jax.kernels import logspace


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
  if kernel.has_mask:
    out = out + (1.0 - kappa) * jax.nn.one_hot(kernel.mask_id, n)
  return out


def markov_rates(kernel, t):
  """(A) kernels: the forward generator R[y, z] = r_t(y -> z), diagonal = -row sum."""
  V, n = kernel.vocab_size, kernel.input_vocab_size
  s_sem, s_glob, s_mask = kernel.rates(jnp.asarray(t))
  r = jnp.zeros((n, n))
  r = r.at[:V, :V].add(s_sem * neighbours(kernel) + s_glob / V)
  if kernel.has_mask:
    r = r.at[:V, kernel.mask_id].add(s_mask)
  r = r * (1.0 - jnp.eye(n))
  return r - jnp.diag(r.sum(1))


def jump_in_rates(kernel, x, t):
  """(B) kernels: dense g_t^x(.) over the V (+1) states for clean token x."""
  V, n = kernel.vocab_size, kernel.input_vocab_size
  g_sem, g_glob, g_mask = kernel.jump_in_coefficients(jnp.asarray(t))
  g = jnp.zeros((n,)).at[:V].set(g_sem * neighbours(kernel)[x] + g_glob / V)
  if kernel.has_mask:
    g = g.at[kernel.mask_id].set(g_mask)
  return g


def integrand(kernel, x_hat, x: int, z: int, t: float):
  """The NELBO integrand of one token by enumeration over all states.

  x_hat: (V,) the denoiser's distribution; it is renormalised over C(z).
  """
  V = kernel.vocab_size
  q = marginal(kernel, jnp.arange(V), t)                     # (V, n): q_t(. | x')
  cand = q[:, z] > 0
  x_hat = jnp.where(cand, x_hat, 0.0)
  x_hat = x_hat / x_hat.sum()
  if kernel.is_markov:
    rate_in = jnp.broadcast_to(markov_rates(kernel, t)[:, z], q.shape)   # rate(y -> z)
  else:
    g = jax.vmap(lambda xp: jump_in_rates(kernel, xp, t))(jnp.arange(V))  # (V, n)
    rate_in = jnp.broadcast_to(g[:, z][:, None], q.shape)                # g^{x'}(z)
  ratio = jnp.where(cand[:, None], q / jnp.where(cand, q[:, z], 1.0)[:, None], 0.0)
  true = rate_in[x] * ratio[x]
  if kernel.mean_form:                 # rate^{x_hat}(y -> z) q_t(y | x_hat) / q_t(z | x_hat)
    q_hat = x_hat @ q
    model = (x_hat @ rate_in) * q_hat / q_hat[z]
  else:                                # sum_x' x_hat(x') rate(y -> z | x') q_t(y|x') / q_t(z|x')
    model = jnp.sum(x_hat[:, None] * rate_in * ratio, 0)
  others = jnp.arange(q.shape[1]) != z
  terms = model - true + jnp.where(true > 0, true * (logspace.log(true) - logspace.log(model)),
                                   0.0)
  return jnp.sum(jnp.where(others, terms, 0.0))


def prior_kl(kernel, x):
  q1 = marginal(kernel, jnp.asarray(x), 1.0)
  p1 = kernel.prior_probs()
  return jnp.sum(jnp.where(q1 > 0, q1 * (logspace.log(q1) - logspace.log(p1)), 0.0))

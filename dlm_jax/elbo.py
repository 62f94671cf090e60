"""Continuous-time NELBO (DESIGN.md §3) and the autoregressive loss.

    -log p(x) <= E_t E_{z ~ q_t(.|x)} [ integrand_t(x, z) ] + KL(q_1(.|x) || p_1)

`nelbo_integrand` is the production, per-token form; `dense_integrand` is the
generic reference over all V + 1 states (O(V^2), tiny vocabularies, tests):

    integrand = sum_{y != z} [ R^ - R~ log R^ + R~ log R~ - R~ ]
    R~(z -> y | x) = r_t(y -> z) q_t(y|x) / q_t(z|x)
    R^(z -> y)     = sum_x' x_hat(x') r_t(y -> z) q_t(y|x') / q_t(z|x')
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm_jax.kernels.interpolating import MaskingKernel


def masking_integrand(kernel: MaskingKernel, logits, x, z, t):
  """MDLM: on masked positions, -alpha'_t / (1 - alpha_t) * -log x_hat(x). (B, L) nats."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, x[..., None], axis=-1)[..., 0]
  weight = -kernel.dalpha(t) / (1.0 - kernel.alpha(t))
  return jnp.where(z == kernel.mask_id, weight[:, None] * nll, 0.0)


def nelbo_integrand(kernel, logits, x, z, t):
  """Per-token integrand of the NELBO at (x, z, t); logits over the V real tokens."""
  if isinstance(kernel, MaskingKernel):
    return masking_integrand(kernel, logits, x, z, t)
  raise NotImplementedError(f"no NELBO for kernel {kernel!r}")


def prior_kl(kernel, x):
  """KL(q_1(.|x) || p_1) per token, (B, L) nats."""
  q1 = kernel.marginal(x, jnp.ones(x.shape))
  p1 = kernel.prior_probs()
  return jnp.sum(jnp.where(q1 > 0, q1 * (jnp.log(jnp.where(q1 > 0, q1, 1.0)) - jnp.log(p1)), 0.0),
                 -1)


def dense_integrand(kernel, x_hat, x: int, z: int, t: float):
  """Reference integrand for one token (generic over the kernel's dense rates).

  x_hat: (V,) the denoiser's distribution over clean tokens given z (it is
  renormalised over the candidates C(z) = {x' : q_t(z|x') > 0}).
  """
  V = kernel.vocab_size
  rates = kernel.rates(t)                                   # (V+1, V+1), r(y -> z)
  q = kernel.marginal(jnp.arange(V), t)                     # (V, V+1): q_t(. | x')
  cand = q[:, z] > 0
  x_hat = jnp.where(cand, x_hat, 0.0)
  x_hat = x_hat / x_hat.sum()
  ratio = jnp.where(cand[:, None], q / jnp.where(cand, q[:, z], 1.0)[:, None], 0.0)  # q(y|x')/q(z|x')
  r_in = rates[:, z]                                        # r(y -> z)
  true = r_in * ratio[x]
  model = r_in * (x_hat @ ratio)
  others = jnp.arange(V + 1) != z
  terms = model - true + jnp.where(true > 0, true * (jnp.log(jnp.where(true > 0, true, 1.0))
                                                     - jnp.log(jnp.where(model > 0, model, 1.0))),
                                   0.0)
  return jnp.sum(jnp.where(others, terms, 0.0))


def ar_nll(logits, tokens):
  """Next-token NLL: logits at i predict tokens[i + 1]. (B, L - 1) nats."""
  log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]

"""MDLM ancestral sampler for the masking kernel, with caching of unchanged steps.

From t to s < t a masked position is revealed with probability
(alpha_s - alpha_t) / (1 - alpha_t), its token drawn from x_hat (SUBS: revealed
tokens never change). When no position changed in a step and the model is not
time-conditioned, x_hat is unchanged too, so the network call is skipped
(MDLM's cache); the loop is one `lax.scan` inside one jit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def reverse_step(kernel, key, z, logits, t, s, temperature: float = 1.0):
  """One exact ancestral step z_t -> z_s for the masking kernel."""
  alpha_t, alpha_s = kernel.alpha(t), kernel.alpha(s)
  p_reveal = (alpha_s - alpha_t) / (1.0 - alpha_t)
  k_tok, k_reveal = jax.random.split(key)
  x = jax.random.categorical(k_tok, logits.astype(jnp.float32) / temperature, axis=-1)
  reveal = jax.random.uniform(k_reveal, z.shape) < p_reveal
  return jnp.where((z == kernel.mask_id) & reveal, x, z)


def sample(params, key, fixed_tokens, fixed_mask, *, model, kernel, steps: int,
           use_cache: bool = True, temperature: float = 1.0):
  """Generates (B, L) tokens; positions where `fixed_mask` is True keep `fixed_tokens`
  (prefix prompts and infilling). Returns (tokens, number of network evaluations)."""
  batch, length = fixed_tokens.shape
  k_prior, key = jax.random.split(key)
  z = jnp.where(fixed_mask, fixed_tokens, kernel.sample_prior(k_prior, (batch, length)))
  times = jnp.linspace(1.0, 0.0, steps + 1)
  denoise = lambda z, t: model.apply({"params": params}, z, jnp.full((batch,), t))

  def body(carry, i):
    z, logits, stale, nfe = carry
    t, s = times[i], times[i + 1]
    if use_cache:
      logits = jax.lax.cond(stale, lambda: denoise(z, t), lambda: logits)
      nfe = nfe + stale.astype(jnp.int32)
    else:
      logits, nfe = denoise(z, t), nfe + 1
    z_next = reverse_step(kernel, jax.random.fold_in(key, i), z, logits, t, s, temperature)
    z_next = jnp.where(fixed_mask, fixed_tokens, z_next)
    return (z_next, logits, jnp.any(z_next != z), nfe), None

  logits0 = jnp.zeros((batch, length, model.cfg.vocab_out), jnp.float32)
  (z, _, _, nfe), _ = jax.lax.scan(body, (z, logits0, jnp.array(True), jnp.array(0)),
                                   jnp.arange(steps))
  return z, nfe


def jit_sample(model, kernel, steps: int, use_cache: bool, temperature: float = 1.0):
  return jax.jit(functools.partial(sample, model=model, kernel=kernel, steps=steps,
                                   use_cache=use_cache, temperature=temperature))

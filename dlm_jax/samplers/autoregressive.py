"""Left-to-right ancestral sampling from the causal baseline (for reference samples and for
checking the judge): one network call per position inside one `lax.scan`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dlm_jax.samplers.reverse import draw_tokens


def sample(params, key, fixed_tokens, fixed_mask, *, model, temperature: float = 1.0,
           top_p: float = 1.0):
  """Fills every position i >= 1 not in `fixed_mask` with x_i ~ p(. | x_<i)."""
  batch, length = fixed_tokens.shape

  def body(z, i):
    logits = model.apply({"params": params}, z, jnp.zeros((batch,), jnp.float32))
    step_logits = jax.lax.dynamic_index_in_dim(logits, i - 1, 1, keepdims=False)
    x = draw_tokens(jax.random.fold_in(key, i), step_logits.astype(jnp.float32) / temperature,
                    True, top_p)
    keep = jax.lax.dynamic_index_in_dim(fixed_mask, i, 1, keepdims=False)
    current = jax.lax.dynamic_index_in_dim(z, i, 1, keepdims=False)
    return jax.lax.dynamic_update_index_in_dim(z, jnp.where(keep, current, x), i, 1), None

  z, _ = jax.lax.scan(body, jnp.where(fixed_mask, fixed_tokens, 0), jnp.arange(1, length))
  return z, jnp.array(length - 1)


def jit_sample(model, temperature: float = 1.0, top_p: float = 1.0):
  return jax.jit(functools.partial(sample, model=model, temperature=temperature, top_p=top_p))

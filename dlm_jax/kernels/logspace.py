"""Log-space helpers shared by the NELBO integrands: a finite "minus infinity" that keeps
gradients finite, the log of a nonnegative array, and a stable sum of exponentials."""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG = -1e30


def log(v):
  """log v where v > 0, NEG where v = 0 (gradient-safe)."""
  return jnp.where(v > 0, jnp.log(jnp.where(v > 0, v, 1.0)), NEG)


def restricted_log_softmax(logits, allowed):
  """log softmax of float32 `logits` over the `allowed` entries (NEG-ish elsewhere)."""
  return jax.nn.log_softmax(jnp.where(allowed, logits.astype(jnp.float32), NEG), axis=-1)


def logsumexp_stack(parts):
  """log sum_i exp(parts[i]) elementwise, for arrays broadcastable to one shape."""
  shape = jnp.broadcast_shapes(*[jnp.shape(p) for p in parts])
  return jax.nn.logsumexp(jnp.stack([jnp.broadcast_to(p, shape) for p in parts]), axis=0)

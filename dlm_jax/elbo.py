"""The losses: the continuous-time NELBO of a diffusion kernel, and the AR next-token NLL.

    -log p(x) <= E_t E_{z ~ q_t(.|x)} [ integrand_t(x, z) ] + KL(q_1(.|x) || p_1)

(docs/design.md §3). The integrand belongs to the diffusion process (each member's module
under `kernels/`); this module is the wiring.

Both losses are per position given the network's output there, so they can be evaluated
from the final hidden states one chunk of positions at a time (`over_position_chunks`):
the output head and the loss run together under `jax.checkpoint`, and only one chunk of
(B, chunk, V) logits is ever live, in the forward pass or the backward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm_jax.kernels import logspace


def nelbo_integrand(process, logits, x, z, t, key=None):
  """Per-token integrand of the NELBO at (x, z, t); logits over the V real tokens. (B, L)."""
  return process.integrand(logits, x, z, t, key)


def nelbo_per_token(process, logits, x, z, t, key=None):
  """Integrand plus the prior term KL(q_1(.|x) || p_1): a one-sample NELBO per token."""
  return nelbo_integrand(process, logits, x, z, t, key) + process.prior_kl(x)


def ar_nll(logits, tokens):
  """Next-token NLL: logits at i predict tokens[i + 1]. (B, L - 1) nats."""
  return logspace.nll_at(logits[:, :-1], tokens[:, 1:])


def over_position_chunks(fn, chunk: int, features, *per_position):
  """fn(features, *per_position, chunk_index) -> (B, c), over chunks of `chunk` positions.

  features: (B, L, d); each of per_position: (B, L, ...). With 0 < chunk < L (chunk must
  divide L), chunks run one after another under `jax.checkpoint`, so the backward pass
  recomputes a chunk's logits instead of keeping them. Returns (B, L)."""
  B, L = features.shape[:2]
  if chunk <= 0 or chunk >= L:
    return fn(features, *per_position, jnp.zeros((), jnp.int32))
  if L % chunk:
    raise ValueError(f"logits chunk {chunk} must divide the sequence length {L}")
  n = L // chunk
  split = lambda a: jnp.swapaxes(a.reshape(B, n, chunk, *a.shape[2:]), 0, 1)
  body = jax.checkpoint(lambda args: fn(*args))
  out = jax.lax.map(body, (split(features), *map(split, per_position), jnp.arange(n)))
  return jnp.swapaxes(out, 0, 1).reshape(B, L)


def chunked_integrand(process, head, features, x, z, t, key, chunk: int):
  """`nelbo_integrand` from hidden states, one chunk of positions at a time: the process
  receives the network's head(h, columns=None) and asks it for the logits it reads.
  (B, L) nats.

  The bulk-target estimate of a top-k process (bulk_samples > 0) draws its targets per
  chunk, from fold_in(key, chunk index)."""
  def integrand(h, x_c, z_c, i):
    return process.integrand_from_head(head, h, x_c, z_c, t, jax.random.fold_in(key, i))
  return over_position_chunks(integrand, chunk, features, x, z)


def chunked_nelbo_per_token(process, head, features, x, z, t, key, chunk: int):
  """`nelbo_per_token` from hidden states, in chunks. (B, L) nats."""
  return chunked_integrand(process, head, features, x, z, t, key, chunk) + process.prior_kl(x)


def chunked_ar_nll(head, features, tokens, chunk: int):
  """`ar_nll` from hidden states, in chunks. (B, L - 1) nats."""
  targets = jnp.concatenate([tokens[:, 1:], tokens[:, -1:]], axis=1)   # the last is unused
  nll = over_position_chunks(lambda h, y, i: logspace.nll_at(head(h), y), chunk, features, targets)
  return nll[:, :-1]

"""The losses: the continuous-time NELBO of a diffusion kernel, and the AR next-token NLL.

    -log p(x) <= E_t E_{z ~ q_t(.|x)} [ integrand_t(x, z) ] + KL(q_1(.|x) || p_1)

(docs/design.md §3). The integrand belongs to the kernel's structure
(`kernels/markov.py`, `kernels/topk.py`); this module is the wiring.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def nelbo_integrand(kernel, logits, x, z, t, key=None):
  """Per-token integrand of the NELBO at (x, z, t); logits over the V real tokens. (B, L)."""
  return kernel.structure.integrand(kernel, logits, x, z, t, key)


def nelbo_per_token(kernel, logits, x, z, t, key=None):
  """Integrand plus the prior term KL(q_1(.|x) || p_1): a one-sample NELBO per token."""
  return nelbo_integrand(kernel, logits, x, z, t, key) + kernel.prior_kl(x)


def ar_nll(logits, tokens):
  """Next-token NLL: logits at i predict tokens[i + 1]. (B, L - 1) nats."""
  log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]

"""The masking process (MDLM, arXiv 2406.07524): every token jumps to the mask id V and stays
there; revealed tokens are final (docs/design.md §2).

Its loss is MDLM's closed form: -alpha'/(1 - alpha) (-log x_hat(x)) on masked positions.
"""

from __future__ import annotations

import jax.numpy as jnp

from dlm_jax.kernels import logspace
from dlm_jax.kernels.clusters import MarkovProcess


class Masking(MarkovProcess):
  absorbing = True

  def integrand(self, logits, x, z, t, key=None):
    """(B, L) nats: the weight -alpha'/(1 - alpha) times -log x_hat(x) where z is masked."""
    del key
    nll = logspace.nll_at(logits, x)
    one_minus = self.mask.one_minus_alpha(t)
    weight = jnp.where(one_minus > 0,
                       -self.mask.dalpha(t) / jnp.where(one_minus > 0, one_minus, 1.0), 0.0)
    return jnp.where(z == self.mask_id, weight[:, None] * nll, 0.0)

"""Noise schedules alpha_t: the probability that a token is still clean at time t.

Each schedule is a frozen dataclass with pure methods of t in [0, 1]:
`alpha(t)` and its derivative `dalpha(t)`. alpha(0) = 1 and alpha is
decreasing. `eps` is alpha(1) (MDLM's log-linear schedule keeps eps = 1e-3).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from dlm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class LogLinear:
  """alpha_t = 1 - (1 - eps) t, i.e. total noise sigma_t = -log(1 - (1 - eps) t) (MDLM)."""
  eps: float = 1e-3

  def alpha(self, t):
    return 1.0 - (1.0 - self.eps) * t

  def dalpha(self, t):
    return -(1.0 - self.eps) * jnp.ones_like(t)


@dataclasses.dataclass(frozen=True)
class Cosine:
  """alpha_t = eps + (1 - eps) cos(pi t / 2)."""
  eps: float = 0.0

  def alpha(self, t):
    return self.eps + (1.0 - self.eps) * jnp.cos(0.5 * math.pi * t)

  def dalpha(self, t):
    return -(1.0 - self.eps) * 0.5 * math.pi * jnp.sin(0.5 * math.pi * t)


SCHEDULES = {"loglinear": LogLinear, "cosine": Cosine}


def make_schedule(name: str, eps: float):
  if name not in SCHEDULES:
    raise UserError(f"unknown schedule {name!r}; expected one of {sorted(SCHEDULES)}")
  if not 0.0 <= eps < 1.0:
    raise UserError(f"schedule eps = alpha(1) must be in [0, 1), got {eps}")
  return SCHEDULES[name](eps=eps)

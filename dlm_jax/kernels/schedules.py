"""Noise schedules: alpha(t), the probability that a component has *not* fired by t.

Each kernel component (semantic, global uniform, mask) has a cumulative rate
s(t) = -log alpha(t) (docs/design.md §1); a valid schedule has alpha(0) = 1,
alpha(1) = eps and alpha nonincreasing. Schedules are frozen dataclasses with
pure methods of t in [0, 1]: `alpha`, `one_minus_alpha` (accurate near t = 0,
where 1 - alpha(t) would round to 0 in float32), `dalpha` and `rate` = s'(t).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from dlm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class LogLinear:
  """alpha_t = 1 - (1 - eps) t^power (MDLM's log-linear schedule at power 1).

  power > 1 delays the component (it fires late, as SemDLM+'s global transition).
  """
  eps: float = 1e-3
  power: float = 1.0

  def alpha(self, t):
    return 1.0 - self.one_minus_alpha(t)

  def one_minus_alpha(self, t):
    return (1.0 - self.eps) * jnp.power(t, self.power)

  def dalpha(self, t):
    return -(1.0 - self.eps) * self.power * jnp.power(t, self.power - 1.0)

  def rate(self, t):
    return -self.dalpha(t) / self.alpha(t)


@dataclasses.dataclass(frozen=True)
class Cosine:
  """alpha_t = eps + (1 - eps) cos(pi t^power / 2).

  Written as sin(pi (1 - t^power) / 2) so that alpha(1) = eps exactly (cos(pi / 2) is
  -4.4e-8 in float32), and 1 - alpha as 2 sin^2(pi t^power / 4), exact near t = 0.
  """
  eps: float = 0.0
  power: float = 1.0

  def alpha(self, t):
    return self.eps + (1.0 - self.eps) * jnp.sin(0.5 * math.pi * (1.0 - jnp.power(t, self.power)))

  def one_minus_alpha(self, t):
    return (1.0 - self.eps) * 2.0 * jnp.square(jnp.sin(0.25 * math.pi * jnp.power(t, self.power)))

  def dalpha(self, t):
    return (-(1.0 - self.eps) * 0.5 * math.pi * self.power * jnp.power(t, self.power - 1.0)
            * jnp.sin(0.5 * math.pi * jnp.power(t, self.power)))

  def rate(self, t):
    return -self.dalpha(t) / self.alpha(t)


SCHEDULES = {"loglinear": LogLinear, "cosine": Cosine}


def make_schedule(name: str, eps: float, power: float = 1.0, what: str = "schedule"):
  if name not in SCHEDULES:
    raise UserError(f"unknown {what} {name!r}; expected one of {sorted(SCHEDULES)}")
  if not 0.0 <= eps < 1.0:
    raise UserError(f"{what} eps = alpha(1) must be in [0, 1), got {eps}")
  if power <= 0:
    raise UserError(f"{what} power must be > 0 (alpha must decrease in t), got {power}")
  return SCHEDULES[name](eps=eps, power=power)

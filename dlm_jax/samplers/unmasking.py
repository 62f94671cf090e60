"""Unmasking-size laws for the masking kernel: how many masked positions a step reveals.

- `ancestral`: the exact reverse step: each masked position is revealed independently with
  probability (alpha_s - alpha_t) / (1 - alpha_t), so step sizes are binomial.
- `fixed`: deterministic sizes. After step k exactly round(M F(s_k)) of the M initially
  masked positions are revealed, F(tau) = (alpha_tau - alpha_1) / (1 - alpha_1) the share
  the schedule has revealed by time tau (equal sizes M / K for the log-linear schedule).
- `random`: randomized sizes (the third seed's idea; its exact law was not available to us,
  this is our law). The K - 1 cut points of the time grid are sorted i.i.d. uniforms
  U_(1) < ... < U_(K-1) instead of k / K, and after step k round(M F(1 - U_(k))) positions are
  revealed: sizes are a random composition with the same mean profile as `fixed`.

Which positions are revealed is a uniformly random order (a random priority per position,
fixed for the whole loop); the tokens come from the denoiser as in every step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

LAWS = ("ancestral", "fixed", "random")


@dataclasses.dataclass(frozen=True)
class Plan:
  rank: jax.Array         # (B, L) reveal order among the masked positions (others: >= M)
  revealed: jax.Array     # (B, K) how many are revealed after step k

  def reveal(self, step):
    """(B, L) True where a position is revealed by the end of step `step`."""
    return self.rank < self.revealed[:, step][:, None]


def share_revealed(kernel, tau):
  """F(tau): the share of masked positions the schedule has revealed by time tau."""
  a1 = kernel.alpha(jnp.asarray(1.0, tau.dtype))
  return (kernel.alpha(tau) - a1) / (1.0 - a1)


def plan(law: str, key, kernel, times, masked) -> Plan:
  """The reveal plan of `law` for the (B, L) `masked` positions over the grid `times` (K + 1
  points from 1 to 0)."""
  batch = masked.shape[0]
  k_order, k_cuts = jax.random.split(key)
  priority = jnp.where(masked, jax.random.uniform(k_order, masked.shape), 2.0)
  rank = jnp.argsort(jnp.argsort(priority, -1), -1)
  total = masked.sum(-1, keepdims=True).astype(times.dtype)
  steps = times.shape[0] - 1
  if law == "fixed":
    tau = jnp.broadcast_to(times[1:], (batch, steps))
  elif law == "random":
    cuts = jnp.sort(jax.random.uniform(k_cuts, (batch, steps - 1), times.dtype), -1)
    tau = 1.0 - jnp.concatenate([cuts, jnp.ones((batch, 1), times.dtype)], -1)
  else:
    raise ValueError(f"no plan for law {law!r}")
  revealed = jnp.round(total * share_revealed(kernel, tau)).astype(jnp.int32)
  revealed = revealed.at[:, -1].set(total[:, 0].astype(jnp.int32))
  return Plan(rank=rank, revealed=revealed)

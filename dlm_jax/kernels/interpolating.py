"""The interpolating kernel family of DESIGN.md §3, as pure functions.

    q_t(z | x) = alpha_t delta_x(z) + (1 - alpha_t) pi^x(z)

A kernel is a frozen dataclass: hashable, so it can be a static argument of
`jax.jit`, and holding only configuration; every method is a pure function of
arrays. The masking kernel (pi = delta_m, the absorbing state m = V) is the
first member; the semantic / uniform members extend the same interface:

- `sample_forward(key, x, t)`: z ~ q_t(. | x) per token;
- `marginal(x, t)`: dense q_t(. | x) over the V + 1 states (tiny V, tests);
- `rates(t)`: dense forward generator r_t(y -> z) (tiny V, tests);
- `prior_probs()` / `sample_prior(key, shape)`: the generative start p_1;
- `alpha(t)`, `dalpha(t)`: the schedule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from dlm_jax.errors import UserError
from dlm_jax.kernels import schedules

KERNELS = ("masking",)


@dataclasses.dataclass(frozen=True)
class MaskingKernel:
  """Absorbing-state kernel: each token is replaced by the mask m = V w.p. 1 - alpha_t."""
  vocab_size: int          # V real tokens; the mask is the extra id V
  schedule: Any
  name: str = "masking"

  @property
  def mask_id(self) -> int:
    return self.vocab_size

  @property
  def input_vocab_size(self) -> int:
    return self.vocab_size + 1

  def alpha(self, t):
    return self.schedule.alpha(t)

  def dalpha(self, t):
    return self.schedule.dalpha(t)

  def sample_forward(self, key, x, t):
    """x: (B, L) ints, t: (B,) -> z: (B, L), each token masked w.p. 1 - alpha_t."""
    keep = jax.random.uniform(key, x.shape) < self.alpha(t)[:, None]
    return jnp.where(keep, x, self.mask_id)

  def marginal(self, x, t):
    """q_t(. | x) as (..., V + 1) probabilities; x: (...) ints, t broadcastable to x."""
    a = jnp.asarray(self.alpha(t))[..., None]
    onehot = jax.nn.one_hot(x, self.vocab_size + 1)
    return a * onehot + (1 - a) * jax.nn.one_hot(self.mask_id, self.vocab_size + 1)

  def rates(self, t):
    """Forward generator r_t(y -> z), (V + 1, V + 1), off-diagonal: y -> m at -alpha'/alpha."""
    n = self.vocab_size + 1
    rate = -self.dalpha(t) / self.alpha(t)
    r = jnp.zeros((n, n)).at[:, self.mask_id].set(rate).at[self.mask_id, self.mask_id].set(0.0)
    return r - jnp.diag(r.sum(1))

  def prior_probs(self):
    """p_1 = alpha_1 u + (1 - alpha_1) delta_m: data-independent, so KL(q_1 || p_1) is exact."""
    a1 = self.alpha(1.0)
    u = jnp.full((self.vocab_size + 1,), a1 / self.vocab_size).at[self.mask_id].set(1 - a1)
    return u

  def sample_prior(self, key, shape):
    k1, k2 = jax.random.split(key)
    keep = jax.random.uniform(k1, shape) < self.alpha(1.0)
    return jnp.where(keep, jax.random.randint(k2, shape, 0, self.vocab_size), self.mask_id)


def make_kernel(kernel_cfg, vocab_size: int):
  """Builds the kernel named by `config.kernel` for a tokenizer of `vocab_size` ids."""
  if kernel_cfg.name not in KERNELS:
    raise UserError(f"unknown kernel {kernel_cfg.name!r}; expected one of {list(KERNELS)}")
  schedule = schedules.make_schedule(kernel_cfg.schedule, kernel_cfg.eps)
  return MaskingKernel(vocab_size=vocab_size, schedule=schedule)

"""Named random streams: one `jax.random.split` of the run's seed, one key per purpose, so no
purpose ever draws from another's keys. A loop derives its per-item keys with
`jax.random.fold_in(stream, index)`."""

from __future__ import annotations

import jax

from dlm_jax.errors import UserError

SEED_LIMIT = 2**63

STREAMS = ("init", "train", "validation", "loss_profile", "summary", "gradient_noise")


def check_seed(seed: int, name: str = "seed") -> None:
  """A seed is an integer in [0, 2**63): each gives its own key."""
  if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_LIMIT:
    raise UserError(f"{name} must be an integer in [0, 2**63), got {seed!r}")


def key(seed: int):
  """The key of `seed`: jax.random.key(seed) below 2**32 (the keys of every earlier version);
  above, the low 32 bits' key folded with the high bits (jax.random.key keeps only 32 bits, so
  2**32 would draw what 0 draws)."""
  check_seed(seed)
  low, high = seed & 0xFFFFFFFF, seed >> 32
  base = jax.random.key(low)
  return jax.random.fold_in(base, high) if high else base


def streams(seed: int) -> dict:
  """{name: key} for every name in STREAMS, from `seed`."""
  return dict(zip(STREAMS, jax.random.split(key(seed), len(STREAMS))))


def stream(seed: int, name: str):
  """One named stream of `seed`."""
  if name not in STREAMS:
    raise ValueError(f"unknown random stream {name!r}; expected one of {STREAMS}")
  return streams(seed)[name]


# The keys of one loss evaluation, from the step's key: the first four are one split (the
# diffusion time, the forward draw z_t, dropout, top-k bulk targets), the rest fold_ins.
LOSS_SPLIT = ("time", "forward", "dropout", "bulk")
LOSS_FOLDED = {"prompt": 4, "reconstruction": 5}


def loss_keys(key) -> dict:
  """{name: key} for every name of LOSS_SPLIT and LOSS_FOLDED, from one loss key."""
  keys = dict(zip(LOSS_SPLIT, jax.random.split(key, len(LOSS_SPLIT))))
  return {**keys, **{name: jax.random.fold_in(key, i) for name, i in LOSS_FOLDED.items()}}

"""Named random streams: one `jax.random.split` of the run's seed, one key per purpose, so no
purpose ever draws from another's keys. A loop derives its per-item keys with
`jax.random.fold_in(stream, index)`."""

from __future__ import annotations

import jax

STREAMS = ("init", "train", "validation", "loss_profile", "summary", "gradient_noise")


def streams(seed: int) -> dict:
  """{name: key} for every name in STREAMS, from `seed`."""
  return dict(zip(STREAMS, jax.random.split(jax.random.key(seed), len(STREAMS))))


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

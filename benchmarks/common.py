"""Helpers shared by the benchmark scripts."""

import time

import jax

from dlm_jax import assets


def time_fn(fn, args, steps: int, warmup: int, carry_first: bool = False):
  out = fn(*args)
  jax.block_until_ready(out)
  for _ in range(warmup):
    out = fn(out[0], *args[1:]) if carry_first else fn(*args)
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(steps):
    out = fn(out[0], *args[1:]) if carry_first else fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def make_kernel(cfg, vocab: int):
  """The config's kernel with a table of its shape from random embeddings (the shape, not
  the content, sets the cost)."""
  return assets.shape_only_kernel(cfg, vocab)

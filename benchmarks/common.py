"""Helpers shared by the benchmark scripts."""

import time

import jax


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

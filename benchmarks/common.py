"""Helpers shared by the benchmark scripts."""

import time

import jax
import numpy as np

from dlm_jax.kernels import family, neighbors


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
  table = None
  if cfg.kernel.name.startswith("semdlm"):
    emb = np.random.default_rng(0).normal(size=(vocab, 32)).astype(np.float32)
    table = neighbors.build(emb, cfg.kernel.neighbors, cfg.kernel.k, "bench", cfg.kernel.tau)
  return family.make_kernel(cfg.kernel, vocab, table)

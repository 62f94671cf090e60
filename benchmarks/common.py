"""Helpers shared by the benchmark scripts: timing, the measured matmul peak, model FLOPs,
and one kernel's train step and forward pass timed on synthetic tokens."""

import functools
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from configs import base  # noqa: E402
from dlm_jax import objectives, parallel, steps  # noqa: E402
from dlm_jax.kernels import family, neighbors  # noqa: E402
from dlm_jax.models import Transformer, model_config  # noqa: E402


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


def measured_peak_tflops(dtype) -> float:
  """The best of three timings of a large square matmul (a noisy host reads low otherwise)."""
  n = 4096 if jax.default_backend() != "cpu" else 2048
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  reps = 20 if jax.default_backend() != "cpu" else 3
  best = float("inf")
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(reps):
      out = f(a)
    out.block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 * reps / best / 1e12


def model_flops_per_token(mc, seq_len: int, params) -> float:
  n = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(params)
          if "embed" not in jax.tree_util.keystr(path))
  return 6 * n + 12 * mc.num_layers * seq_len * mc.d_model


def random_table_process(config, vocab_size: int):
  """The configured process with a table of the config's shape built from random embeddings
  and a flat unigram: its cost and memory are a real run's, its numbers are not. For timing
  without a corpus."""
  table = None
  if config.kernel.name in family.SEMANTIC:
    emb = np.random.default_rng(0).normal(size=(vocab_size, 32)).astype(np.float32)
    table = neighbors.build(emb, config.kernel.neighbors, config.kernel.k, "random",
                            config.kernel.tau, config.kernel.max_in_degree or None)
  return family.make_process(config.kernel, vocab_size, table)


def bench(cfg, kernel_name: str, vocab: int, mesh, timed_steps: int, warmup: int,
          forward: bool = True) -> dict:
  """One kernel's jitted, sharded train step (and forward pass) on synthetic tokens: times,
  tokens/s, and the compiled step's memory (XLA's analysis: arguments + temporaries +
  outputs - donated buffers, bytes per device)."""
  batch, length = cfg.train.batch_size, cfg.data.seq_len
  if not cfg.model.causal:   # the kernel switch the shipped configs make (configs/base.py)
    cfg = base.use_kernel(cfg.copy_and_resolve_references(), kernel_name)
  objective = objectives.make_objective(cfg, lambda: random_table_process(cfg, vocab))
  model = Transformer(model_config(cfg.model, objective.input_vocab_size(vocab), vocab))
  tx = steps.make_optimizer(cfg.optim, cfg.train.num_steps)
  init = lambda k: steps.init_state(k, model, tx, length)
  state_sharding = parallel.logical_shardings(jax.eval_shape(init, jax.random.key(0)), mesh)
  state = jax.jit(lambda k: nn.meta.unbox(init(k)), out_shardings=state_sharding)(
      jax.random.key(0))
  bs, rep = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  tokens = jax.device_put(jax.random.randint(jax.random.key(1), (batch, length), 4, vocab), bs)
  out = {}
  if forward:
    fwd = jax.jit(lambda p, z: model.apply({"params": p}, z, jnp.ones((z.shape[0],))),
                  in_shardings=(state_sharding.params, bs), out_shardings=bs)
    out["forward_tokens_per_s"] = batch * length / time_fn(fwd, (state.params, tokens),
                                                           timed_steps, warmup)
  param_count = sum(x.size for x in jax.tree.leaves(state.params))
  flops_tok = model_flops_per_token(model.cfg, length, state.params)
  # The objective enters as an argument, as in the production step (experiment.py).
  step = functools.partial(
      steps.train_step, model=model, tx=tx, t_min=cfg.train.t_min,
      ema_decay=cfg.optim.ema_decay, grad_accum_steps=cfg.optim.grad_accum_steps,
      pad_id=-1)      # synthetic tokens: every position counts
  train_fn = jax.jit(lambda state, batch, key, objective: step(state, batch, key,
                                                                objective=objective),
                     in_shardings=(state_sharding, bs, rep, rep),
                     out_shardings=(state_sharding, rep), donate_argnums=0)
  args = (state, {"tokens": tokens}, jax.random.key(2), objective)
  compiled = train_fn.lower(*args).compile()
  memory = compiled.memory_analysis()
  step_bytes = None if memory is None else (
      memory.argument_size_in_bytes + memory.output_size_in_bytes
      + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  # The train step donates the state (params included): time it last.
  step_s = time_fn(compiled, args, timed_steps, warmup, carry_first=True)
  return {**objective.describe(), **out,
          "params_M": param_count / 1e6, "flops_per_token": flops_tok,
          "train_step_ms": step_s * 1e3, "train_tokens_per_s": batch * length / step_s,
          "step_memory_gib": None if step_bytes is None else step_bytes / 2**30,
          "layers": model.cfg.num_layers, "d_model": model.cfg.d_model,
          "dtype": model.cfg.dtype, "batch": batch, "seq_len": length, "vocab": vocab}

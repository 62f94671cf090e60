r"""Train-step and forward throughput of a config's model on whatever device runs it.

  python benchmarks/train_step.py --config=configs/quickstart.py
  python benchmarks/train_step.py --config=configs/owt_masking.py \
      --config.train.batch_size=32 --peak_tflops=780

Synthetic tokens (no data pipeline, no tokenizer): times the jitted, sharded
train step and the forward pass used by samplers, and prints tokens/s and MFU.
Model FLOPs per token = 6 * (non-embedding params + head) + 12 * layers * L * d
(the PaLM/Chinchilla convention: attention scores counted, embedding lookups
not). The peak is --peak_tflops, or else measured here with a large matmul in
the model's dtype; MFU against a *measured* peak is an optimistic ceiling.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from dlm_jax import parallel, steps  # noqa: E402
from dlm_jax.kernels import make_kernel  # noqa: E402
from dlm_jax.models import Transformer, model_config  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Config file.")
flags.DEFINE_integer("vocab_size", None, "Tokenizer vocabulary (default: config.data.vocab_size).")
flags.DEFINE_integer("steps", 10, "Timed steps.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_float("peak_tflops", None, "Device peak for MFU (default: measured matmul peak).")
FLAGS = flags.FLAGS


def measured_peak_tflops(dtype) -> float:
  n = 4096 if jax.default_backend() != "cpu" else 1024
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  reps = 20 if jax.default_backend() != "cpu" else 5
  start = time.perf_counter()
  for _ in range(reps):
    out = f(a)
  out.block_until_ready()
  return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def model_flops_per_token(mc, seq_len: int, params) -> float:
  n = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(params)
          if "embed" not in jax.tree_util.keystr(path))
  return 6 * n + 12 * mc.num_layers * seq_len * mc.d_model


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


def main(argv):
  del argv
  cfg = FLAGS.config
  vocab = FLAGS.vocab_size or cfg.data.vocab_size
  batch, length = cfg.train.batch_size // cfg.optim.grad_accum_steps, cfg.data.seq_len
  mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
  kernel = None if cfg.model.causal else make_kernel(cfg.kernel, vocab)
  model = Transformer(model_config(cfg.model, vocab if kernel is None else kernel.input_vocab_size,
                                   vocab))
  tx = steps.make_optimizer(cfg.optim, cfg.train.num_steps)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  abstract = jax.eval_shape(lambda k: steps.init_state(k, model, tx, length), jax.random.key(0))
  state_sharding = parallel.logical_shardings(abstract, mesh)
  state = jax.jit(lambda k: nn.meta.unbox(steps.init_state(k, model, tx, length)),
                  out_shardings=state_sharding)(jax.random.key(0))
  bs, rep = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  tokens = jax.device_put(
      jax.random.randint(jax.random.key(1), (cfg.train.batch_size, length), 4, vocab), bs)
  forward = jax.jit(lambda p, z: model.apply({"params": p}, z, jnp.ones((z.shape[0],))),
                    in_shardings=(state_sharding.params, bs), out_shardings=bs)
  params = state.params
  fwd_s = time_fn(forward, (params, tokens), FLAGS.steps, FLAGS.warmup)
  param_count = sum(x.size for x in jax.tree.leaves(params))
  flops_tok = model_flops_per_token(model.cfg, length, params)
  train_fn = steps.jit_train_step(model, kernel, tx, cfg.train, cfg.optim, state_sharding, bs, rep)
  # The train step donates the state (params included): time it last.
  step_s = time_fn(train_fn, (state, {"tokens": tokens}, jax.random.key(2)), FLAGS.steps,
                   FLAGS.warmup, carry_first=True)

  peak = FLAGS.peak_tflops or measured_peak_tflops(jnp.dtype(model.cfg.dtype))
  n_dev = len(jax.devices())
  train_tps = cfg.train.batch_size * length / step_s
  fwd_tps = cfg.train.batch_size * length / fwd_s
  result = {
      "device": f"{n_dev} x {jax.devices()[0].device_kind}", "backend": jax.default_backend(),
      "kernel": kernel.name if kernel else "autoregressive",
      "layers": model.cfg.num_layers, "d_model": model.cfg.d_model, "dtype": model.cfg.dtype,
      "batch": cfg.train.batch_size, "seq_len": length, "vocab": vocab,
      "params_M": param_count / 1e6,
      "train_step_ms": step_s * 1e3, "train_tokens_per_s": train_tps,
      "forward_tokens_per_s": fwd_tps,
      "peak_tflops_per_device": peak,
      "peak_source": "--peak_tflops" if FLAGS.peak_tflops else "measured matmul",
      "train_mfu": train_tps * flops_tok / (peak * 1e12 * n_dev),
      "forward_mfu": fwd_tps * flops_tok / 3 / (peak * 1e12 * n_dev),
  }
  for k, v in result.items():
    print(f"{k:>24}: {v:.4g}" if isinstance(v, float) else f"{k:>24}: {v}")
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)

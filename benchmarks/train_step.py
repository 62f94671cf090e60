r"""Train-step and forward throughput of a config's model, per kernel, on whatever device runs it.

  python benchmarks/train_step.py --config=configs/quickstart.py --kernels=masking,semdlm
  python benchmarks/train_step.py --config=configs/owt_masking.py \
      --config.train.batch_size=32 --peak_tflops=780 --kernels=masking,semdlm,semdlm_plus

Synthetic tokens (no data pipeline, no tokenizer) and, for semantic kernels, a
table built from random embeddings (its shape, not its content, sets the cost).
Times the jitted, sharded train step and the forward pass used by samplers;
prints tokens/s, MFU, and each kernel's step time relative to the first.
Model FLOPs per token = 6 * (non-embedding params, head included) +
12 * layers * L * d (attention scores counted, embedding lookups not). The
peak is --peak_tflops, else a large matmul in the model's dtype measured here;
MFU against a *measured* peak is an optimistic ceiling.
"""

from __future__ import annotations

import functools
import json
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from configs import base  # noqa: E402
from dlm_jax import assets, objectives, parallel, steps  # noqa: E402
from dlm_jax.models import Transformer, model_config  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import time_fn  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Config file.")
flags.DEFINE_list("kernels", [], "Kernels to compare (default: the config's).")
flags.DEFINE_integer("vocab_size", None, "Tokenizer vocabulary (default: config.data.vocab_size).")
flags.DEFINE_integer("steps", 10, "Timed steps.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_float("peak_tflops", None, "Device peak for MFU (default: measured matmul peak).")
FLAGS = flags.FLAGS


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


def bench(cfg, kernel_name: str, vocab: int, mesh) -> dict:
  batch, length = cfg.train.batch_size, cfg.data.seq_len
  if not cfg.model.causal:   # the kernel switch the shipped configs make (configs/base.py)
    cfg = base.use_kernel(cfg.copy_and_resolve_references(), kernel_name)
  objective = objectives.make_objective(cfg, lambda: assets.shape_only_kernel(cfg, vocab))
  model = Transformer(model_config(cfg.model, objective.input_vocab_size(vocab), vocab))
  tx = steps.make_optimizer(cfg.optim, cfg.train.num_steps)
  init = lambda k: steps.init_state(k, model, tx, length)
  state_sharding = parallel.logical_shardings(jax.eval_shape(init, jax.random.key(0)), mesh)
  state = jax.jit(lambda k: nn.meta.unbox(init(k)), out_shardings=state_sharding)(
      jax.random.key(0))
  bs, rep = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  tokens = jax.device_put(jax.random.randint(jax.random.key(1), (batch, length), 4, vocab), bs)

  forward = jax.jit(lambda p, z: model.apply({"params": p}, z, jnp.ones((z.shape[0],))),
                    in_shardings=(state_sharding.params, bs), out_shardings=bs)
  fwd_s = time_fn(forward, (state.params, tokens), FLAGS.steps, FLAGS.warmup)
  param_count = sum(x.size for x in jax.tree.leaves(state.params))
  flops_tok = model_flops_per_token(model.cfg, length, state.params)
  train_fn = jax.jit(functools.partial(
      steps.train_step, objective=objective, model=model, tx=tx, t_min=cfg.train.t_min,
      ema_decay=cfg.optim.ema_decay, grad_accum_steps=cfg.optim.grad_accum_steps,
      pad_id=-1),      # synthetic tokens: every position counts
      in_shardings=(state_sharding, bs, rep), out_shardings=(state_sharding, rep),
      donate_argnums=0)
  # The train step donates the state (params included): time it last.
  step_s = time_fn(train_fn, (state, {"tokens": tokens}, jax.random.key(2)), FLAGS.steps,
                   FLAGS.warmup, carry_first=True)
  return {**objective.describe(),
          "params_M": param_count / 1e6, "flops_per_token": flops_tok,
          "train_step_ms": step_s * 1e3, "train_tokens_per_s": batch * length / step_s,
          "forward_tokens_per_s": batch * length / fwd_s, "layers": model.cfg.num_layers,
          "d_model": model.cfg.d_model, "dtype": model.cfg.dtype}


def main(argv):
  del argv
  cfg = FLAGS.config
  vocab = FLAGS.vocab_size or cfg.data.vocab_size
  mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
  names = FLAGS.kernels or ["ar" if cfg.model.causal else cfg.kernel.name]
  peak = FLAGS.peak_tflops or measured_peak_tflops(jnp.dtype(cfg.model.dtype))
  n_dev = len(jax.devices())
  rows = []
  for name in names:
    r = bench(cfg, name, vocab, mesh)
    r["train_mfu"] = r["train_tokens_per_s"] * r["flops_per_token"] / (peak * 1e12 * n_dev)
    r["forward_mfu"] = r["forward_tokens_per_s"] * r["flops_per_token"] / 3 / (peak * 1e12 * n_dev)
    r["step_time_vs_first"] = r["train_step_ms"] / (rows[0]["train_step_ms"] if rows
                                                    else r["train_step_ms"])
    rows.append(r)
  header = {"device": f"{n_dev} x {jax.devices()[0].device_kind}",
            "backend": jax.default_backend(), "batch": cfg.train.batch_size,
            "seq_len": cfg.data.seq_len, "vocab": vocab, "peak_tflops_per_device": peak,
            "peak_source": "--peak_tflops" if FLAGS.peak_tflops else "measured matmul"}
  print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in header.items()))
  cols = ["kernel", "structure", "train_step_ms", "train_tokens_per_s", "forward_tokens_per_s",
          "train_mfu", "forward_mfu", "step_time_vs_first"]
  print("| " + " | ".join(cols) + " |")
  for r in rows:
    print("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])
                            for c in cols) + " |")
  print(json.dumps({**header, "results": rows}))


if __name__ == "__main__":
  app.run(main)

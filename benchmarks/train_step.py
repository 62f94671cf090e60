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

import json
import sys

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from dlm_jax import parallel  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import bench, measured_peak_tflops  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Config file.")
flags.DEFINE_list("kernels", [], "Kernels to compare (default: the config's).")
flags.DEFINE_integer("vocab_size", None, "Tokenizer vocabulary (default: config.data.vocab_size).")
flags.DEFINE_integer("steps", 10, "Timed steps.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_float("peak_tflops", None, "Device peak for MFU (default: measured matmul peak).")
FLAGS = flags.FLAGS


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
    r = bench(cfg, name, vocab, mesh, FLAGS.steps, FLAGS.warmup)
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

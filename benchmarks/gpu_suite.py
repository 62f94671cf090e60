r"""The accelerator numbers in one run: train steps, the largest batch, samplers, versions.

  python benchmarks/gpu_suite.py --out=/tmp/gpu_suite            # on the device (~5 min)
  python benchmarks/gpu_suite.py --smoke --out=/tmp/gpu_smoke    # tiny shapes, any CPU (CI)

Prints a markdown table and writes <out>/gpu_suite.json and <out>/gpu_suite.md:
- the device, jax / jaxlib / CUDA versions, the measured bf16 matmul peak (MFU is against it:
  an optimistic ceiling, below the datasheet's);
- the OWT train step (DiT-small, the MDLM variant, L = 1024, V = 50258, bf16, B = 32) for
  masking, uniform and SemDLM+ (partition + uniform, the default parameterisation): step
  time, tokens/s, MFU, the compiled step's memory, and each kernel's step time / masking's;
- the largest masking batch whose compiled step fits the device's memory (doubling from 32,
  compile only, `--max_batch` caps the search);
- LM1B masking (L = 128, V = 30522, B = 256);
- the reverse sampler: OWT masking, 8 x 1024 tokens, T = 1000, with and without MDLM's cache;
  SemDLM+ with eta = 0.1, rho = 2: tokens/s.
Synthetic tokens and random-embedding tables (their shape, not their content, sets the cost).
"""

from __future__ import annotations

import json
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app, flags

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from configs import base, lm1b_masking, owt_masking, quickstart  # noqa: E402
from dlm_jax import parallel  # noqa: E402
from dlm_jax.models import Transformer, model_config  # noqa: E402
from dlm_jax.samplers import reverse  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import bench, measured_peak_tflops, random_table_process, time_fn  # noqa: E402

flags.DEFINE_bool("smoke", False, "Tiny shapes (CI on a CPU): checks the suite runs end to end.")
flags.DEFINE_string("out", "", "Directory for gpu_suite.json and gpu_suite.md (empty: none).")
flags.DEFINE_integer("steps", 10, "Timed train steps per kernel.")
flags.DEFINE_integer("max_batch", 256, "Largest masking batch tried in the batch search.")
flags.DEFINE_integer("sampler_steps", 1000, "Reverse steps T of the sampler timings.")
FLAGS = flags.FLAGS

KERNELS = ("masking", "uniform", "semdlm_plus")


def versions() -> dict:
  import jaxlib  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  return {"device": f"{jax.device_count()} x {device.device_kind}",
          "backend": jax.default_backend(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__,
          "platform_version": getattr(device.client, "platform_version", "unknown"),
          "device_memory_gib": stats.get("bytes_limit", 0) / 2**30 or None}


def shapes(smoke: bool) -> dict:
  """(train config, vocab) per section; the smoke suite keeps every code path, tiny."""
  if smoke:
    tiny = quickstart.get_config()
    tiny.model.num_layers, tiny.model.d_model, tiny.model.num_heads = 1, 32, 2
    tiny.model.dtype, tiny.data.seq_len, tiny.train.batch_size = "float32", 32, 4
    tiny.model.logits_chunk = 16
    return {"owt": (tiny, 256), "lm1b": None, "sampler_batch": 2}   # lm1b: owt's code path
  owt = owt_masking.get_config()
  owt.train.batch_size = 32
  lm1b = lm1b_masking.get_config()
  lm1b.train.batch_size = 256
  return {"owt": (owt, 50258), "lm1b": (lm1b, 30522), "sampler_batch": 8}


def train_rows(cfg, vocab: int, mesh, peak: float, kernels) -> list[dict]:
  rows = []
  for name in kernels:
    r = bench(cfg, name, vocab, mesh, FLAGS.steps, 2, forward=False)
    r["mfu"] = r["train_tokens_per_s"] * r["flops_per_token"] / (peak * 1e12 * jax.device_count())
    r["step_time_vs_masking"] = r["train_step_ms"] / rows[0]["train_step_ms"] if rows else 1.0
    rows.append(r)
  return rows


def largest_batch(cfg, vocab: int, start: int, max_batch: int) -> dict:
  """Doubles the masking batch per device from `start` while its compiled step fits the
  device's memory (dlm_jax.fit: XLA's memory analysis of the real sharded step)."""
  from dlm_jax import fit  # pylint: disable=g-import-not-at-top
  target = fit.Target.make(cfg.copy_and_resolve_references(), "local", vocab)
  rows = fit.sweep(target, fit.auto_batches(start, max_batch), stop_when_full=True,
                   sampler=False, report=lambda row: None)
  fitting = [r["per_chip_batch"] for r in rows if r["fits"]]
  return {"largest_fitting": max(fitting) if fitting else None, "limit_gib": target.hbm_gib,
          "tried": [{"batch": r["per_chip_batch"], "fits": bool(r["fits"]),
                     "step_memory_gib": r["hbm_gib_per_chip"]} for r in rows]}


def sampler_rows(cfg, vocab: int, batch: int, steps: int) -> list[dict]:
  cases = [("masking, no cache", "masking", {}, dict(cache=False)),
           ("masking, cache", "masking", {}, dict(cache=True)),
           ("semdlm_plus (partition + uniform), eta 0.1, rho 2", "semdlm_plus",
            {"neighbors": "partition", "global_kind": "uniform"}, dict(eta=0.1, rho=2.0))]
  rows = []
  for label, name, kernel_settings, options in cases:
    c = base.use_kernel(cfg.copy_and_resolve_references(), name)
    for key, value in kernel_settings.items():
      c.kernel[key] = value
    kernel = random_table_process(c, vocab)
    model = Transformer(model_config(c.model, kernel.input_vocab_size, vocab))
    L = c.data.seq_len
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, L), jnp.int32),
                                               jnp.ones((1,))))["params"]
    opts = reverse.SamplerOptions(steps=steps, logits_chunk=c.model.logits_chunk, **options)
    fn = reverse.jit_sample(model, kernel, opts)
    fixed, mask = jnp.zeros((batch, L), jnp.int32), jnp.zeros((batch, L), bool)
    seconds = time_fn(fn, (params, jax.random.key(1), fixed, mask), 1, 0)
    rows.append({"sampler": label, "batch": batch, "seq_len": L, "steps": steps,
                 "seconds": seconds, "tokens_per_s": batch * L / seconds})
  return rows


def markdown(report: dict) -> str:
  v = report["versions"]
  lines = [f"# Accelerator numbers ({'smoke, tiny shapes' if report['smoke'] else 'full'})", "",
           f"{v['device']} | {v['backend']} {v['platform_version']} | jax {v['jax']}, jaxlib "
           f"{v['jaxlib']} | measured bf16 matmul peak {report['peak_tflops']:.4g} TFLOP/s "
           "per device (MFU is against it)", "",
           "| section | kernel | B x L, V | step ms | tokens/s | MFU | step memory GiB | "
           "vs masking |", "|---|---|---|---|---|---|---|---|"]
  for section in ("owt", "lm1b"):
    for r in report[section]:
      mem = "n/a" if r["step_memory_gib"] is None else f"{r['step_memory_gib']:.2f}"
      lines.append(f"| {section} | {r['kernel']} | {r['batch']} x {r['seq_len']}, {r['vocab']} | "
                   f"{r['train_step_ms']:.2f} | {r['train_tokens_per_s']:.4g} | "
                   f"{r['mfu']:.1%} | {mem} | {r['step_time_vs_masking']:.3f} |")
  big = report["largest_batch"]
  lines += ["", f"Largest masking batch whose compiled OWT step fits "
                f"{big['limit_gib'] or 'n/a'} GiB: {big['largest_fitting']} "
                f"(tried {[t['batch'] for t in big['tried']]})", "",
            "| sampler | B x L | T | seconds | tokens/s |", "|---|---|---|---|---|"]
  for r in report["sampler"]:
    lines.append(f"| {r['sampler']} | {r['batch']} x {r['seq_len']} | {r['steps']} | "
                 f"{r['seconds']:.3f} | {r['tokens_per_s']:.4g} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  start = time.time()
  sizes = shapes(FLAGS.smoke)
  mesh = parallel.make_mesh(-1, 1)
  peak = measured_peak_tflops(jnp.bfloat16)
  owt, owt_vocab = sizes["owt"]
  report = {"smoke": FLAGS.smoke, "versions": versions(), "peak_tflops": peak}
  report["owt"] = train_rows(owt, owt_vocab, mesh, peak, KERNELS)
  report["lm1b"] = train_rows(*sizes["lm1b"], mesh, peak, ("masking",)) if sizes["lm1b"] else []
  per_device = owt.train.batch_size // jax.device_count()
  report["largest_batch"] = largest_batch(
      owt, owt_vocab, per_device, per_device * 2 if FLAGS.smoke else FLAGS.max_batch)
  report["sampler"] = sampler_rows(owt, owt_vocab, sizes["sampler_batch"],
                                   8 if FLAGS.smoke else FLAGS.sampler_steps)
  report["seconds"] = time.time() - start
  text = markdown(report)
  print(text)
  print(json.dumps(report))
  if FLAGS.out:
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "gpu_suite.json"), "w", encoding="utf-8") as f:
      json.dump(report, f, indent=1)
    with open(os.path.join(FLAGS.out, "gpu_suite.md"), "w", encoding="utf-8") as f:
      f.write(text)


if __name__ == "__main__":
  app.run(main)

r"""Compile a config's train step (and sampler) ahead of time for a TPU topology on any host,
and print what it needs per chip: HBM against the chip's, and FLOPs per step.

  pip install -e '.[tpu]'     # libtpu: the TPU compiler, no TPU needed
  python -m dlm_jax.aot --config=configs/owt_masking.py --topology=v5e:2x2 --per_chip_batch=auto
  python -m dlm_jax.aot --config=configs/owt_semdlm.py --topology=v5p:2x2x1 \
      --per_chip_batch=8,16,32 --json
  python -m dlm_jax.aot --config=configs/quickstart.py --topology=local --per_chip_batch=4

Nothing runs and nothing is read or written: tokens, parameters and the neighbour table
are shapes (a table built from random embeddings has the shape of the config's). HBM per
chip = arguments + temporaries + outputs - donated aliases (XLA's memory analysis of the
compiled program); FLOPs are XLA's cost analysis. `--per_chip_batch=auto` doubles the
batch from 1 while it fits and reports the largest that fits and the largest whose FLOPs
per sequence stay within 2% of the smallest batch's (beyond it the compiler buys memory
with recomputation).
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

from dlm_jax import cli, fit
from dlm_jax.errors import UserError


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                  lock_config=False)
  flags.DEFINE_string("topology", "v5e:2x2", "TPU topology (v5e:2x2, v4:2x2x1, v5p:2x2x1, "
                      "v6e:2x2, ...) or `local` for this host's devices.")
  flags.DEFINE_string("per_chip_batch", "8,16,32", "Comma-separated sequences per chip, or `auto`.")
  flags.DEFINE_integer("auto_from", 1, "--per_chip_batch=auto: the first batch tried (doubled).")
  flags.DEFINE_integer("vocab_size", None, "Vocabulary (default: the config tokenizer's).")
  flags.DEFINE_float("hbm_gib", None, "HBM per chip (default: known for TPU chips and GPUs).")
  flags.DEFINE_bool("sampler", False, "Also compile the reverse sampler at each batch.")
  flags.DEFINE_bool("json", False, "Print one JSON object per compiled step instead of a table.")


FLAGS = flags.FLAGS

COLUMNS = ("step", "per_chip_batch", "fits", "hbm_gib_per_chip", "chip_hbm_gib",
           "tflop_per_chip_step", "flops_per_sequence_vs_first")


def _print(row: dict) -> None:
  if FLAGS.json:
    print(json.dumps(row), flush=True)
    return
  cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS]
  print("| " + " | ".join(cells) + " |", flush=True)


def main(argv) -> None:
  del argv
  cli.run("dlm_jax.aot", report)


def report() -> None:
  if FLAGS.config is None:
    raise UserError("--config is required (e.g. --config=configs/owt_masking.py)")
  if FLAGS.hbm_gib is not None and not 0 < FLAGS.hbm_gib < float("inf"):
    raise UserError(f"--hbm_gib must be a positive number of GiB, got {FLAGS.hbm_gib}")
  target = fit.Target.make(FLAGS.config, FLAGS.topology, FLAGS.vocab_size, FLAGS.hbm_gib)
  if not FLAGS.json:
    print(target.describe())
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
  auto = FLAGS.per_chip_batch.strip() == "auto"
  batches = fit.auto_batches(FLAGS.auto_from) if auto else fit.parse_batches(FLAGS.per_chip_batch)
  rows = fit.sweep(target, batches, stop_when_full=auto, sampler=FLAGS.sampler, report=_print)
  if not rows:
    raise UserError("no batch compiled")
  if not auto and not any(row["fits"] for row in rows):
    raise UserError(f"none of the batches {batches} fits in {target.hbm_gib} GiB per chip "
                    "(see the table); try smaller ones or --per_chip_batch=auto")
  if auto:
    summary = fit.summarise(rows)
    print(json.dumps(summary) if FLAGS.json else
          f"largest batch that fits: {summary['largest_fitting']} per chip; without added "
          f"recompute (FLOPs per sequence within 2% of batch {summary['reference_batch']}'s): "
          f"{summary['largest_without_recompute']} per chip")


if __name__ == "__main__":
  # libtpu looks for TPU workers when it loads; on a host without TPUs, say there is one.
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  if "--topology=local" not in sys.argv:   # compile-only: never claim this host's TPUs
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  cli.run_app("dlm_jax.aot", main, define_flags)

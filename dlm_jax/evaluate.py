r"""Evaluate a trained model: test NELBO -> bits/token and the perplexity bound.

  python -m dlm_jax.evaluate --workdir=/tmp/dlm [--split=validation] [--t_samples=4]

Writes <workdir>/eval/<split>_step<N>.json. The reported NELBO is a Monte
Carlo estimate (one t and one z_t per sequence per pass) of the continuous-time
NELBO, which upper-bounds -log p(x); exp of it per token is a perplexity
*bound*. The standard error is over sequences (batch means).
"""

from __future__ import annotations

import json
import math
import os
import sys

import jax
import numpy as np
from absl import flags

from dlm_jax import cli, experiment, parallel
from dlm_jax.data import pipeline

def define_flags():
  flags.DEFINE_string("workdir", None, "Training workdir with checkpoints.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_string("split", None, "Split to evaluate (default: config.eval.split).")
  flags.DEFINE_integer("t_samples", 1, "Passes over the split with fresh t and z.")
  flags.DEFINE_integer("max_batches", 0, "Limit batches per pass (0: all).")
  flags.DEFINE_bool("raw_params", False, "Use raw instead of EMA parameters.")
  flags.DEFINE_string("output", None, "Report path (default under <workdir>/eval).")


def evaluate(workdir: str, step=None, split=None, t_samples: int = 1, max_batches: int = 0,
             use_ema: bool = True, seed: int = 1234, devices=None) -> dict:
  exp, params, step = experiment.restore(workdir, step, use_ema, devices)
  cfg = exp.config
  split = split or cfg.eval.split
  rows = exp.rows(split)
  eval_fn = exp.jit_eval_step()
  sums, counts = [], []
  for p in range(t_samples):
    key = jax.random.key(seed + p)
    for i, local in enumerate(pipeline.eval_batches(rows, cfg.eval.batch_size, jax.process_index(),
                                                    jax.process_count(), max_batches,
                                                    exp.tokenizer.pad_id)):
      nll_sum, n = eval_fn(params, parallel.global_batch(local, exp.mesh),
                           jax.random.fold_in(key, i))
      sums.append(float(nll_sum))
      counts.append(float(n))
  sums, counts = np.asarray(sums), np.asarray(counts)
  nats = sums.sum() / counts.sum()
  # Ratio-estimator standard error over batches.
  resid = sums - nats * counts
  stderr = math.sqrt(np.sum(resid**2) / max(len(sums) - 1, 1) * len(sums)) / counts.sum()
  diffusion = exp.kernel is not None
  report = {
      "workdir": os.path.abspath(workdir), "step": step, "split": split,
      "kernel": exp.kernel.name if diffusion else "autoregressive",
      "structure": exp.kernel.structure if diffusion else "none",
      "params": "ema" if use_ema else "raw",
      "tokens": int(counts.sum() / t_samples), "t_samples": t_samples,
      "nats_per_token": nats, "bits_per_token": nats / math.log(2),
      "std_error_nats": stderr,
      "perplexity_bound" if diffusion else "perplexity": math.exp(min(nats, 700.0)),
      "what": (f"Monte Carlo estimate (over t and z_t) of the {exp.kernel.nelbo_label}; "
               "perplexity_bound = exp(NELBO per token)") if diffusion
              else "exact next-token negative log-likelihood per predicted token",
  }
  return report


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.workdir:
    sys.exit("dlm_jax.evaluate: error: --workdir is required")
  report = cli.run("dlm_jax.evaluate", evaluate, f.workdir, f.step, f.split, f.t_samples,
                   f.max_batches, not f.raw_params)
  path = f.output or os.path.join(f.workdir, "eval", f"{report['split']}_step{report['step']}.json")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
      json.dump(report, fh, indent=2)
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
  cli.run_app("dlm_jax.evaluate", main, define_flags)

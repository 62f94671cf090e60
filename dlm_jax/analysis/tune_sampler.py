r"""Choose SemDLM+'s sampling controls (eta, rho) on validation prompts only.

  python -m dlm_jax.analysis.tune_sampler --workdir=workdirs/qs_semdlm_plus_uniform_A \
      --judge=workdirs/qs_ar --eta=0,0.05,0.2 --rho=0,1,4 --steps=64 --num_samples=32 \
      --prompt_tokens=16 [--eta_schedule=constant] [--output=...]

Every (eta, rho) pair samples --num_samples continuations of the first --prompt_tokens
tokens of validation rows. The rule: the lowest generative perplexity (under the judge)
among the settings whose mean unigram entropy is not below that of eta = rho = 0 (the
controls must not buy perplexity with collapsed, repetitive text). Writes
<workdir>/eval/tune_sampler.json with every setting's metrics and the choice; the final
evaluation then samples unconditionally, so the choice never sees its own test.
"""

from __future__ import annotations

import itertools
import json
import os
import sys

from absl import flags

from dlm_jax import cli, reports, sample_quality
from dlm_jax.errors import UserError
from dlm_jax.samplers import reverse


def define_flags():
  flags.DEFINE_string("workdir", None, "Workdir of the model to tune.")
  flags.DEFINE_string("judge", None, "AR judge workdir.")
  flags.DEFINE_list("eta", ["0", "0.05", "0.2"], "Global-transition probabilities to try.")
  flags.DEFINE_list("rho", ["0", "1", "4"], "Semantic-frequency penalties to try.")
  flags.DEFINE_enum("eta_schedule", "constant", list(reverse.ETA_SCHEDULES), "eta_t law.")
  flags.DEFINE_integer("steps", 64, "Reverse steps.")
  flags.DEFINE_integer("num_samples", 32, "Prompts (validation rows) per setting.")
  flags.DEFINE_integer("prompt_tokens", 16, "Prompt length in tokens (BOS included).")
  flags.DEFINE_integer("batch_size", 16, "Samples per jitted call.")
  flags.DEFINE_string("output", None, "Report path (default: a new "
                      "<workdir>/eval/tune_sampler_<hash>.json, never an earlier one).")


def choose(rows):
  """The rule of the module docstring; rows carry eta, rho, gen_ppl, unigram_entropy."""
  base = [r for r in rows if r["eta"] == 0 and r["rho"] == 0]
  if not base:
    raise UserError("the grid must include eta=0, rho=0 (the reference setting)")
  ok = [r for r in rows if r["unigram_entropy"] >= base[0]["unigram_entropy"]]
  return min(ok, key=lambda r: r["gen_ppl"])


def tune(workdir, judge, etas, rhos, eta_schedule, steps, num_samples, prompt_tokens,
         batch_size):
  if not judge:
    raise UserError("--judge (an AR workdir) is required: the rule uses generative perplexity")
  if prompt_tokens < 2:
    raise UserError("--prompt_tokens must be >= 2 (BOS plus at least one validation token)")
  rows = []
  for eta, rho in itertools.product([float(e) for e in etas], [float(r) for r in rhos]):
    opts = reverse.SamplerOptions(eta=eta, rho=rho, eta_schedule=eta_schedule)
    report = sample_quality.sample_quality(workdir, num_samples, [steps], opts, judge=judge,
                                     prompt_tokens=prompt_tokens, split="validation",
                                     batch_size=batch_size)
    metrics = report["results"][1]
    rows.append({"eta": eta, "rho": rho, **{k: metrics[k] for k in sample_quality.QUALITY_COLUMNS
                                              if k in metrics}})
    print(f"eta={eta:g} rho={rho:g}: gen_ppl={metrics['gen_ppl']:.1f} "
          f"entropy={metrics['unigram_entropy']:.3f} basin={metrics['basin_share']:.3f}",
          flush=True)
  best = choose(rows)
  return {"workdir": os.path.abspath(workdir), "judge": os.path.abspath(judge),
          "split": "validation", "prompt_tokens": prompt_tokens, "steps": steps,
          "eta_schedule": eta_schedule, "num_samples": num_samples,
          "rule": "min gen_ppl s.t. unigram_entropy >= that of eta = rho = 0",
          "grid": rows, "chosen": {"eta": best["eta"], "rho": best["rho"]}}


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.workdir:
    sys.exit("tune_sampler: error: --workdir is required")
  report = cli.run("tune_sampler", tune, f.workdir, f.judge, f.eta, f.rho, f.eta_schedule,
                   f.steps, f.num_samples, f.prompt_tokens, f.batch_size)
  if f.output:
    path = f.output
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  else:                     # a new file per grid and options, never an earlier run's
    options = {k: report[k] for k in ("judge", "prompt_tokens", "steps", "eta_schedule",
                                      "num_samples")}
    options["grid"] = [(r["eta"], r["rho"]) for r in report["grid"]]
    path = reports.unique_stem(os.path.join(f.workdir, "eval"), "tune_sampler", options,
                               suffixes=(".json",)) + ".json"
  with open(path, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=2)
  print(f"chosen: eta={report['chosen']['eta']:g} rho={report['chosen']['rho']:g}; wrote {path}")


if __name__ == "__main__":
  cli.run_app("tune_sampler", main, define_flags)

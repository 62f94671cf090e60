r"""Evaluate a trained model: test NELBO, or the quality of its samples.

  python -m dlm_jax.evaluate --workdir=/tmp/dlm [--split=validation] [--t_samples=4]

writes <workdir>/eval/<split>_step<N>.json: a Monte Carlo estimate of the NELBO (an upper
bound on -log p(x); exact NLL for an AR workdir), bits per token, the perplexity bound and
a standard error.

  python -m dlm_jax.evaluate --workdir=/tmp/dlm --num_samples=64 --steps=16,64,256 \
      --judge=/tmp/ar [--prompt_tokens=0] [any dlm_jax.sample option: --eta --rho ...]

samples N sequences per T and writes <workdir>/eval/quality_step<N>.{json,md}: generative
perplexity under the AR judge and the metrics of dlm_jax/quality.py, next to real rows.
--judge=hf:DIR scores by the MDLM / Duo protocol with a Hugging Face GPT-2 (dlm_jax/judge.py;
float64 sampling unless --nofloat64) and adds Duo's keys generative_ppl, entropy and
generated_seqs.
  python -m dlm_jax.evaluate --workdir=/tmp/dlm --dataset=wikitext2,ptb,lambada \
      [--datasets_dir=DIR]

the zero-shot suite of MDLM / Duo (dlm_jax/data/suite.py: wikitext2, wikitext103, ptb,
lambada, ag_news, scientific_papers_pubmed, scientific_papers_arxiv, lm1b, or `all`) from
local copies in DIR or the Hugging Face cache; writes <workdir>/eval/zero_shot_step<N>.{json,md}.
The loops are in `dlm_jax.evaluation`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import jax
from absl import flags

from dlm_jax import cli, evaluation, reports
from dlm_jax.data import suite


def define_flags():
  flags.DEFINE_string("workdir", None, "Training workdir with checkpoints.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_string("split", None, "Split to evaluate (default: config.eval.split).")
  flags.DEFINE_integer("t_samples", 1, "Passes over the split with fresh t and z.")
  flags.DEFINE_integer("max_batches", 0, "Limit batches per pass (0: all).")
  flags.DEFINE_bool("raw_params", False, "Use raw instead of EMA parameters.")
  flags.DEFINE_string("output", None, "Report path (default under <workdir>/eval).")
  flags.DEFINE_integer("num_samples", 0, "> 0: evaluate N samples per T instead of the NELBO.")
  flags.DEFINE_list("steps", ["128"], "Reverse steps T, comma-separated (with --num_samples).")
  flags.DEFINE_string("judge", None, "Scores the samples (generative perplexity): an AR workdir, "
                      "or hf:DIR, a Hugging Face GPT-2 under the MDLM/Duo protocol.")
  flags.DEFINE_list("dataset", [], "Zero-shot benchmarks (data/suite.py), comma-separated, "
                    "or 'all': the NELBO of each instead of --split's.")
  flags.DEFINE_string("datasets_dir", "", "Local copies of the zero-shot benchmarks: "
                      "DIR/NAME (save_to_disk), DIR/NAME.jsonl or DIR/NAME.txt.")
  flags.DEFINE_integer("prompt_tokens", 0, "Condition each sample on the first P tokens of a "
                       "row of --split (0: unconditional).")
  cli.define_sampler_flags(steps=False)


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.workdir:
    sys.exit("dlm_jax.evaluate: error: --workdir is required")
  if f.output:
    cli.run("dlm_jax.evaluate", reports.check_writable, f.output)   # before any work
  if f.dataset:
    if f.num_samples > 0:
      sys.exit("dlm_jax.evaluate: error: --dataset and --num_samples are separate evaluations")
    names = sorted(suite.SUITE) if f.dataset == ["all"] else f.dataset
    report = cli.run("dlm_jax.evaluate", evaluation.zero_shot, f.workdir, names,
                     f.datasets_dir, f.step, f.t_samples, f.max_batches, not f.raw_params)
    stem = f.output or os.path.join(f.workdir, "eval", f"zero_shot_step{report['step']}")
    table = evaluation.zero_shot_markdown(report)
    if jax.process_index() == 0:
      written = reports.write(stem, report, table)
      print(table)
      print(f"wrote {' and '.join(written)}")
    return
  if f.num_samples > 0:
    opts = cli.sampler_options(f, steps=1)
    if f.judge and f.judge.startswith("hf:") and not f["float64"].present:
      opts = dataclasses.replace(opts, float64=True)   # the protocol samples in float64
    report = cli.run("dlm_jax.evaluate", evaluation.sample_quality, f.workdir, f.num_samples,
                     f.steps, opts, f.judge, f.prompt_tokens, f.split, f.seed, f.step,
                     f.batch_size)
    stem = f.output or os.path.join(f.workdir, "eval", f"quality_step{report['step']}")
    table = evaluation.quality_markdown(report)
    written = reports.write(stem, report, table)
    print(table)
    print(f"wrote {' and '.join(written)}")
    return
  report = cli.run("dlm_jax.evaluate", evaluation.evaluate, f.workdir, f.step, f.split,
                   f.t_samples, f.max_batches, not f.raw_params)
  path = f.output or os.path.join(f.workdir, "eval", f"{report['split']}_step{report['step']}.json")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
      json.dump(report, fh, indent=2)
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
  cli.run_app("dlm_jax.evaluate", main, define_flags)

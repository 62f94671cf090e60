r"""Evaluate a trained model: test NELBO, or the quality of its samples.

  python -m dlm_jax.evaluate --workdir=/tmp/dlm [--split=validation] [--t_samples=4]

writes <workdir>/eval/<split>_step<N>_<hash>.json: a Monte Carlo estimate of the NELBO (an upper
bound on -log p(x); exact NLL for an AR workdir), bits per token, the perplexity bound and
a standard error.

  python -m dlm_jax.evaluate --workdir=/tmp/dlm --num_samples=64 --steps=16,64,256 \
      --judge=/tmp/ar [--prompt_tokens=0] [any dlm_jax.sample option: --eta --rho ...]

samples N sequences per T and writes <workdir>/eval/quality_step<N>_<hash>.{json,md}:
generative perplexity under the AR judge, the real-word rate and the metrics of
dlm_jax/quality.py, next to real rows.
--judge=hf:DIR scores by the MDLM / Duo protocol with a Hugging Face GPT-2 (dlm_jax/judge.py;
float64 sampling unless --nofloat64) and adds Duo's keys generative_ppl, entropy and
generated_seqs.
  python -m dlm_jax.evaluate --workdir=/tmp/dlm --dataset=wikitext2,ptb,lambada \
      [--datasets_dir=DIR]

the zero-shot suite of MDLM / Duo (dlm_jax/data/suite.py: wikitext2, wikitext103, ptb,
lambada, ag_news, scientific_papers_pubmed, scientific_papers_arxiv, lm1b, or `all`) from
local copies in DIR or the Hugging Face cache; writes
<workdir>/eval/zero_shot_step<N>_<hash>.{json,md}.

<hash> changes with any option, so no evaluation overwrites another's files (a repeat with the
same options gets -2, -3, ...); each JSON lists its options under "command_options". Process 0
writes. The loops are in `dlm_jax.evaluation`.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax
from absl import flags

from dlm_jax import cli, evaluation, reports, rng, sample_quality
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


# The flags that only the sample-quality mode (--num_samples) reads.
SAMPLE_QUALITY_FLAGS = ("steps", "judge", "prompt_tokens") + tuple(
    n for n in cli.SAMPLER_FLAGS if n != "seed")
EVALUATE_FLAGS = ("step", "split", "t_samples", "max_batches", "raw_params", "num_samples",
                  "judge", "dataset", "datasets_dir", "prompt_tokens") + cli.SAMPLER_FLAGS


def _write(f, name: str, report: dict, markdown=None, printed=None):
  """Process 0 writes <workdir>/eval/<name>_<hash of the options>.{json,md} (or --output),
  the report listing the options; returns nothing."""
  if jax.process_index() != 0:
    return
  options = {**cli.flag_values(f, EVALUATE_FLAGS), "step": report["step"]}
  stem = f.output or reports.unique_stem(os.path.join(f.workdir, "eval"), name, options)
  if f.output and stem.endswith(".json"):     # --output=path.json (the NELBO mode's old form)
    stem = stem[: -len(".json")]
  written = reports.write(stem, {**report, "command_options": options}, markdown)
  print(printed if printed is not None else markdown)
  print(f"wrote {' and '.join(written)}")


def _nelbo_seed(f) -> int:
  """--seed when given; else the NELBO modes' own default (the times and z_t of their Monte
  Carlo estimate), so that reports without --seed stay comparable across versions."""
  return f.seed if f["seed"].present else evaluation.NELBO_SEED


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.workdir:
    sys.exit("dlm_jax.evaluate: error: --workdir is required")
  if f.output:
    cli.run("dlm_jax.evaluate", reports.check_writable, f.output)   # before any work
  if f.num_samples <= 0:
    given = [n for n in SAMPLE_QUALITY_FLAGS if f[n].present]
    if given:
      sys.exit(f"dlm_jax.evaluate: error: --{given[0]} is an option of the sample-quality "
               "mode: add --num_samples=N (the NELBO and zero-shot modes draw no samples)")
    if f["seed"].present:
      cli.run("dlm_jax.evaluate", rng.check_seed, f.seed, "--seed")
  if f.dataset:
    if f.num_samples > 0:
      sys.exit("dlm_jax.evaluate: error: --dataset and --num_samples are separate evaluations")
    names = sorted(suite.SUITE) if f.dataset == ["all"] else f.dataset
    report = cli.run("dlm_jax.evaluate", evaluation.zero_shot, f.workdir, names,
                     f.datasets_dir, f.step, f.t_samples, f.max_batches, not f.raw_params,
                     _nelbo_seed(f))
    _write(f, f"zero_shot_step{report['step']}", report, evaluation.zero_shot_markdown(report))
    return
  if f.num_samples > 0:
    steps = cli.step_counts(f.steps, "dlm_jax.evaluate")
    for name in ("prompt", "suffix", "length"):
      if f[name].present:
        sys.exit(f"dlm_jax.evaluate: error: --{name} is an option of dlm_jax.sample; the sample "
                 "quality here is of unconditional rows of the trained length, or of rows "
                 "conditioned on --prompt_tokens of each validation row")
    if f.prompt_tokens < 0:
      sys.exit(f"dlm_jax.evaluate: error: --prompt_tokens must be >= 0, got {f.prompt_tokens}")
    opts = cli.sampler_options(f, steps=1, program="dlm_jax.evaluate")
    if f.judge and f.judge.startswith("hf:") and not f["float64"].present:
      opts = dataclasses.replace(opts, float64=True)   # the protocol samples in float64
    report = cli.run("dlm_jax.evaluate", sample_quality.sample_quality, f.workdir, f.num_samples,
                     steps, opts, f.judge, f.prompt_tokens, f.split, f.seed, f.step,
                     f.batch_size)
    _write(f, f"quality_step{report['step']}", report, sample_quality.quality_markdown(report))
    return
  report = cli.run("dlm_jax.evaluate", evaluation.evaluate, f.workdir, f.step, f.split,
                   f.t_samples, f.max_batches, not f.raw_params, _nelbo_seed(f))
  _write(f, f"{report['split']}_step{report['step']}", report,
         printed=evaluation.report_line(report))


if __name__ == "__main__":
  cli.run_app("dlm_jax.evaluate", main, define_flags)

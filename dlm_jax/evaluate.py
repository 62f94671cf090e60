r"""Evaluate a trained model: test NELBO, or the quality of its samples.

  python -m dlm_jax.evaluate --workdir=/tmp/dlm [--split=validation] [--t_samples=4]

writes <workdir>/eval/<split>_step<N>.json. The reported NELBO is a Monte
Carlo estimate (one t and one z_t per sequence per pass) of the continuous-time
NELBO, which upper-bounds -log p(x); exp of it per token is a perplexity
*bound*. The standard error is over sequences (batch means).

  python -m dlm_jax.evaluate --workdir=/tmp/dlm --num_samples=64 --steps=16,64,256 \
      --judge=/tmp/ar [--prompt_tokens=0] [any dlm_jax.sample option: --eta --rho ...]

samples N sequences per T and reports generative perplexity under the judge (an AR
workdir of this stack; exp of the judge's mean NLL per generated token), unigram
entropy, distinct-1/2/3, self-BLEU and the semantic-basin share (dlm_jax/quality.py
defines each), next to the same metrics on N real rows of the evaluation split.
Writes <workdir>/eval/quality_step<N>.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from dlm_jax import cli, elbo, experiment, parallel, quality, reports, sample
from dlm_jax.data import pipeline
from dlm_jax.errors import UserError
from dlm_jax.kernels import assets

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
  flags.DEFINE_string("judge", None, "AR workdir scoring the samples (generative perplexity).")
  flags.DEFINE_integer("prompt_tokens", 0, "Condition each sample on the first P tokens of a "
                       "row of --split (0: unconditional).")
  sample.define_sampler_flags(steps=False)


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


def judge_nll(judge_exp, judge_params, rows, tokenizer, score_from: int = 1,
              batch_size: int = 16):
  """(sum of the judge's NLL in nats, number of scored tokens) over `rows` (N, L).

  Same tokenizer: the ids are scored as they are, targets at positions >= score_from.
  Otherwise each row is decoded to text (specials dropped) and re-encoded by the judge's
  tokenizer, and every token after BOS is scored (retokenisation changes the count)."""
  jt, L = judge_exp.tokenizer, judge_exp.config.data.seq_len
  rows = np.asarray(rows)
  if jt.fingerprint() != tokenizer.fingerprint() or rows.shape[1] > L:
    special = {tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id}
    texts = [tokenizer.decode([int(i) for i in r if i not in special]) for r in rows]
    encoded = [[jt.bos_id] + ids[: L - 1] for ids in jt.encode(texts)]
    rows = np.full((len(encoded), L), jt.pad_id, np.int32)
    for i, ids in enumerate(encoded):
      rows[i, : len(ids)] = ids
    score_from = 1
  width = rows.shape[1]
  target_pos = np.arange(1, width)[None, :]

  @jax.jit
  def batch_nll(params, tokens):
    logits = judge_exp.model.apply({"params": params}, tokens, jnp.zeros((tokens.shape[0],)))
    return elbo.ar_nll(logits, tokens)

  total, count = 0.0, 0
  for start in range(0, len(rows), batch_size):
    chunk = rows[start: start + batch_size]
    padded = np.full((batch_size, width), jt.pad_id, np.int32)
    padded[: len(chunk)] = chunk
    nll = np.asarray(batch_nll(judge_params, jnp.asarray(padded)), np.float64)[: len(chunk)]
    weight = (chunk[:, 1:] != jt.pad_id) & (target_pos >= score_from)
    total += float((nll * weight).sum())
    count += int(weight.sum())
  return total, count


def _basin_table(exp):
  """The top-k neighbour ids used by the basin metric: the same k for every kernel."""
  config = exp.config.copy_and_resolve_references()
  config.kernel.neighbors = "topk"
  return assets.neighbor_table(config, exp.tokenizer, exp.workdir).ids


def sample_quality(workdir: str, num_samples: int, steps_list, opts, judge=None,
                   prompt_tokens: int = 0, split=None, seed: int = 0, step=None,
                   batch_size: int = 16) -> dict:
  """Samples N sequences per T and measures them (and N real rows, as a reference)."""
  if num_samples < 2:
    raise UserError("--num_samples must be >= 2 (self-BLEU compares samples)")
  judge_run = experiment.restore(judge) if judge else None
  if judge_run is not None and judge_run[0].kernel is not None:
    raise UserError(f"--judge={judge} is a diffusion workdir; the judge must be autoregressive "
                    "(train one with configs/*_ar.py)")
  exp, params, ckpt_step = experiment.restore(workdir, step)
  split = split or exp.config.eval.split
  tok = exp.tokenizer
  real = np.asarray(exp.rows(split)[:num_samples])
  if len(real) < num_samples:
    raise UserError(f"the {split} split has {len(real)} rows; lower --num_samples")
  real = real.copy()
  real[:, 0] = tok.bos_id
  skip = max(prompt_tokens, 1)
  prompts = real[:, :prompt_tokens] if prompt_tokens > 0 else None
  ids = _basin_table(exp)
  special = {tok.pad_id, tok.bos_id, tok.eos_id}

  def measure(rows):
    m = quality.summarize(quality.content_tokens(rows, special, skip), ids)
    if judge_run is not None:
      total, count = judge_nll(judge_run[0], judge_run[1], rows, tok, skip)
      m.update(judge_nll_nats=total / count, gen_ppl=math.exp(total / count))
    return m

  results = [{"name": "data", "steps": None, **measure(real)}]
  for steps in steps_list:
    run_opts = dataclasses.replace(opts, steps=int(steps))
    tokens, info = sample.generate_with(exp, params, num_samples, run_opts, seed=seed,
                                        batch_size=batch_size, prompt_rows=prompts,
                                        progress=f"T={steps}")
    results.append({"name": "samples", "steps": int(steps), **measure(tokens),
                    "network_evaluations": info["network_evaluations"],
                    "steps_per_sec": info["steps_per_sec"],
                    "tokens_per_sec": info["tokens_per_sec"],
                    "example": tok.decode(tokens[0])})
  return {
      "workdir": os.path.abspath(workdir), "step": ckpt_step,
      "kernel": exp.kernel.name if exp.kernel else "autoregressive",
      "structure": exp.kernel.structure if exp.kernel else "none",
      "judge": os.path.abspath(judge) if judge else None, "split": split,
      "prompt_tokens": prompt_tokens, "num_samples": num_samples,
      "sampler": {k: v for k, v in opts.__dict__.items() if k != "steps"},
      "what": ("gen_ppl = exp(mean NLL of the generated tokens under the AR judge): an estimate "
               "from N samples, not a bound; the 'data' row measures N real rows of the split"),
      "results": results,
  }


QUALITY_COLUMNS = ("steps", "gen_ppl", "unigram_entropy", "distinct_1", "distinct_2",
                   "distinct_3", "self_bleu", "basin_share", "top5_share")


def quality_markdown(report: dict, label: str | None = None) -> str:
  """Markdown table rows of a sample_quality report."""
  label = label or report["kernel"]
  lines = ["| run | " + " | ".join(QUALITY_COLUMNS) + " |",
           "|---" * (len(QUALITY_COLUMNS) + 1) + "|"]
  for r in report["results"]:
    cells = []
    for c in QUALITY_COLUMNS:
      v = r.get(c)
      cells.append("—" if v is None else (str(v) if isinstance(v, int) else f"{v:.3g}"))
    lines.append(f"| {label if r['name'] == 'samples' else 'data'} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.workdir:
    sys.exit("dlm_jax.evaluate: error: --workdir is required")
  if f.num_samples > 0:
    opts = sample.options_from_flags(f, steps=1)
    report = cli.run("dlm_jax.evaluate", sample_quality, f.workdir, f.num_samples, f.steps, opts,
                     f.judge, f.prompt_tokens, f.split, f.seed, f.step, f.batch_size)
    stem = f.output or os.path.join(f.workdir, "eval", f"quality_step{report['step']}")
    table = quality_markdown(report)
    written = reports.write(stem, report, table)
    print(table)
    print(f"wrote {' and '.join(written)}")
    return
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

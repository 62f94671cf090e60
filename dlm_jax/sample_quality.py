"""Sample quality of a trained model: N samples per number of reverse steps T, measured by
the metrics of dlm_jax/quality.py (real-word rate, unigram entropy, distinct-1/2/3,
self-BLEU, semantic-basin share) and the scorers chosen for the run (dlm_jax/scorers.py:
generative perplexity under an AR judge, an estimate from N samples and not a bound; the
planted oracle), next to the same metrics on N real rows of the split.
`python -m dlm_jax.evaluate --num_samples=N` is its shell."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from dlm_jax import assets, experiment, generation, quality, scorers
from dlm_jax.data.rows import sample_prefix
from dlm_jax.errors import UserError


def _basin_table(exp):
  """The top-k neighbour ids used by the basin metric: the same k for every kernel (the
  workdir's table when it has one; else built in memory, never written into the workdir)."""
  config = exp.config.copy_and_resolve_references()
  config.kernel.neighbors = "topk"
  return assets.neighbor_table(config, exp.tokenizer, exp.workdir, save=False).ids


def sample_quality(workdir: str, num_samples: int, steps_list, opts, judge=None,
                   prompt_tokens: int = 0, split=None, seed: int = 0, step=None,
                   batch_size: int = 16) -> dict:
  """Samples N sequences per T and measures them (and N real rows, as a reference).

  `judge`: an AR workdir of this stack, or `hf:DIR` (a Hugging Face GPT-2, scored by the
  MDLM / Duo protocol of dlm_jax/judge.py, whose keys each row then carries)."""
  if num_samples < 2:
    raise UserError("--num_samples must be >= 2 (self-BLEU compares samples)")
  exp, params, ckpt_step = experiment.restore(workdir, step)
  scorers_ = scorers.build(judge, exp.source)       # chosen once: judge, oracle
  split = split or exp.config.eval.split
  if not 0 <= prompt_tokens < exp.config.data.seq_len:
    raise UserError(f"--prompt_tokens must be in [0, seq_len={exp.config.data.seq_len}), got "
                    f"{prompt_tokens}")
  tok = exp.tokenizer
  real = np.asarray(exp.rows(split)[:num_samples])
  if len(real) < num_samples:
    raise UserError(f"the {split} split has {len(real)} rows; lower --num_samples")
  real = real.copy()
  prefix = sample_prefix(tok, exp.config.data)
  real[:, : len(prefix)] = prefix
  skip = max(prompt_tokens, len(prefix))
  prompts = real[:, :prompt_tokens] if prompt_tokens > 0 else None
  ids = _basin_table(exp)
  special = {tok.pad_id, tok.bos_id, tok.eos_id}
  vocabulary = quality.training_vocabulary(exp.rows("train", build=False), tok.decode)

  def measure(rows):
    m = quality.summarize(quality.content_tokens(rows, special, skip), ids)
    m.update(quality.real_word_rate([tok.decode(r[skip:]) for r in rows], vocabulary))
    for scorer in scorers_:
      m.update(scorer.score(rows, tok, skip, exp.config.data.seq_len))
    return m

  results = [{"name": "data", "steps": None, **measure(real)}]
  for steps in steps_list:
    run_opts = dataclasses.replace(opts, steps=int(steps))
    tokens, info, _ = generation.generate_with(exp, params, num_samples, run_opts, seed=seed,
                                        batch_size=batch_size,
                                        rows=None if prompts is None else
                                        (prompts, np.ones(prompts.shape, bool)),
                                        progress=f"T={steps}")
    results.append({"name": "samples", "steps": int(steps), **measure(tokens),
                    "network_evaluations": info["network_evaluations"],
                    "steps_per_sec": info["steps_per_sec"],
                    "tokens_per_sec": info["tokens_per_sec"],
                    "example": tok.decode(tokens[0])})
  report = {
      "workdir": os.path.abspath(workdir), "step": ckpt_step,
      **exp.objective.describe(),
      "judge": next((s.source for s in scorers_ if hasattr(s, "source")), None),
      "split": split, "prompt_tokens": prompt_tokens, "num_samples": num_samples,
      "sampler": {k: v for k, v in opts.__dict__.items() if k != "steps"},
      "what": ("gen_ppl = exp(mean NLL of the generated tokens under the AR judge): an estimate "
               "from N samples, not a bound; the 'data' row measures N real rows of the split"),
      "results": results,
  }
  if any(isinstance(s, scorers.HuggingFaceJudge) for s in scorers_):
    report["what"] = ("generative_ppl (= gen_ppl) and entropy by the MDLM / Duo protocol "
                      "(dlm_jax/judge.py: retokenised by the judge, EOS counted once, token-"
                      "weighted): an estimate from N samples, not a bound; the 'data' row "
                      "measures N real rows of the split")
    if len(steps_list) == 1:   # Duo's eval writes these three at the top level
      report.update({k: results[-1][k] for k in ("generative_ppl", "entropy", "generated_seqs")})
  return report


QUALITY_COLUMNS = ("steps", "gen_ppl", "real_word_rate", "unigram_entropy", "distinct_1",
                   "distinct_2", "distinct_3", "self_bleu", "basin_share", "top5_share")
ORACLE_COLUMNS = ("oracle_nll_nats", "topic_agreement")      # the planted language only


def quality_markdown(report: dict, label: str | None = None) -> str:
  """Markdown table rows of a sample_quality report."""
  label = label or report["kernel"]
  columns = QUALITY_COLUMNS + tuple(c for c in ORACLE_COLUMNS
                                    if any(c in r for r in report["results"]))
  lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
  for r in report["results"]:
    cells = []
    for c in columns:
      v = r.get(c)
      cells.append("—" if v is None else (str(v) if isinstance(v, int) else f"{v:.3g}"))
    lines.append(f"| {label if r['name'] == 'samples' else 'data'} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"

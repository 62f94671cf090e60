"""Evaluation loops: the NELBO (or AR NLL) of a split, the per-t loss profile, the
learning summary and the zero-shot suite. `python -m dlm_jax.evaluate` is their shell;
training uses the same NELBO loop for its periodic validation (sample quality:
dlm_jax/sample_quality.py).

The reported NELBO is a Monte Carlo estimate (one t and one z_t per sequence per pass) of
the continuous-time NELBO, which upper-bounds -log p(x); exp of it per token is a
perplexity *bound*. The standard error is over batches (ratio estimator).
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax import experiment, objectives, parallel, quality, rng
from dlm_jax.data import pipeline, planted, suite
from dlm_jax.data.rows import Layout, build_rows, pad_rule, unigram_counts
from dlm_jax.errors import UserError

PROFILE_TIMES = (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95)
# The default seed of the NELBO estimates (times and z_t): `evaluate --seed` overrides it.
NELBO_SEED = 1234


def nelbo(exp, eval_fn, params, rows, batch_size: int, max_batches: int = 0, key=None,
          passes: int = 1) -> dict:
  """The NELBO (or AR NLL) of `rows`, one t and z_t per row and pass (fresh ones per pass),
  drawn from `key` (default: the validation stream of seed 0).

  Returns nats_per_token, tokens (per pass) and std_error_nats: the ratio estimator's standard
  error over batches (None when there is one batch: undefined)."""
  sums, counts, recon = [], [], []
  key = rng.stream(0, "validation") if key is None else key
  for p in range(passes):
    pass_key = jax.random.fold_in(key, p)
    for i, local in enumerate(pipeline.eval_batches(rows, batch_size, jax.process_index(),
                                                    jax.process_count(), max_batches,
                                                    exp.tokenizer.pad_id)):
      nll_sum, n, recon_sum = eval_fn(params, parallel.global_batch(local, exp.mesh),
                                      jax.random.fold_in(pass_key, i))
      sums.append(float(nll_sum))
      counts.append(float(n))
      recon.append(float(recon_sum))
  sums, counts = np.asarray(sums), np.asarray(counts)
  nats = sums.sum() / max(counts.sum(), 1.0)
  resid = sums - nats * counts
  # Over batches; undefined (None) from a single batch, never a false 0.
  stderr = (math.sqrt(np.sum(resid**2) / (len(sums) - 1) * len(sums)) / max(counts.sum(), 1.0)
            if len(sums) > 1 else None)
  return {"nats_per_token": float(nats), "tokens": float(counts.sum() / passes),
          "std_error_nats": stderr,
          "reconstruction_nats": float(np.sum(recon) / max(counts.sum(), 1.0))}


def loss_profile(exp, profile_fn, params, rows, batch_size: int, batches: int, key,
                 times=PROFILE_TIMES):
  """{'loss_at_t/0.05': nats per token, ...}: the NELBO integrand at fixed t, averaged over
  `batches` validation batches (prior term excluded)."""
  profile_times = times
  times = jnp.asarray(profile_times, jnp.float32)
  total, n = np.zeros(len(profile_times)), 0
  for i, local in enumerate(pipeline.eval_batches(rows, batch_size, jax.process_index(),
                                                  jax.process_count(), batches,
                                                  exp.tokenizer.pad_id)):
    batch = parallel.global_batch(local, exp.mesh)
    total += np.asarray(profile_fn(params, batch, jax.random.fold_in(key, i), times))
    n += 1
  return {f"loss_at_t/{t:.2f}": float(v) for t, v in zip(profile_times, total / max(n, 1))}


def unigram_baseline_nats(exp, rows) -> float:
  """Cross-entropy (nats per non-PAD token) of `rows` under the training rows' add-one unigram:
  what a model that learned the token frequencies and nothing else scores."""
  counts = unigram_counts(exp.config.data, exp.tokenizer, exp.workdir).astype(np.float64) + 1.0
  seen = np.zeros_like(counts)
  for start in range(0, len(rows), 65536):
    seen += np.bincount(np.asarray(rows[start:start + 65536]).ravel(),
                        minlength=len(counts))[: len(counts)]
  pad = exp.tokenizer.pad_id
  if 0 <= pad < len(counts):
    counts[pad] = seen[pad] = 0.0
  log_q = np.log(np.where(counts > 0, counts, 1.0) / counts.sum())
  return float(-(seen @ log_q) / seen.sum())


def learning_summary(exp, params, rows, nelbo_nats: float, batch_size: int, batches: int,
                     key) -> dict:
  """What a finished run learned, in numbers a reader can check: the validation NELBO next
  to the unigram baseline on the same rows, the integrand at small and large t (context helps
  only if the first is clearly lower), and for the planted language its exact entropy."""
  bits = 1.0 / math.log(2)
  unigram = unigram_baseline_nats(exp, rows)
  out = {"nelbo_bits_per_token": nelbo_nats * bits, "unigram_bits_per_token": unigram * bits,
         "below_unigram_bits": (unigram - nelbo_nats) * bits}
  if exp.objective.is_bound:
    out.update(loss_profile(exp, exp.jit_loss_at_times(), params, rows, batch_size, batches,
                            key, times=(0.05, 0.95)))
  lang = exp.source.oracle()
  if lang is not None:
    out["true_entropy_bits_per_token"] = (planted.entropy_per_token(lang, exp.config.data.seq_len)
                                          * bits)
  return out


def summary_line(summary: dict, is_bound: bool = True) -> str:
  """The learning summary in one line; `is_bound`: a diffusion NELBO (an upper bound), else
  the exact next-token NLL of the autoregressive baseline."""
  what = "NELBO" if is_bound else "NLL"
  kind = "an upper bound" if is_bound else "exact"
  gap = summary["below_unigram_bits"]
  text = (f"validation {what} {summary['nelbo_bits_per_token']:.3f} bits/token ({kind}) "
          f"vs unigram {summary['unigram_bits_per_token']:.3f} on the same rows: "
          + (f"{gap:.3f} below" if gap >= 0 else f"{-gap:.3f} above (worse than the unigram)"))
  if "loss_at_t/0.05" in summary:
    text += (f" | loss at t=0.05: {summary['loss_at_t/0.05']:.3f} nats/token, at t=0.95: "
             f"{summary['loss_at_t/0.95']:.3f}")
  if "true_entropy_bits_per_token" in summary:
    text += (f" | exact entropy of these rows {summary['true_entropy_bits_per_token']:.3f} "
             "bits/token")
  return text


def _nelbo_fields(exp, result: dict) -> dict:
  """The report fields of a `nelbo` result: tokens, nats and bits per token, standard error
  and the perplexity (a bound for diffusion objectives)."""
  nats = result["nats_per_token"]
  return {"tokens": int(result["tokens"]), "nats_per_token": nats,
          "bits_per_token": nats / math.log(2), "std_error_nats": result["std_error_nats"],
          exp.objective.perplexity_key: quality.perplexity(nats)}


def _prior_term(exp, rows) -> dict:
  """The NELBO's prior term KL(q_1(. | x) || p_1), averaged over the rows' non-PAD tokens: a
  floor no training removes (pure SemDLM never leaves a token's cluster, so its p_1 must
  guess the cluster: about the entropy of the cluster unigram)."""
  process = exp.process
  per_token = {"prior": np.asarray(process.prior_kl_table, np.float64)}
  floor = process.prior_floor()
  within = floor is not None
  if within:
    # What a model that knows each token's cluster and only the unigram inside it scores.
    per_token["within"] = floor
  totals, count = dict.fromkeys(per_token, 0.0), 0
  for start in range(0, len(rows), 65536):
    tokens = np.asarray(rows[start:start + 65536]).ravel()
    tokens = tokens[tokens != exp.tokenizer.pad_id]
    count += tokens.size
    for name, table in per_token.items():
      totals[name] += table[tokens].sum()
  nats = {name: total / max(count, 1) for name, total in totals.items()}
  out = {"nats_per_token": nats["prior"], "bits_per_token": nats["prior"] / math.log(2),
         "what": "KL(q_1(. | x) || p_1) per token, part of every NELBO form above"}
  if within:
    out["within_cluster_unigram_bits_per_token"] = nats["within"] / math.log(2)
    out["what"] += ("; pure SemDLM never leaves a token's cluster, so this term (about the "
                    "entropy of the cluster unigram) is a floor no training removes: compare "
                    "the NELBO minus it with within_cluster_unigram_bits_per_token, the "
                    "cross-entropy of the training unigram inside each token's cluster")
  return out


def _other_forms(exp, run, rows, headline: dict) -> dict:
  """The NELBO's other forms next to the headline one, labelled (design.md §6): over t in
  (0, 1]; over [t0, 1] plus -log p(x | z_t0) (t0 = objectives.EVAL_T_MIN); and, for the mask
  kernel, MDLM's reported quantity (t ~ U[t0, 1], no prior term: what its papers print)."""
  objective, bits = exp.objective, 1.0 / math.log(2)
  results = {objective.headline: headline}
  for quantity in ("nelbo", "truncated"):
    if quantity not in results:
      results[quantity] = run(quantity)
  field = lambda r: {"nats_per_token": r["nats_per_token"],
                     "bits_per_token": r["nats_per_token"] * bits,
                     "std_error_nats": r["std_error_nats"]}
  out = {
      "reported_form": objective.headline,
      "nelbo_t_in_0_1": {**field(results["nelbo"]),
                         "what": "the NELBO with t averaged over (0, 1]"
                                 + ("" if exp.process.reported_bound != "truncated" else
                                    (": its estimate has an infinite variance for this kernel "
                                     "(~(1/t) log(1/t) on corrupted tokens at small t): a "
                                     "heavy-tailed draw" if exp.process.mean_form else
                                     ": its expectation is infinite for this kernel and form "
                                     "(~1/t at small t); a heavy-tailed draw, not an estimate"))},
      "nelbo_truncated": {**field(results["truncated"]), "t_min": objectives.EVAL_T_MIN,
                          "reconstruction_nats": results["truncated"]["reconstruction_nats"],
                          "what": "the NELBO over t in [t_min, 1] plus the reconstruction term "
                                  "-log p(x | z_t_min): an upper bound with finite expectation"},
  }
  out["prior_term"] = _prior_term(exp, rows)
  if exp.process.absorbing:
    out["mdlm_reported"] = {**field(run("mdlm")), "what": (
        "MDLM's own quantity: the integrand averaged over t ~ U[1e-3, 1] without the prior "
        "term (as MDLM / Duo report it; not a bound: [0, 1e-3) and KL(q_1 || p_1) left out)")}
  return out


def check_passes(t_samples: int, max_batches: int):
  """One-line errors for evaluation counts that would report a fake number."""
  if t_samples < 1:
    raise UserError(f"t_samples must be >= 1 (passes over the split), got {t_samples}")
  if max_batches < 0:
    raise UserError(f"max_batches must be >= 0 (0: the whole split), got {max_batches}")


def evaluate(workdir: str, step=None, split=None, t_samples: int = 1, max_batches: int = 0,
             use_ema: bool = True, seed: int = NELBO_SEED, devices=None) -> dict:
  """The report of `python -m dlm_jax.evaluate`: NELBO (or NLL) of a split, with what it is."""
  check_passes(t_samples, max_batches)
  exp, params, step = experiment.restore(workdir, step, use_ema, devices)
  split = split or exp.config.eval.split
  rows = exp.rows(split)
  run = lambda quantity: nelbo(exp, exp.jit_eval_step(quantity), params, rows,
                               exp.config.eval.batch_size, max_batches,
                               rng.stream(seed, "validation"), passes=t_samples)
  result = run("headline")
  return {
      "workdir": os.path.abspath(workdir), "step": step, "split": split,
      **exp.objective.describe(), "params": "ema" if use_ema else "raw",
      "t_samples": t_samples, **_nelbo_fields(exp, result),
      **(_other_forms(exp, run, rows, result) if exp.objective.is_bound else {}),
      "what": exp.objective.what(),
      "pad": pad_rule(exp.config.data.convention),
  }


def report_line(report: dict) -> str:
  """`evaluate`'s report in one line a person reads (bits, standard error, perplexity, what
  kind of number it is); the JSON file has every field."""
  bits, se = report["bits_per_token"], report["std_error_nats"]
  spread = "" if se is None else f" +- {se / math.log(2):.3f}"
  bound = "perplexity_bound" in report         # the objective's perplexity_key
  if bound:
    truncated = report.get("reported_form") == "truncated"
    kind = ["truncated NELBO, an upper bound" if truncated else "NELBO, an upper bound",
            "Monte Carlo estimate"]
    ppl = f"perplexity <= {report['perplexity_bound']:.4g}"
  else:
    kind, ppl = ["exact NLL"], f"perplexity {report['perplexity']:.4g}"
  how = "; ".join(kind + (["+- one standard error"] if se else []))
  return (f"{report['split']} {bits:.3f}{spread} bits/token ({how}), {ppl}, "
          f"{report['tokens']} tokens, step {report['step']}, {report['params']} parameters")


def zero_shot(workdir: str, names, datasets_dir: str = "", step=None, t_samples: int = 1,
              max_batches: int = 0, use_ema: bool = True, seed: int = NELBO_SEED,
              devices=None) -> dict:
  """The MDLM / Duo zero-shot suite (data/suite.py) for a trained model: per benchmark, the
  NELBO per token of its documents in rows of the model's length, laid out as those papers
  do (detokenized, no EOS between documents, BOS + L-2 tokens + EOS per row)."""
  check_passes(t_samples, max_batches)
  sources = [suite.documents(name, datasets_dir) for name in names]   # bad names fail here
  exp, params, step = experiment.restore(workdir, step, use_ema, devices)
  L = exp.config.data.seq_len
  eval_fn = exp.jit_eval_step()
  results = []
  for name, (docs, source) in zip(names, sources):
    rows = build_rows(docs, exp.tokenizer, Layout(L, "wrap", "mdlm", insert_eos=False))
    if len(rows) == 0:
      raise UserError(f"zero-shot dataset {name} ({source}) has fewer than {L - 2} tokens: "
                      "no row of the model's length")
    result = nelbo(exp, eval_fn, params, rows, exp.config.eval.batch_size, max_batches,
                   rng.stream(seed, "validation"), passes=t_samples)
    results.append({"dataset": name, "source": source, "rows": int(len(rows)),
                    **_nelbo_fields(exp, result),
                    "complete": not max_batches or max_batches * exp.config.eval.batch_size
                                >= len(rows)})
  return {"workdir": os.path.abspath(workdir), "step": step, **exp.objective.describe(),
          "params": "ema" if use_ema else "raw", "seq_len": L, "t_samples": t_samples,
          "rows": "MDLM / Duo zero-shot layout: detokenized documents concatenated without EOS, "
                  f"each row BOS + {L - 2} tokens + EOS; every token of a row counted",
          "what": exp.objective.what(), "results": results}


def _se(value) -> str:
  return "n/a" if value is None else f"{value:.4f}"


def zero_shot_markdown(report: dict) -> str:
  """One table across the benchmarks of a zero_shot report."""
  key = next(k for k in report["results"][0] if k.startswith("perplexity"))
  lines = [f"Zero-shot, step {report['step']}, {report['kernel']}: {report['what']}. "
           f"{report['rows']}.", "",
           f"| dataset | rows | tokens | nats/token | {key.replace('_', ' ')} | source |",
           "|---|---|---|---|---|---|"]
  for r in report["results"]:
    partial = "" if r["complete"] else " (first batches only)"
    lines.append(f"| {r['dataset']} | {r['rows']} | {r['tokens']}{partial} | "
                 f"{r['nats_per_token']:.4f} ± {_se(r['std_error_nats'])} | {r[key]:.2f} | "
                 f"{r['source']} |")
  return "\n".join(lines) + "\n"

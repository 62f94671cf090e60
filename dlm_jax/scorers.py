"""Scorers of generated rows, chosen once per sample-quality run (`build`):

- `WorkdirJudge`: an autoregressive workdir of this stack; `judge_nll_nats` and `gen_ppl`
  (exp of the judge's mean NLL per scored token: an estimate, not a bound);
- `HuggingFaceJudge`: a Hugging Face GPT-2 under the MDLM / Duo protocol (dlm_jax/judge.py);
- `PlantedOracle`: a source with a known law (the planted language) scores samples exactly.

`ar_nll_sum` is the one loop that sums an autoregressive model's NLL over rows (both judges
use it); perplexities come from `quality.perplexity` (never an overflow)."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax import elbo, experiment, judge as hf_protocol, quality
from dlm_jax.data import planted
from dlm_jax.errors import UserError

ORACLE_SMOOTHING = 1e-3


def ar_nll_sum(nll_of, params, rows, pad_id: int, weights, batch_size: int,
               context: int = 0) -> tuple[float, int]:
  """(sum of the NLL in nats over the targets `weights` keeps, their number) for an AR model:
  nll_of(params, tokens (B, W)) -> (B, W - 1) per-target NLL; rows (N, L) padded with
  `pad_id` into batches of `batch_size`; `context` > 0 scores windows of that many tokens
  one after another (a judge shorter than the rows); weights(chunk (b, W)) -> (b, W - 1)
  bool."""
  rows = np.asarray(rows)
  width = rows.shape[1]
  context = context or width
  total, count = 0.0, 0
  for start in range(0, len(rows), batch_size):
    batch = rows[start: start + batch_size]
    padded = np.full((batch_size, width), pad_id, np.int32)
    padded[: len(batch)] = batch
    for c in range(0, width, context):
      chunk = padded[:, c: c + context]
      if chunk.shape[1] < 2:
        continue
      nll = np.asarray(nll_of(params, jnp.asarray(chunk)), np.float64)[: len(batch)]
      weight = weights(chunk[: len(batch)], c)
      total += float((nll * weight).sum())
      count += int(weight.sum())
  return total, count


class WorkdirJudge:
  """An autoregressive workdir of this stack as the judge."""

  def __init__(self, workdir: str):
    self.exp, self.params, _ = experiment.restore(workdir)
    if self.exp.objective.is_bound:
      raise UserError(f"--judge={workdir} is a diffusion workdir; the judge must be "
                      "autoregressive (train one with configs/*_ar.py)")
    self.source = os.path.abspath(workdir)
    model = self.exp.model
    self._nll_of = jax.jit(lambda params, tokens: elbo.ar_nll(
        model.apply({"params": params}, tokens, jnp.zeros((tokens.shape[0],))), tokens))

  def nll(self, rows, tokenizer, score_from: int = 1, batch_size: int = 16):
    """(sum of the judge's NLL in nats, number of scored tokens) over `rows` (N, L).

    Same tokenizer: the ids are scored as they are, targets at positions >= score_from.
    Otherwise each row is decoded to text (specials dropped) and re-encoded by the judge's
    tokenizer, and every token after BOS is scored (retokenisation changes the count)."""
    jt, L = self.exp.tokenizer, self.exp.config.data.seq_len
    rows = np.asarray(rows)
    if jt.fingerprint() != tokenizer.fingerprint() or rows.shape[1] > L:
      special = {tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id}
      texts = [tokenizer.decode([int(i) for i in r if i not in special]) for r in rows]
      encoded = [[jt.bos_id] + ids[: L - 1] for ids in jt.encode(texts)]
      rows = np.full((len(encoded), L), jt.pad_id, np.int32)
      for i, ids in enumerate(encoded):
        rows[i, : len(ids)] = ids
      score_from = 1
    target_pos = np.arange(1, rows.shape[1])[None, :]
    weights = lambda chunk, _: (chunk[:, 1:] != jt.pad_id) & (target_pos >= score_from)
    return ar_nll_sum(self._nll_of, self.params, rows, jt.pad_id, weights, batch_size)

  def score(self, rows, tokenizer, skip: int, seq_len: int) -> dict:
    del seq_len
    total, count = self.nll(rows, tokenizer, skip)
    nats = total / max(count, 1)
    return {"judge_nll_nats": nats, "gen_ppl": quality.perplexity(nats)}


class HuggingFaceJudge:
  """A Hugging Face GPT-2 (`hf:DIR`) under the MDLM / Duo protocol (dlm_jax/judge.py)."""

  def __init__(self, spec: str):
    self.judge = hf_protocol.load(spec)
    self.source = self.judge.source
    judge = self.judge
    self._nll_of = jax.jit(lambda params, tokens: elbo.ar_nll(
        judge.model.apply({"params": params}, tokens), tokens))

  def nll(self, texts, max_length: int, batch_size: int = 8) -> tuple[float, int]:
    """(sum of the judge's NLL in nats over the protocol's counted targets, their number)."""
    judge = self.judge
    encoded = hf_protocol.judge_rows(judge, texts, max_length)
    return ar_nll_sum(self._nll_of, judge.params, encoded, judge.eos_id,
                      lambda chunk, _: hf_protocol.counted_targets(chunk, judge.eos_id),
                      batch_size, judge.context)

  def score(self, rows, tokenizer, skip: int, seq_len: int) -> dict:
    """Duo's keys (generative_ppl, entropy, generated_seqs) for sampled token rows."""
    del skip
    judge = self.judge
    texts = [hf_protocol.protocol_text(r, tokenizer, judge.eos_text) for r in np.asarray(rows)]
    total, count = self.nll(texts, seq_len)
    nats = total / max(count, 1)
    ppl = quality.perplexity(nats)
    return {"generative_ppl": ppl, "gen_ppl": ppl,
            "judge_nll_nats": nats, "judge_tokens_counted": count,
            "entropy": hf_protocol.mean_entropy(rows), "generated_seqs": texts}


class PlantedOracle:
  """The source's known law scores samples exactly (`oracle_metrics`)."""

  def __init__(self, lang):
    self.lang = lang

  def score(self, rows, tokenizer, skip: int, seq_len: int) -> dict:
    del tokenizer, seq_len
    return oracle_metrics(self.lang, rows, skip)


def oracle_metrics(lang, rows, prompt_tokens: int = 0) -> dict:
  """Samples of the planted language scored by the true model: `oracle_nll_nats`, the exact
  NLL per generated token of the generated part given the prompt, under the true law mixed
  per token with eps = ORACLE_SMOOTHING of uniform (so invalid samples score finitely);
  `oracle_ppl` = exp of it; `valid_share`, the share of rows the unsmoothed law can produce;
  `cluster_share`, the mean share of a row's generated tokens in its most used true cluster;
  with a prompt, `topic_agreement` (planted.topic_agreement: does the sample follow it).
  `*_se`: standard errors over rows (of the unigram entropy of each row's generated part too)."""
  rows = np.asarray(rows)
  generated = rows[:, prompt_tokens:]
  whole = planted.log_prob(lang, rows, ORACLE_SMOOTHING)
  given = (planted.log_prob(lang, rows[:, :prompt_tokens], ORACLE_SMOOTHING)
           if prompt_tokens else 0.0)
  nll = (given - whole) / generated.shape[1]
  cluster = planted.clusters(lang)
  in_range = np.where(generated < len(cluster), generated, 0)
  shares = np.array([np.bincount(cluster[r]).max() / len(r) for r in in_range])
  entropy = np.array([quality.unigram_entropy(r) for r in generated])

  def se(x):
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")

  out = {"oracle_nll_nats": float(nll.mean()), "oracle_nll_se": se(nll),
         "oracle_ppl": quality.perplexity(float(nll.mean())),
         "valid_share": float(np.mean(np.isfinite(planted.log_prob(lang, rows)))),
         "cluster_share": float(shares.mean()), "cluster_share_se": se(shares),
         "unigram_entropy_se": se(entropy)}
  agreement = planted.topic_agreement(lang, rows, prompt_tokens) if prompt_tokens else []
  if len(agreement):
    out.update(topic_agreement=float(agreement.mean()), topic_agreement_se=se(agreement))
  return out


def build(judge: str | None, source) -> list:
  """The scorers of a sample-quality run: the source's oracle when it has one, and the judge
  `judge` names (an AR workdir, or hf:DIR), if any."""
  out, lang = [], source.oracle()
  if lang is not None:
    out.append(PlantedOracle(lang))
  if judge:
    out.append(HuggingFaceJudge(judge) if judge.startswith("hf:") else WorkdirJudge(judge))
  return out

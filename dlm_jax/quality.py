"""Sample-quality metrics (docs/design.md §6), on token rows with the specials removed.

All metrics take a list of 1-D int arrays (one per sample: the generated tokens only,
prompt and special ids dropped) and are averaged over samples unless stated:

- `unigram_entropy`: entropy (nats) of the empirical token distribution of one sample
  (as in MDLM / Duo's generation tables);
- `distinct_n`: unique n-grams / n-grams within one sample (1 - repetition);
- `self_bleu`: BLEU-4 of each sample against all the others as references (uniform weights,
  clipped counts, brevity penalty, add-one smoothing of n >= 2 precisions); high = the samples
  look alike;
- `basin_share`: the semantic-basin metric. For a sample s with token counts c, let
  F = its 5 most frequent tokens (ties: smaller id first) and
  B = union over x in F of ({x} ∪ N_x), N_x the top-k neighbour table (same table for every
  model being compared). basin_share(s) = #{i : s_i in B} / len(s). `top5_share` is the same
  with B = F; basin_share - top5_share is the part due to neighbours rather than repetition.
- `real_word_rate`: the share of a text's words (runs of letters and inner apostrophes,
  case-folded) that occur in the training split (`training_vocabulary`), pooled over samples;
  a word cut by the end of a row (a letter at the row's edge) is not counted, in the samples
  and in the training rows alike.
- generative perplexity is computed by the judges of dlm_jax/scorers.py (needs a network).
"""

from __future__ import annotations

import collections
import math
import re

import numpy as np


def perplexity(nats_per_token: float) -> float:
  """exp(nats) per token; inf beyond float range (never an overflow error, never clipped)."""
  return math.exp(nats_per_token) if nats_per_token < 709.0 else math.inf


def content_tokens(rows, special_ids, skip: int = 0):
  """Per row: the tokens after the first `skip` positions, specials removed."""
  special = np.asarray(sorted(special_ids))
  return [r[skip:][~np.isin(r[skip:], special)] for r in np.asarray(rows)]


def unigram_entropy(sample) -> float:
  if len(sample) == 0:
    return 0.0
  p = np.bincount(sample) / len(sample)
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


def _ngrams(sample, n):
  return [tuple(sample[i: i + n]) for i in range(len(sample) - n + 1)]


def distinct_n(sample, n: int) -> float:
  grams = _ngrams(list(sample), n)
  return len(set(grams)) / len(grams) if grams else 0.0


def bleu(hypothesis, references, max_n: int = 4) -> float:
  """Sentence BLEU with uniform weights up to `max_n`; add-one smoothing for n >= 2."""
  hyp = list(hypothesis)
  if not hyp:
    return 0.0
  log_p = 0.0
  for n in range(1, max_n + 1):
    counts = collections.Counter(_ngrams(hyp, n))
    best = collections.Counter()
    for ref in references:
      for gram, c in collections.Counter(_ngrams(list(ref), n)).items():
        best[gram] = max(best[gram], c)
    clipped = sum(min(c, best[g]) for g, c in counts.items())
    total = max(len(hyp) - n + 1, 0)
    if n == 1:
      if clipped == 0:
        return 0.0
      log_p += math.log(clipped / total) / max_n
    else:
      log_p += math.log((clipped + 1) / (total + 1)) / max_n
  ref_len = min((len(r) for r in references), key=lambda r: (abs(r - len(hyp)), r))
  brevity = min(0.0, 1.0 - ref_len / len(hyp))
  return math.exp(brevity + log_p)


def self_bleu(samples, max_n: int = 4) -> float:
  if len(samples) < 2:
    return float("nan")
  return float(np.mean([bleu(s, samples[:i] + samples[i + 1:], max_n)
                        for i, s in enumerate(samples)]))


def basin_shares(sample, neighbour_ids, top: int = 5):
  """(basin_share, top5_share) of one sample; neighbour_ids: (V, k) with -1 padding."""
  if len(sample) == 0:
    return 0.0, 0.0
  counts = np.bincount(sample)
  order = np.lexsort((np.arange(len(counts)), -counts))        # count desc, then id asc
  frequent = order[:top][counts[order[:top]] > 0]
  basin = set(frequent.tolist())
  for x in frequent:
    basin.update(int(y) for y in neighbour_ids[x] if y >= 0)
  in_basin = np.isin(sample, np.fromiter(basin, int))
  return float(in_basin.mean()), float(np.isin(sample, frequent).mean())


def summarize(samples, neighbour_ids=None) -> dict:
  """The per-sample metrics averaged over samples (plus self-BLEU over the set)."""
  out = {
      "num_samples": len(samples),
      "mean_tokens": float(np.mean([len(s) for s in samples])),
      "unigram_entropy": float(np.mean([unigram_entropy(s) for s in samples])),
      "distinct_1": float(np.mean([distinct_n(s, 1) for s in samples])),
      "distinct_2": float(np.mean([distinct_n(s, 2) for s in samples])),
      "distinct_3": float(np.mean([distinct_n(s, 3) for s in samples])),
      "self_bleu": self_bleu([list(s) for s in samples]),
  }
  if neighbour_ids is not None:
    shares = np.array([basin_shares(s, neighbour_ids) for s in samples])
    out["basin_share"], out["top5_share"] = float(shares[:, 0].mean()), float(shares[:, 1].mean())
  return out


_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


def whole_words(text: str) -> list[str]:
  """The case-folded words of `text`, without a first or last word that touches its edge (it
  may be the cut end of a longer word)."""
  found = list(_WORD.finditer(text))
  if found and found[0].start() == 0:
    found = found[1:]
  if found and found[-1].end() == len(text):
    found = found[:-1]
  return [m.group().casefold() for m in found]


def training_vocabulary(rows, decode, max_tokens: int = 4_000_000) -> frozenset | None:
  """The words of the first `max_tokens` tokens of the training rows, decoded row by row
  (None without rows)."""
  if rows is None:
    return None
  n = max(1, min(len(rows), max_tokens // max(1, np.shape(rows)[1])))
  words = set()
  for row in np.asarray(rows[:n]):
    words.update(whole_words(decode(row)))
  return frozenset(words)


def real_word_rate(texts, vocabulary) -> dict:
  """{"real_word_rate": share of the texts' words found in `vocabulary`, "words": how many};
  {} without a vocabulary (the training rows are not at hand)."""
  if vocabulary is None:
    return {}
  words = [w for t in texts for w in whole_words(t)]
  rate = sum(w in vocabulary for w in words) / len(words) if words else float("nan")
  return {"real_word_rate": rate, "words": len(words)}

"""The planted language: exact likelihood and entropy against brute-force enumeration, the
sampler against the likelihood, and the true clusters recovered by the neighbour tables."""

import itertools

import numpy as np
import pytest

from dlm_jax import sample_quality, scorers
from dlm_jax.data import planted
from dlm_jax.kernels import neighbors


def _brute_force_prob(lang, x):
  """p(x) summed over every topic and role path, term by term."""
  total = 0.0
  words = np.asarray(x) - planted.NUM_SPECIAL
  R = len(planted.ROLES)
  for z, p_z in enumerate(lang.topic_prior):
    for path in itertools.product(range(R), repeat=len(x)):
      p = p_z * lang.initial[path[0]]
      for prev, nxt in zip(path, path[1:]):
        p *= lang.transition[prev, nxt]
      for r, w in zip(path, words):
        p *= lang.emission[z, r, w] if w >= 0 else 0.0
      total += p
  return total


def _all_rows(lang, L):
  ids = range(planted.NUM_SPECIAL, lang.vocab_size)
  return np.array(list(itertools.product(ids, repeat=L)))


@pytest.mark.parametrize("L", [1, 2, 3])
def test_likelihood_and_entropy_equal_enumeration(L):
  lang = planted.language(topics=2, seed=3, cluster_size=2)
  rows = _all_rows(lang, L)
  log_p = planted.log_prob(lang, rows)
  p = np.exp(log_p)
  assert abs(p.sum() - 1.0) < 1e-10                     # a distribution over all rows
  rng = np.random.default_rng(0)
  some = np.concatenate([rng.choice(len(rows), min(20, len(rows)), replace=False),
                         rng.choice(np.flatnonzero(p > 0), 20)])
  for i in some:
    np.testing.assert_allclose(p[i], _brute_force_prob(lang, rows[i]), rtol=1e-10, atol=1e-300)
  positive = p > 0
  exact = -np.sum(p[positive] * log_p[positive]) / L
  np.testing.assert_allclose(planted.entropy_per_token(lang, L), exact, rtol=1e-10)


def test_rows_without_content_words_keep_the_topic_uncertain():
  """L = 2 has function-only rows (prep det, punct det): the closed form's P(no content) term."""
  lang = planted.language(topics=3, seed=1, cluster_size=1)
  rows = _all_rows(lang, 2)
  p = np.exp(planted.log_prob(lang, rows))
  function_only = (rows - planted.NUM_SPECIAL < 3).all(1)
  assert p[function_only].sum() > 0.05
  positive = p > 0
  exact = -np.sum(p[positive] * np.log(p[positive])) / 2
  np.testing.assert_allclose(planted.entropy_per_token(lang, 2), exact, rtol=1e-10)


def test_smoothed_scores_are_finite_and_a_distribution():
  lang = planted.language(topics=2, seed=0, cluster_size=1)
  ids = range(lang.vocab_size + 1)                 # specials and the mask id included
  rows = np.array(list(itertools.product(ids, repeat=2)))
  exact = planted.log_prob(lang, rows)
  smoothed = planted.log_prob(lang, rows, smoothing=0.01)
  assert np.isneginf(exact).any() and np.isfinite(smoothed).all()
  in_vocab = (rows < lang.vocab_size).all(1)
  assert abs(np.exp(smoothed[in_vocab]).sum() - 1.0) < 1e-10


def test_samples_follow_the_likelihood():
  """Empirical frequencies of all length-2 rows match p(x); the mean NLL of long rows matches
  the closed-form entropy."""
  lang = planted.language(topics=2, seed=5, cluster_size=2)
  rows = planted.sample(lang, 200_000, 2, seed=0)
  assert rows.min() >= planted.NUM_SPECIAL and rows.max() < lang.vocab_size
  keys, counts = np.unique(rows, axis=0, return_counts=True)
  p = np.exp(planted.log_prob(lang, keys))
  assert np.all(p > 0)
  tv = 0.5 * np.abs(counts / len(rows) - p).sum() + 0.5 * (1 - p.sum())
  assert tv < 0.02
  big = planted.language()
  long_rows = planted.sample(big, 4000, 64, seed=1)
  nll = -planted.log_prob(big, long_rows) / 64
  h = planted.entropy_per_token(big, 64)
  assert abs(nll.mean() - h) < 4 * nll.std() / np.sqrt(len(nll))
  assert planted.entropy_rate(big) < h < planted.unigram_entropy(big)


def test_neighbour_tables_recover_the_true_clusters():
  lang = planted.language()
  truth = planted.clusters(lang)
  emb = planted.cluster_embeddings(lang)
  part = neighbors.build(emb, "partition", planted.CLUSTER_SIZE, "t")
  words = slice(planted.NUM_SPECIAL, None)
  same = truth[words][:, None] == truth[words][None, :]
  assert np.array_equal(part.cluster[words][:, None] == part.cluster[words][None, :], same)
  topk = neighbors.build(emb, "topk", planted.CLUSTER_SIZE - 1, "t")
  ids = topk.ids[words]
  assert np.all(truth[ids] == truth[words][:, None])


def test_tokenizer_round_trip():
  lang = planted.language()
  tok = planted.PlantedTokenizer(lang)
  rows = planted.sample(lang, 3, 16, seed=2)
  for row in rows:
    assert tok.encode([tok.decode(row)])[0] == list(row)
  assert tok.vocab_size == lang.vocab_size == 412
  assert tok.decode([lang.vocab_size]) == "[MASK]"


def test_synthetic_source_trains_evaluates_and_samples_scored_by_the_oracle(tmp_path):
  from configs import planted as planted_config
  from dlm_jax import training
  from dlm_jax.samplers import reverse
  c = planted_config.get_config()
  c.data.synthetic.topics = 2
  c.data.synthetic.train_rows, c.data.synthetic.validation_rows = 256, 64
  c.data.seq_len = 16
  c.model.num_layers, c.model.d_model, c.model.num_heads, c.model.cond_dim = 2, 32, 2, 16
  c.train.batch_size, c.eval.batch_size = 16, 16
  c.train.num_steps, c.train.eval_every, c.train.checkpoint_every = 10, 10, 10
  c.train.eval_batches = 2
  workdir = str(tmp_path / "planted")
  history, _ = training.train_and_evaluate(c, workdir)
  final = next(h for h in history if "final/true_entropy_bits_per_token" in h)
  lang = planted.language(2, 0)
  assert final["final/true_entropy_bits_per_token"] == pytest.approx(
      planted.entropy_per_token(lang, 16) / np.log(2))
  report = sample_quality.sample_quality(workdir, 4, [4], reverse.SamplerOptions(), batch_size=4)
  data, samples = report["results"]
  # Real rows are valid, score near the entropy, and samples start with no clamped BOS.
  assert data["valid_share"] == 1.0
  assert abs(data["oracle_nll_nats"] - planted.entropy_per_token(lang, 16)) < 1.0
  assert samples["example"].split()[0] in planted.PlantedTokenizer(lang).pieces[4:]
  assert np.isfinite(samples["oracle_nll_nats"]) and 0 < samples["cluster_share"] <= 1


def test_oracle_metrics_condition_on_the_prompt():
  lang = planted.language(topics=2, seed=0, cluster_size=2)
  rows = planted.sample(lang, 8, 6, seed=3)
  m = scorers.oracle_metrics(lang, rows, 2)
  expected = np.mean(planted.log_prob(lang, rows[:, :2], 1e-3) - planted.log_prob(lang, rows, 1e-3)) / 4
  assert m["oracle_nll_nats"] == pytest.approx(expected)
  assert m["valid_share"] == 1.0


def test_topic_agreement_tells_a_followed_prompt_from_an_ignored_one():
  lang = planted.language(topics=4, seed=0)
  rows = planted.sample(lang, 400, 32, seed=1)
  assert (planted.topic_agreement(lang, rows, 8) == 1.0).all()     # one topic per row
  shuffled = np.concatenate([rows[:, :8], np.roll(rows[:, 8:], 1, axis=0)], 1)
  assert abs(planted.topic_agreement(lang, shuffled, 8).mean() - 0.25) < 0.08
  topics = planted.word_topics(lang)
  assert (topics[:planted.NUM_SPECIAL] == -1).all() and topics[-1] == -1
  assert set(np.unique(topics)) == {-1, 0, 1, 2, 3}



def test_repair_verdict_compares_corrector_gains_with_masking():
  """The repair claim: holds when a uniform / SemDLM+ variant's corrector gain (ancestral minus
  psi oracle NLL) exceeds masking's by more than 2 SE at some T; the table lists each sampler."""
  import os, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from experiments import planted as experiment  # pylint: disable=g-import-not-at-top

  def rows(nlls, se=0.05):
    return [{"steps": t, "oracle_nll_nats": v, "oracle_nll_se": se, "valid_share": 0.5}
            for t, v in zip((8, 64), nlls)]

  def variant(name, kernel, ancestral, psi):
    return {"name": name, "kernel": kernel, "samples": rows(ancestral), "samples_psi": rows(psi),
            "corrector": {"mode": "constant", "eta": 0.1}}
  masking = variant("masking", "masking", [7.0, 6.0], [6.9, 5.95])      # gains 0.1, 0.05
  masking["samples_confidence"] = rows([6.5, 5.8])
  small = variant("uniform", "uniform", [7.0, 6.0], [6.8, 5.9])         # +0.1: within 2 SE
  large = variant("semdlm_plus-uniform", "semdlm_plus", [7.0, 6.0], [6.5, 5.9])  # +0.4 at T=8
  held = experiment._repair_verdict([masking, small, large], masking)
  assert held["verdict"] == "holds" and "semdlm_plus-uniform at T = 8" in held["numbers"]
  assert held["numbers"].endswith("above masking's: ['semdlm_plus-uniform at T = 8']")
  assert experiment._repair_verdict([masking, small], masking)["verdict"] == "does not hold"
  table = "\n".join(experiment._corrector_section([masking, small, large], [8, 64]))
  assert "| masking | confidence | 6.500 ± 0.050 / 0.50" in table
  assert "| semdlm_plus-uniform | psi | 6.500 ± 0.050 / 0.50 | 5.900" in table

"""Neighbourhood tables: structure, blocked top-k vs brute force, embeddings, validation."""

import glob

import numpy as np
import pytest

from dlm_jax.errors import UserError
from dlm_jax.kernels import family, neighbors
from tests.conftest import kernel_config


@pytest.fixture(scope="module")
def emb():
  return np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)


def test_partition_is_balanced_and_idempotent(emb):
  table = neighbors.build(emb, "partition", 8, "fp")
  n = table.dense()
  np.testing.assert_allclose(n.sum(1), 1.0, atol=1e-6)
  np.testing.assert_allclose(n @ n, n, atol=1e-6)              # N idempotent: Markov family (A)
  sizes = np.bincount(table.cluster)
  assert (sizes[:4] == 1).all()                                # specials are singletons
  assert 4 <= sizes[4:].min() and sizes.max() <= 8
  stats = neighbors.statistics(table)
  assert stats["clusters"] == len(sizes) - 4 and stats["size_max"] == 8   # specials excluded


def test_partition_groups_similar_tokens():
  """Two well-separated blobs never share a cluster."""
  rng = np.random.default_rng(1)
  centres = np.array([[5.0, 0, 0], [0, 5.0, 0]])
  emb = np.concatenate([np.zeros((4, 3)) + 1, centres[rng.integers(0, 2, 96)]
                        + rng.normal(size=(96, 3)) * 0.1])
  blob = np.argmax(emb[4:] @ centres.T, 1)
  cluster = neighbors.balanced_partition(emb, 8)[4:]
  for c in np.unique(cluster):
    assert len(np.unique(blob[cluster == c])) == 1


def test_topk_matches_brute_force(emb):
  table = neighbors.topk_table(emb, 5, 0.2, "fp", max_in_degree=10**6, block=37)
  e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  sim = e @ e.T
  np.fill_diagonal(sim, -np.inf)
  sim[:, :4] = -np.inf
  for x in range(4, 300):
    want = np.argsort(-sim[x])[:5]
    assert set(table.ids[x]) == set(want)
    w = np.exp(sim[x, table.ids[x]] / 0.2)
    np.testing.assert_allclose(table.weights[x], w / w.sum(), rtol=1e-4)
  assert (table.ids[:4, 0] == np.arange(4)).all()             # specials stay themselves


def test_topk_in_degree_cap_and_inversion(emb):
  table = neighbors.topk_table(emb, 6, 0.1, "fp", max_in_degree=7)
  in_degree = np.bincount(table.ids[table.ids >= 0], minlength=300)
  assert in_degree[4:].max() <= 7
  np.testing.assert_allclose(table.weights.sum(1), 1.0, atol=1e-6)
  n = table.dense()
  for z in range(300):
    mine = {(int(x), round(float(w), 6)) for x, w in zip(table.in_ids[z], table.in_weights[z])
            if x >= 0}
    assert mine == {(int(x), round(float(n[x, z]), 6)) for x in np.flatnonzero(n[:, z])}


def test_corpus_embeddings_are_deterministic_and_semantic():
  """Tokens that occur in the same contexts get similar PPMI-SVD embeddings."""
  rng = np.random.default_rng(0)
  V = 40
  # Tokens 4..13 appear after 30, tokens 14..23 after 31: two distributional classes.
  rows = []
  for _ in range(400):
    row = []
    for _ in range(8):
      cls = rng.integers(2)
      row += [30 + cls, (4 if cls == 0 else 14) + rng.integers(10)]
    rows.append(row)
  rows = np.array(rows)
  a = neighbors.corpus_embeddings(rows, V, dim=8, window=1)
  b = neighbors.corpus_embeddings(rows, V, dim=8, window=1)
  np.testing.assert_array_equal(a, b)
  table = neighbors.topk_table(a, 3, 0.1, "fp")
  for x in range(4, 14):
    assert all(4 <= j < 14 for j in table.ids[x])
  for x in range(14, 24):
    assert all(14 <= j < 24 for j in table.ids[x])


def test_save_load_and_vocabulary_check(tmp_path, emb):
  table = neighbors.build(emb, "topk", 4, "abc", tau=0.3)
  path = str(tmp_path / "t.npz")
  table.save(path)
  loaded = neighbors.NeighborTable.load(path)
  np.testing.assert_array_equal(loaded.ids, table.ids)
  np.testing.assert_array_equal(loaded.in_ids, table.in_ids)
  loaded.check_vocab("abc", 300)
  with pytest.raises(UserError, match="built for another vocabulary"):
    loaded.check_vocab("xyz", 300)
  with pytest.raises(UserError, match="not found"):
    neighbors.NeighborTable.load(str(tmp_path / "missing.npz"))


def test_bad_parameters(emb):
  with pytest.raises(UserError, match="k=300 must be in"):
    neighbors.build(emb, "partition", 300, "fp")
  with pytest.raises(UserError, match="k=400 must be in"):
    neighbors.build(emb, "topk", 400, "fp")
  with pytest.raises(UserError, match="tau must be > 0"):
    neighbors.build(emb, "topk", 4, "fp", tau=0.0)
  with pytest.raises(UserError, match="power must be > 0"):
    family.make_process(kernel_config("semdlm_plus", global_power=-1.0), 300,
                              neighbors.build(emb, "partition", 4, "fp"))
  with pytest.raises(UserError, match="needs a neighbour table"):
    family.make_process(kernel_config("semdlm"), 300)
  with pytest.raises(UserError, match="V=300, the tokenizer 301"):
    family.make_process(kernel_config("semdlm"), 301, neighbors.build(emb, "partition", 4,
                                                                            "fp"))


def test_cooccurrence_streams_in_blocks_and_reports_progress(capsys):
  """Counts summed block by block equal one pass over every row (a dense reference), and the
  progress line says tokens done, rate, time left and the pairs held."""
  rows = np.random.default_rng(2).integers(0, 12, size=(50, 9))
  dense = np.zeros((12, 12))
  for row in rows:
    for d in range(1, 3):
      for a, b in zip(row[:-d], row[d:]):
        dense[a, b] += 1
        dense[b, a] += 1
  streamed = neighbors.cooccurrence(rows, 12, window=2, block_rows=7,
                                    progress=neighbors.Progress(every=0.0))
  np.testing.assert_array_equal(streamed.toarray(), dense)
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 8 and "over 0.0M of 0.0M tokens" in lines[-1] and "0:00 left" in lines[-1]
  assert f"{np.count_nonzero(dense) / 1e6:.1f}M token pairs" in lines[-1]


def test_a_capped_corpus_table_counts_the_leading_rows_only(tmp_path, config):
  """kernel.cooc_max_tokens: the first N tokens of the training split, the same rows whether
  the workdir's cache exists or the corpus is tokenized for the table alone (and then no
  further); the cap is part of the table's fingerprint."""
  from dlm_jax import assets  # pylint: disable=g-import-not-at-top
  from dlm_jax.data import rows as rows_lib  # pylint: disable=g-import-not-at-top
  from dlm_jax.data.tokenizer import get_tokenizer  # pylint: disable=g-import-not-at-top
  tok = get_tokenizer(config.data, str(tmp_path))
  streamed = rows_lib.leading_rows(config.data, "train", tok, str(tmp_path / "a"), 320)
  assert streamed.shape == (10, 32)
  assert not glob.glob(str(tmp_path / "a" / "**" / "*.npy"), recursive=True)   # no split cached
  whole = rows_lib.token_rows(config.data, "train", tok, str(tmp_path / "b"))
  cached = rows_lib.leading_rows(config.data, "train", tok, str(tmp_path / "b"), 320)
  np.testing.assert_array_equal(streamed, whole[:10])
  np.testing.assert_array_equal(cached, streamed)
  uncapped = assets.table_path(config, tok, str(tmp_path))
  config.kernel.cooc_max_tokens = 320
  assert assets.table_path(config, tok, str(tmp_path)) != uncapped

"""Neighbourhood tables: structure, blocked top-k vs brute force, embeddings, validation."""

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

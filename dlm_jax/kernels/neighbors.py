"""Semantic neighbourhood tables (docs/design.md §2), built from token embeddings.

Embeddings come from (a) the training corpus: co-occurrence counts in a window,
positive PMI with context smoothing 0.75, randomized truncated SVD (sparse,
blockwise, seeded: deterministic); (b) a checkpoint's token-embedding matrix;
(c) an `.npy` file aligned with the tokenizer.

Two tables, both stored as (V, k) arrays of ids and weights (rows sum to 1):

- `partition` (A): a balanced partition of the vocabulary into clusters of
  ceil(k/2)..k tokens by recursive median bisection along each group's
  principal direction; N_y is uniform over y's cluster (self included), so N is
  idempotent and the forward process is a Markov chain. Special tokens
  (the tokenizer's `special_ids`) are singleton clusters.
- `topk` (B): the k most cosine-similar other tokens, weights softmax(sim/tau),
  by blocked matmul + top-k (never the dense V x V matrix). Edges into tokens
  whose in-degree exceeds `max_in_degree` are pruned (weakest first) and rows
  renormalised, so the inverted table (in-neighbours of each z) is exact.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlm_jax import atomic_files, numpy_files
from dlm_jax.errors import UserError

SPECIAL = (0, 1, 2, 3)   # SentencePiece models trained here: PAD, UNK, BOS, EOS
PAD = -1


@dataclasses.dataclass
class NeighborTable:
  kind: str                 # "partition" | "topk"
  ids: np.ndarray           # (V, k) int32, PAD = -1 where a row has fewer than k entries
  weights: np.ndarray       # (V, k) float32, 0 at PAD
  fingerprint: str          # the tokenizer's vocabulary hash
  cluster: np.ndarray | None = None       # (V,) cluster id (partition)
  in_ids: np.ndarray | None = None        # (V, k_in) x with z in N_x (topk)
  in_weights: np.ndarray | None = None    # (V, k_in) N_x(z)
  special: np.ndarray | None = None       # special-token ids: N_x = delta_x, nobody's neighbour

  @property
  def vocab_size(self) -> int:
    return self.ids.shape[0]

  @property
  def k(self) -> int:
    return self.ids.shape[1]

  def dense(self) -> np.ndarray:
    """The (V, V) row-stochastic matrix N (tests and tiny vocabularies only)."""
    V = self.vocab_size
    n = np.zeros((V, V), np.float64)
    rows = np.repeat(np.arange(V), self.k)
    valid = self.ids.ravel() >= 0
    np.add.at(n, (rows[valid], self.ids.ravel()[valid]), self.weights.ravel()[valid])
    return n

  def check_vocab(self, fingerprint: str, vocab_size: int, what: str = "") -> None:
    if self.vocab_size != vocab_size or self.fingerprint != fingerprint:
      raise UserError(f"neighbour table {what} was built for another vocabulary "
                      f"(V={self.vocab_size}, hash {self.fingerprint}; the tokenizer has "
                      f"V={vocab_size}, hash {fingerprint}): rebuild it")

  def save(self, path: str) -> None:
    arrays = {k: v for k, v in dataclasses.asdict(self).items() if isinstance(v, np.ndarray)}
    with atomic_files.replace_on_success(path, "neighbour table", suffix=".npz") as f:
      np.savez(f, kind=self.kind, fingerprint=self.fingerprint, **arrays)

  @classmethod
  def load(cls, path: str) -> "NeighborTable":
    fields = numpy_files.load_npz(path, "neighbour table", ("kind", "fingerprint", "ids",
                                                             "weights"))
    numpy_files.numeric(fields, path, "neighbour table", [k for k in fields
                                                          if k not in ("kind", "fingerprint")])
    try:
      return cls(kind=str(fields.pop("kind")), fingerprint=str(fields.pop("fingerprint")),
                 **fields)
    except TypeError as e:
      raise UserError(f"neighbour table {path} has unexpected arrays ({e})") from None


# ----------------------------------------------------------------------------- embeddings


def cooccurrence(rows, vocab_size: int, window: int = 4, block_rows: int = 0,
                 progress=None):
  """Symmetric co-occurrence counts within `window` tokens, as a scipy CSR matrix, streamed
  over `rows` (any rows[a:b] source: an array, a memory map, prepared shards) a block at a
  time. `progress(done_tokens, total_tokens, pairs)` is called after each block."""
  import scipy.sparse as sp  # pylint: disable=g-import-not-at-top
  length = rows.shape[1]
  block_rows = block_rows or max(1, (1 << 20) // length)      # ~1M tokens per block
  total = sp.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
  for start in range(0, len(rows), block_rows):
    block = np.asarray(rows[start:start + block_rows], np.int64)
    codes = []
    for d in range(1, window + 1):
      a, b = block[:, :-d].ravel(), block[:, d:].ravel()
      codes.append(a * vocab_size + b)
      codes.append(b * vocab_size + a)
    uniq, counts = np.unique(np.concatenate(codes), return_counts=True)
    total = total + sp.csr_matrix((counts.astype(np.float64),
                                   (uniq // vocab_size, uniq % vocab_size)),
                                  shape=(vocab_size, vocab_size))
    if progress is not None:
      progress(min(start + block_rows, len(rows)) * length, len(rows) * length, total.nnz)
  return total


class Progress:
  """Prints the co-occurrence count's progress at most every `every` seconds: tokens done,
  rate, time left, and the pairs held (12 bytes each in CSR)."""

  def __init__(self, every: float = 10.0, out=None):
    import time  # pylint: disable=g-import-not-at-top
    self._clock, self.every = time.perf_counter, every
    self.start = self.last = self._clock()
    self._out = out

  def __call__(self, done: int, total: int, pairs: int) -> None:
    now = self._clock()
    if now - self.last < self.every and done < total:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    left = (total - done) / max(rate, 1e-9)
    print(f"neighbour table: co-occurrence counts over {done / 1e6:.1f}M of {total / 1e6:.1f}M "
          f"tokens ({rate / 1e6:.2f}M tokens/s, {int(left) // 60}:{int(left) % 60:02d} left), "
          f"{pairs / 1e6:.1f}M token pairs ({pairs * 12 / 2**20:.0f} MiB)", flush=True,
          file=self._out)


def ppmi(counts, alpha: float = 0.75):
  """Positive PMI with context-distribution smoothing (Levy, Goldberg & Dagan 2015)."""
  import scipy.sparse as sp  # pylint: disable=g-import-not-at-top
  counts = counts.tocoo()
  row_sum = np.asarray(counts.sum(1)).ravel()
  ctx = np.asarray(counts.sum(0)).ravel() ** alpha
  total = counts.sum()
  pmi = np.log(counts.data * ctx.sum() / (row_sum[counts.row] * ctx[counts.col])) if total else 0
  keep = pmi > 0
  return sp.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape)


def randomized_svd(matrix, rank: int, seed: int = 0, oversample: int = 16, power_iters: int = 3):
  """Halko et al. randomized SVD of a sparse matrix: returns (U, S)."""
  rng = np.random.default_rng(seed)
  n = matrix.shape[1]
  omega = rng.standard_normal((n, rank + oversample))
  q, _ = np.linalg.qr(matrix @ omega)
  for _ in range(power_iters):
    q, _ = np.linalg.qr(matrix.T @ q)
    q, _ = np.linalg.qr(matrix @ q)
  small = (matrix.T @ q).T
  u_small, s, _ = np.linalg.svd(small, full_matrices=False)
  u = q @ u_small
  # Fix signs so the result does not depend on LAPACK's choice.
  signs = np.sign(u[np.abs(u).argmax(0), np.arange(u.shape[1])])
  return (u * signs)[:, :rank], s[:rank]


def corpus_embeddings(rows, vocab_size: int, dim: int = 256, window: int = 4,
                      seed: int = 0, progress=None) -> np.ndarray:
  """PPMI + truncated SVD token embeddings (V, dim), U * sqrt(S)."""
  m = ppmi(cooccurrence(rows, vocab_size, window, progress=progress))
  rank = min(dim, vocab_size - 2)
  u, s = randomized_svd(m, rank, seed)
  emb = (u * np.sqrt(s)).astype(np.float32)
  if rank < dim:
    emb = np.pad(emb, ((0, 0), (0, dim - rank)))
  return emb


def _normalise(emb: np.ndarray) -> np.ndarray:
  emb = np.asarray(emb, np.float32)
  norm = np.linalg.norm(emb, axis=1, keepdims=True)
  return emb / np.maximum(norm, 1e-8)


# ----------------------------------------------------------------------------- tables


def _special_mask(V: int, special) -> np.ndarray:
  mask = np.zeros((V,), bool)
  mask[np.asarray(list(special), np.int64)] = True
  return mask


def balanced_partition(emb: np.ndarray, k: int, seed: int = 0,
                       special=SPECIAL) -> np.ndarray:
  """Cluster id per token: recursive median bisection along principal directions."""
  V = emb.shape[0]
  if not 1 <= k < V:
    raise UserError(f"neighbourhood size k={k} must be in [1, V) with V={V}")
  emb = _normalise(emb)
  rng = np.random.default_rng(seed)
  cluster = np.full((V,), -1, np.int64)
  is_special = _special_mask(V, special)
  cluster[is_special] = np.arange(is_special.sum())
  next_id = int(is_special.sum())
  stack = [np.flatnonzero(~is_special)]
  while stack:
    group = stack.pop()
    if len(group) <= k:
      cluster[group] = next_id
      next_id += 1
      continue
    x = emb[group] - emb[group].mean(0)
    v = rng.standard_normal(x.shape[1]).astype(np.float32)
    for _ in range(20):                      # power iteration for the top direction
      v = x.T @ (x @ v)
      v /= max(np.linalg.norm(v), 1e-12)
    order = group[np.argsort(x @ v, kind="stable")]
    # Split so both halves stay multiples of k where possible (balanced leaves).
    n_clusters = -(-len(group) // k)
    left = (n_clusters // 2) * k if n_clusters > 1 else len(group) // 2
    left = min(max(left, 1), len(group) - 1)
    stack.extend([order[left:], order[:left]])
  return cluster


def partition_table(cluster: np.ndarray, fingerprint: str, special=SPECIAL) -> NeighborTable:
  V = len(cluster)
  sizes = np.bincount(cluster)
  k = int(sizes.max())
  order = np.argsort(cluster, kind="stable")
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  members = np.full((len(sizes), k), PAD, np.int32)
  rank = np.arange(V) - starts[cluster[order]]
  members[cluster[order], rank] = order
  ids = members[cluster]
  weights = np.where(ids >= 0, 1.0 / sizes[cluster][:, None], 0.0).astype(np.float32)
  return NeighborTable("partition", ids.astype(np.int32), weights, fingerprint,
                       cluster=cluster.astype(np.int32),
                       special=np.asarray(list(special), np.int32))


def topk_table(emb: np.ndarray, k: int, tau: float, fingerprint: str,
               max_in_degree: int | None = None, block: int = 2048,
               special=SPECIAL) -> NeighborTable:
  """Top-k cosine neighbours (self excluded), softmax(sim / tau) weights, in-degree capped."""
  V = emb.shape[0]
  is_special = _special_mask(V, special)
  if not 1 <= k < V - is_special.sum():
    raise UserError(f"neighbourhood size k={k} must be in [1, V - {is_special.sum()}) with V={V}")
  if tau <= 0:
    raise UserError(f"neighbour temperature tau must be > 0, got {tau}")
  emb = _normalise(emb)
  ids = np.full((V, k), PAD, np.int64)
  sims = np.full((V, k), -np.inf, np.float32)
  for start in range(0, V, block):
    stop = min(start + block, V)
    s = emb[start:stop] @ emb.T                          # (b, V): a block, never V x V
    s[:, is_special] = -np.inf                         # specials are nobody's neighbour
    s[np.arange(stop - start), np.arange(start, stop)] = -np.inf
    top = np.argpartition(-s, k, axis=1)[:, :k]
    top_s = np.take_along_axis(s, top, 1)
    order = np.argsort(-top_s, axis=1, kind="stable")
    ids[start:stop] = np.take_along_axis(top, order, 1)
    sims[start:stop] = np.take_along_axis(top_s, order, 1)
  ids[is_special], sims[is_special] = PAD, -np.inf

  cap = max_in_degree or 4 * k
  valid = ids >= 0
  edge_dst = ids.ravel()[valid.ravel()]
  edge_sim = sims.ravel()[valid.ravel()]
  # Rank incoming edges of each destination by similarity; drop those beyond the cap.
  order = np.lexsort((-edge_sim, edge_dst))
  dst_sorted = edge_dst[order]
  first = np.searchsorted(dst_sorted, dst_sorted, side="left")
  rank = np.arange(len(order)) - first
  keep = np.zeros(len(order), bool)
  keep[order] = rank < cap
  kept = keep.reshape(-1)
  flat_valid = valid.ravel().copy()
  flat_valid[np.flatnonzero(valid.ravel())[~kept]] = False
  valid = flat_valid.reshape(V, k)
  logits = np.where(valid, sims / tau, -np.inf)
  logits -= np.where(np.isfinite(logits).any(1, keepdims=True),
                     np.max(np.where(valid, logits, -np.inf), 1, keepdims=True), 0.0)
  w = np.where(valid, np.exp(logits), 0.0)
  empty = w.sum(1) == 0
  # Specials (and rows whose edges were all pruned) keep themselves: N_x = delta_x.
  ids = np.where(valid, ids, PAD)
  ids[empty, 0] = np.arange(V)[empty]
  w[empty, 0] = 1.0
  w = (w / w.sum(1, keepdims=True)).astype(np.float32)
  table = NeighborTable("topk", ids.astype(np.int32), w, fingerprint,
                        special=np.asarray(list(special), np.int32))
  table.in_ids, table.in_weights = invert(table)
  return table


def invert(table: NeighborTable):
  """In-neighbours: for each z, the x with z in N_x and the weights N_x(z)."""
  V, k = table.ids.shape
  valid = table.ids.ravel() >= 0
  src = np.repeat(np.arange(V), k)[valid]
  dst = table.ids.ravel()[valid]
  w = table.weights.ravel()[valid]
  order = np.argsort(dst, kind="stable")
  src, dst, w = src[order], dst[order], w[order]
  degree = np.bincount(dst, minlength=V)
  k_in = max(int(degree.max()), 1)
  rank = np.arange(len(dst)) - np.concatenate([[0], np.cumsum(degree)[:-1]])[dst]
  in_ids = np.full((V, k_in), PAD, np.int32)
  in_w = np.zeros((V, k_in), np.float32)
  in_ids[dst, rank] = src
  in_w[dst, rank] = w
  return in_ids, in_w


def statistics(table: NeighborTable) -> dict:
  """Size and hubness statistics of a table (special tokens excluded)."""
  V = table.vocab_size
  regular = ~_special_mask(V, [] if table.special is None else table.special)
  out = {"kind": table.kind, "vocab_size": V, "k": table.k}
  if table.kind == "partition":
    sizes = np.bincount(table.cluster[regular])
    sizes = sizes[sizes > 0]
    out.update(clusters=int(len(sizes)), size_min=int(sizes.min()),
               size_mean=float(sizes.mean()), size_max=int(sizes.max()))
  else:
    in_degree = np.bincount(table.ids[table.ids >= 0], minlength=V)[regular]
    mean = in_degree.mean()
    out.update(in_degree_max=int(in_degree.max()), in_degree_p99=float(np.percentile(in_degree, 99)),
               never_a_neighbour=float((in_degree == 0).mean()),
               in_degree_skewness=float(((in_degree - mean) ** 3).mean()
                                        / max(in_degree.std(), 1e-12) ** 3),
               mean_top_weight=float(table.weights[regular, 0].mean()))
  return out


def build(emb: np.ndarray, kind: str, k: int, fingerprint: str, tau: float = 0.1,
          max_in_degree: int | None = None, seed: int = 0, special=SPECIAL) -> NeighborTable:
  if kind == "partition":
    return partition_table(balanced_partition(emb, k, seed, special), fingerprint, special)
  if kind == "topk":
    return topk_table(emb, k, tau, fingerprint, max_in_degree, special=special)
  raise UserError(f"neighbour table kind must be 'partition' or 'topk', got {kind!r}")


r"""Time and memory of building a corpus neighbour table at the headline scale (V = 50,257,
GPT-2's vocabulary; d = 256), per stage, for several corpus sizes in one run.

  python benchmarks/neighbors.py [--vocab_size=50257] [--dim=256] [--tokens=1000000,4000000]

On synthetic Zipfian text (the statistics, not the words, set the cost; real text repeats
more pairs, so its pair count grows more slowly): the streamed co-occurrence count (what
kernel.cooc_max_tokens caps), PPMI + randomized SVD, the balanced partition (A) and the
blocked top-k table with in-degree cap and inversion (B). Prints seconds per stage, the
count's seconds per million tokens, the token pairs held and the process's peak memory.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from dlm_jax.kernels import neighbors  # noqa: E402

flags.DEFINE_integer("vocab_size", 50257, "V.")
flags.DEFINE_integer("dim", 256, "Embedding dimension d.")
flags.DEFINE_list("tokens", ["1000000", "4000000"], "Synthetic corpus sizes (tokens).")
flags.DEFINE_integer("k", 8, "Neighbourhood size.")
flags.DEFINE_integer("seq_len", 1024, "Row length of the synthetic corpus.")
FLAGS = flags.FLAGS


def peak_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20      # Linux: KiB


def measure(V: int, d: int, tokens: int, k: int, seq_len: int) -> dict:
  rng = np.random.default_rng(0)
  p = 1.0 / np.arange(1, V + 1)
  rows = rng.choice(V, size=(tokens // seq_len, seq_len), p=p / p.sum()).astype(np.int32)
  out = {"tokens": int(rows.size)}
  start = time.perf_counter()
  counts = neighbors.cooccurrence(rows, V)
  out["count_s"] = time.perf_counter() - start
  out["count_s_per_million_tokens"] = out["count_s"] / (rows.size / 1e6)
  out["token_pairs"] = int(counts.nnz)
  out["pairs_mib"] = counts.nnz * 12 / 2**20
  start = time.perf_counter()
  m = neighbors.ppmi(counts)
  u, s = neighbors.randomized_svd(m, min(d, V - 2))
  emb = (u * np.sqrt(s)).astype(np.float32)
  out["ppmi_svd_s"] = time.perf_counter() - start
  for kind in ("partition", "topk"):
    start = time.perf_counter()
    neighbors.build(emb, kind, k, "bench", tau=0.1)
    out[f"{kind}_s"] = time.perf_counter() - start
  out["peak_gib_so_far"] = peak_gib()
  return out


def main(argv):
  del argv
  V, d = FLAGS.vocab_size, FLAGS.dim
  results = [measure(V, d, int(n), FLAGS.k, FLAGS.seq_len) for n in FLAGS.tokens]
  print(json.dumps({"vocab_size": V, "dim": d, "k": FLAGS.k, "runs": results}, indent=2))


if __name__ == "__main__":
  app.run(main)

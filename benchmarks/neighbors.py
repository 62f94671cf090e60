r"""Build time of the neighbour tables at realistic sizes (default V = 32768, d = 256).

  python benchmarks/neighbors.py [--vocab_size=32768] [--dim=256] [--tokens=4000000]

Times, on synthetic Zipfian text (the statistics, not the words, set the cost):
co-occurrence counting + PPMI + randomized SVD (corpus embeddings), the balanced
partition (A) and the blocked top-k table with in-degree cap and inversion (B).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from dlm_jax.kernels import neighbors  # noqa: E402

flags.DEFINE_integer("vocab_size", 32768, "V.")
flags.DEFINE_integer("dim", 256, "Embedding dimension d.")
flags.DEFINE_integer("tokens", 4_000_000, "Synthetic corpus size (tokens).")
flags.DEFINE_integer("k", 8, "Neighbourhood size.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  V, d = FLAGS.vocab_size, FLAGS.dim
  rng = np.random.default_rng(0)
  ranks = np.arange(1, V + 1)
  p = 1.0 / ranks
  p /= p.sum()
  rows = rng.choice(V, size=(FLAGS.tokens // 128, 128), p=p).astype(np.int32)
  out = {"vocab_size": V, "dim": d, "tokens": int(rows.size), "k": FLAGS.k}
  start = time.perf_counter()
  emb = neighbors.corpus_embeddings(rows, V, d)
  out["corpus_embeddings_s"] = time.perf_counter() - start
  for kind in ("partition", "topk"):
    start = time.perf_counter()
    table = neighbors.build(emb, kind, FLAGS.k, "bench", tau=0.1)
    out[f"{kind}_s"] = time.perf_counter() - start
    out[f"{kind}_stats"] = neighbors.statistics(table)
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  app.run(main)

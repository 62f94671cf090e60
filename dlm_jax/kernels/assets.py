"""The data-dependent parts of a kernel: the neighbour table and the unigram for p_1.

Tables are saved next to the tokenizer, named by their settings and the
vocabulary hash, and built when missing (by process 0; the others wait).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from dlm_jax.data import pipeline
from dlm_jax.errors import UserError
from dlm_jax.kernels import interpolating, neighbors

SEMANTIC = ("semdlm", "semdlm_plus")


def table_path(config, tokenizer, workdir: str) -> str:
  k = config.kernel
  if k.table_path:
    return k.table_path
  directory = os.path.dirname(os.path.abspath(pipeline.tokenizer_path(config.data, workdir)))
  tau = f"-tau{k.tau:g}-cap{k.max_in_degree}" if k.neighbors == "topk" else ""
  source = k.embedding_source if k.embedding_source == "corpus" else (
      f"{k.embedding_source}-{abs(hash(os.path.abspath(k.embedding_path))) % 10**8}")
  return os.path.join(directory, f"neighbors-{k.neighbors}-k{k.k}{tau}-{source}"
                      f"-d{k.embedding_dim}-{tokenizer.fingerprint()}.npz")


def token_embeddings(config, tokenizer, workdir: str) -> np.ndarray:
  k, V = config.kernel, tokenizer.vocab_size
  if k.embedding_source == "corpus":
    rows = pipeline.token_rows(config.data, "train", tokenizer, workdir)
    return neighbors.corpus_embeddings(rows, V, k.embedding_dim, k.cooc_window, config.seed)
  if k.embedding_source == "npy":
    if not os.path.exists(k.embedding_path):
      raise UserError(f"embedding file not found: {k.embedding_path}")
    emb = np.load(k.embedding_path)
  else:
    from dlm_jax import experiment  # pylint: disable=g-import-not-at-top
    _, params, _ = experiment.restore(k.embedding_path)
    emb = np.asarray(jax.device_get(params["embed"]["embedding"]))
  if emb.ndim != 2 or emb.shape[0] < V:
    raise UserError(f"embeddings from {k.embedding_path} have shape {emb.shape}; need ({V}, d)")
  return emb[:V]


def neighbor_table(config, tokenizer, workdir: str) -> neighbors.NeighborTable:
  path = table_path(config, tokenizer, workdir)
  k = config.kernel
  if not os.path.exists(path):
    if jax.process_index() == 0:
      start = time.perf_counter()
      emb = token_embeddings(config, tokenizer, workdir)
      table = neighbors.build(emb, k.neighbors, k.k, tokenizer.fingerprint(), k.tau,
                              k.max_in_degree or None, config.seed, tokenizer.special_ids)
      table.save(path)
      logging.warning("built %s neighbour table in %.1fs: %s", k.neighbors,
                      time.perf_counter() - start, neighbors.statistics(table))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("dlm_jax:neighbors")
  table = neighbors.NeighborTable.load(path)
  table.check_vocab(tokenizer.fingerprint(), tokenizer.vocab_size, path)
  if table.kind != k.neighbors:
    raise UserError(f"{path} holds a {table.kind!r} table but kernel.neighbors={k.neighbors!r}")
  return table


def build_kernel(config, tokenizer, workdir: str) -> interpolating.Kernel:
  """The configured kernel with its table and the training unigram (add-one smoothed) for p_1."""
  table = neighbor_table(config, tokenizer, workdir) if config.kernel.name in SEMANTIC else None
  counts = pipeline.unigram_counts(config.data, tokenizer, workdir)
  return interpolating.make_kernel(config.kernel, tokenizer.vocab_size, table, counts + 1.0)

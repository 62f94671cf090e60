"""The data-dependent parts of a new run's diffusion process, built from files: the
neighbour table and the training unigram for p_1. A saved run's process is restored from its
checkpoint instead (checkpoint.py); runs saved before checkpoints held it read their table
file and cached unigram here, never building either (`rebuild_process`).

A table file is named by a content hash (sha256) of everything that determines it: the
table settings, the seed, the tokenizer's vocabulary hash, and the embeddings' source
(the corpus rows' cache key, which covers the corpus files, or the embedding array
itself). Any host computes the same name. Tables live next to a SentencePiece
tokenizer trained here (shared by the runs that share it), and in `<workdir>/tables` for
the field tokenizers, whose files belong to installed packages; `kernel.table_path`
overrides both. Process 0 builds a missing table; the others wait.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from dlm_jax import numpy_files
from dlm_jax.checkpoint import Checkpointer
from dlm_jax.data.rows import cache_key, leading_rows, unigram_counts
from dlm_jax.data.tokenizer import tokenizer_path
from dlm_jax.errors import UserError
from dlm_jax.kernels import family, neighbors
from dlm_jax.kernels.process import Process


def _sha(payload) -> str:
  return hashlib.sha256(payload).hexdigest()[:16]


def _file_sha(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()[:16]


def checkpoint_embeddings(workdir: str) -> np.ndarray:
  """The token-embedding matrix (EMA parameters) of the latest checkpoint in `workdir`."""
  ckpt = Checkpointer(workdir, create=False)
  try:
    step = ckpt.latest_step()
  finally:
    ckpt.close()
  if step is None:
    raise UserError(f"no checkpoint in {workdir!r} to take embeddings from")
  return _restored_embeddings(os.path.abspath(workdir), step)


@functools.lru_cache(maxsize=1)
def _restored_embeddings(workdir: str, step: int) -> np.ndarray:
  """Read once per (workdir, step): naming a table hashes them, building it uses them."""
  ckpt = Checkpointer(workdir, create=False)
  try:
    return np.asarray(ckpt.restore_param(step, ("ema_params", "embed", "embedding")))
  finally:
    ckpt.close()


def _embeddings_file(k) -> np.ndarray:
  embeddings = numpy_files.load_npy(k.embedding_path, "embedding file")
  if embeddings.ndim != 2:
    raise UserError(f"embedding file {k.embedding_path} holds a {embeddings.ndim}-D array; "
                    "expected (vocab_size, dim)")
  return embeddings


def _source_id(config, tokenizer, workdir: str) -> str:
  k = config.kernel
  origin = k.embedding_source
  if origin == "corpus":
    capped = f"-t{k.cooc_max_tokens}" if k.cooc_max_tokens > 0 else ""    # 0: earlier names
    return f"corpus-{cache_key(config.data, 'train', tokenizer)}-w{k.cooc_window}{capped}"
  if origin == "npy":
    return f"npy-{_file_sha(k.embedding_path) if os.path.exists(k.embedding_path) else 'missing'}"
  return f"checkpoint-{_sha(np.ascontiguousarray(checkpoint_embeddings(k.embedding_path)))}"


def table_fingerprint(config, tokenizer, workdir: str) -> str:
  """The content hash a table for `config` carries in its file name and in checkpoints."""
  k = config.kernel
  settings = {"kind": k.neighbors, "k": k.k, "dim": k.embedding_dim, "seed": config.seed,
              "source": _source_id(config, tokenizer, workdir),
              "tokenizer": tokenizer.fingerprint(), "special": sorted(tokenizer.special_ids)}
  if k.neighbors == "topk":
    settings.update(tau=k.tau, max_in_degree=k.max_in_degree)
  return _sha(json.dumps(settings, sort_keys=True).encode())


def table_path(config, tokenizer, workdir: str) -> str:
  if config.kernel.table_path:
    return config.kernel.table_path
  if config.data.tokenizer == "sentencepiece":
    directory = os.path.dirname(os.path.abspath(tokenizer_path(config.data, workdir)))
  else:
    directory = os.path.join(os.path.abspath(workdir), "tables")
  name = f"neighbors-{config.kernel.neighbors}-{table_fingerprint(config, tokenizer, workdir)}.npz"
  return os.path.join(directory, name)


def _describe_source(k) -> str:
  origin = k.embedding_source
  if origin != "corpus":
    return f"the embeddings of {k.embedding_path}"
  cap = (f"the first {k.cooc_max_tokens / 1e6:g}M training tokens" if k.cooc_max_tokens > 0
         else "every training token; kernel.cooc_max_tokens caps it")
  return f"co-occurrences within {k.cooc_window} tokens over {cap}"


def token_embeddings(config, tokenizer, workdir: str) -> np.ndarray:
  k, V = config.kernel, tokenizer.vocab_size
  origin = k.embedding_source
  if origin == "corpus":
    rows = leading_rows(config.data, "train", tokenizer, workdir, k.cooc_max_tokens)
    return neighbors.corpus_embeddings(rows, V, k.embedding_dim, k.cooc_window, config.seed,
                                       progress=neighbors.Progress())
  emb = (_embeddings_file(k) if origin == "npy"
         else checkpoint_embeddings(k.embedding_path))
  if emb.ndim != 2 or emb.shape[0] < V:
    raise UserError(f"embeddings from {k.embedding_path} have shape {emb.shape}; need ({V}, d)")
  return emb[:V]


def neighbor_table(config, tokenizer, workdir: str, build: bool = True,
                   save: bool = True) -> neighbors.NeighborTable:
  """The table of `config`, built when missing if `build` (else a one-line error); `save`:
  the built table is written next to the tokenizer (else it is only returned)."""
  path = table_path(config, tokenizer, workdir)
  k = config.kernel
  if not os.path.exists(path):
    if not build:
      raise UserError(f"neighbour table {path} is missing; the commands that restore a run "
                      "never rebuild it: restore the file or retrain")
    if not save:
      emb = token_embeddings(config, tokenizer, workdir)
      return neighbors.build(emb, k.neighbors, k.k, tokenizer.fingerprint(), k.tau,
                             k.max_in_degree or None, config.seed, tokenizer.special_ids)
    if jax.process_index() == 0:
      start = time.perf_counter()
      print(f"building the {k.neighbors} neighbour table (k={k.k}, from {_describe_source(k)}) "
            f"into {path}; `python -m dlm_jax.kernels.build_neighbors` builds it ahead",
            flush=True)
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


def build_process(config, tokenizer, workdir: str) -> Process:
  """The configured process with its table and (family.needs_unigram) the training unigram,
  add-one smoothed, for p_1: what a new run trains. A saved run's process is restored from
  its checkpoint (checkpoint.py), never rebuilt here."""
  table = (neighbor_table(config, tokenizer, workdir)
           if config.kernel.name in family.SEMANTIC else None)
  unigram = (unigram_counts(config.data, tokenizer, workdir) + 1.0
             if family.needs_unigram(config.kernel) else None)
  return family.make_process(config.kernel, tokenizer.vocab_size, table, unigram)


def rebuild_process(config, tokenizer, workdir: str) -> Process:
  """The process of a run saved before checkpoints held it: today's recipe from the table
  file and the cached unigram, neither built nor tokenized (a one-line error names what is
  missing)."""
  table = (neighbor_table(config, tokenizer, workdir, build=False)
           if config.kernel.name in family.SEMANTIC else None)
  unigram = None
  if family.needs_unigram(config.kernel):
    counts = unigram_counts(config.data, tokenizer, workdir, build=False)
    if counts is None:
      raise UserError("this run was saved before checkpoints held its diffusion process, and "
                      "the training unigram it needs is not cached in the workdir "
                      "(data_cache/); restore the cache or resume training once with the "
                      "training data present (the next checkpoint then holds the process)")
    unigram = counts + 1.0
  return family.make_process(config.kernel, tokenizer.vocab_size, table, unigram)

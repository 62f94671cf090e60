"""Token rows and grain input pipelines.

Documents are tokenized once per (split, tokenizer, sequence settings) into an
int array of rows (N, L) cached under the workdir, then read by a grain
pipeline whose elements are *this process's slice of one global batch*:

- `wrap`: documents become [BOS] doc [EOS] and are concatenated and chunked
  into rows of L tokens (MDLM's OWT setup);
- `pad`: one document per row, [BOS] doc [EOS] truncated to L and right-padded
  with PAD (unwrapped LM1B).

Global batch k holds rows perm_e(k*B), ..., perm_e(k*B + B - 1) where perm_e is
a seeded Feistel permutation of epoch e; process p of P reads the contiguous
block [p*B/P, (p+1)*B/P) of it. The global batch is therefore the same for any
number of processes, and the iterator state is one integer (checkpointable).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from typing import Iterator

import grain
import jax
import numpy as np
from jax.experimental import multihost_utils

from dlm_jax.data import corpus
from dlm_jax.data.tokenizer import SentencePieceTokenizer, load_tokenizer, train_sentencepiece
from dlm_jax.errors import UserError

_ENCODE_CHUNK = 8192


def tokenizer_path(data_cfg, workdir: str) -> str:
  """SentencePiece default: <workdir>/tokenizer.model; field tokenizers: their file (or the
  copy found in an installed package when empty)."""
  if data_cfg.tokenizer != "sentencepiece":
    return data_cfg.tokenizer_path
  return data_cfg.tokenizer_path or os.path.join(workdir, "tokenizer.model")


def get_tokenizer(data_cfg, workdir: str, process_index: int = 0):
  """Loads the configured tokenizer; a missing SentencePiece model is trained into the workdir."""
  path = tokenizer_path(data_cfg, workdir)
  if data_cfg.tokenizer != "sentencepiece":
    return load_tokenizer(data_cfg.tokenizer, path)
  if not os.path.exists(path):
    if not data_cfg.train_tokenizer_if_missing:
      raise UserError(f"tokenizer file not found: {path} (set data.train_tokenizer_if_missing=True "
                      "or run `python -m dlm_jax.data.train_tokenizer`)")
    if process_index == 0:
      train_sentencepiece(corpus.documents(data_cfg, "train"), path, data_cfg.vocab_size,
                          data_cfg.tokenizer_model_type)
    if jax.process_count() > 1:  # the others wait for process 0's file (shared workdir)
      multihost_utils.sync_global_devices("dlm_jax:tokenizer")
  return SentencePieceTokenizer(path)


def _cache_key(data_cfg, split: str, tokenizer) -> str:
  relevant = {k: data_cfg[k] for k in ("source", "train_pattern", "validation_pattern",
                                       "validation_fraction", "text_unit", "text_field", "tokenizer",
                                       "tfds_name", "tfds_train_split", "tfds_validation_split",
                                       "seq_len", "mode")}
  relevant.update(split=split, tokenizer=tokenizer.fingerprint())
  return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _encode_all(docs, tokenizer) -> Iterator[list[int]]:
  chunk = []
  for doc in docs:
    chunk.append(doc)
    if len(chunk) == _ENCODE_CHUNK:
      yield from tokenizer.encode(chunk)
      chunk = []
  if chunk:
    yield from tokenizer.encode(chunk)


def iter_rows(docs, tokenizer, seq_len: int, mode: str) -> Iterator[np.ndarray]:
  """Streams (seq_len,) int32 rows from documents (see the module doc for the two modes)."""
  bos, eos, pad = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
  if mode not in ("wrap", "pad"):
    raise UserError(f"data.mode must be 'wrap' or 'pad', got {mode!r}")
  carry = np.zeros((0,), np.int32)
  for ids in _encode_all(docs, tokenizer):
    seq = np.asarray([bos, *ids, eos], np.int32)
    if mode == "pad":
      row = np.full((seq_len,), pad, np.int32)
      row[: min(len(seq), seq_len)] = seq[:seq_len]
      yield row
      continue
    carry = np.concatenate([carry, seq])
    n = len(carry) // seq_len
    yield from carry[: n * seq_len].reshape(n, seq_len)
    carry = carry[n * seq_len:]


def build_rows(docs, tokenizer, seq_len: int, mode: str) -> np.ndarray:
  """Tokenizes documents into an (N, seq_len) int32 array of rows."""
  rows = list(iter_rows(docs, tokenizer, seq_len, mode))
  return np.stack(rows) if rows else np.zeros((0, seq_len), np.int32)


class ArrayRecordRows:
  """Rows stored as ArrayRecord shards (written by `dlm_jax.data.prepare`), read through grain
  with the indexing the pipeline uses on arrays: rows[i], rows[[i, j]], rows[a:b]."""

  def __init__(self, paths: list[str], seq_len: int):
    self.source = grain.sources.ArrayRecordDataSource(paths)
    self.shape = (len(self.source), seq_len)

  def __len__(self) -> int:
    return self.shape[0]

  def _row(self, i) -> np.ndarray:
    return np.frombuffer(self.source[int(i)], np.int32)

  def __getitem__(self, index):
    if isinstance(index, slice):
      index = range(*index.indices(len(self)))
    elif np.ndim(index) == 0:
      return self._row(index)
    rows = [self._row(i) for i in index]
    return np.stack(rows) if rows else np.zeros((0, self.shape[1]), np.int32)


def prepared_rows(data_cfg, split: str, tokenizer):
  """Rows of `split` from data.prepared_dir, checked against the config and tokenizer."""
  meta_path = os.path.join(data_cfg.prepared_dir, f"{split}.json")
  if not os.path.exists(meta_path):
    raise UserError(f"no prepared {split} split in {data_cfg.prepared_dir} (expected "
                    f"{meta_path}); run `python -m dlm_jax.data.prepare`")
  with open(meta_path, encoding="utf-8") as f:
    meta = json.load(f)
  expected = {"seq_len": data_cfg.seq_len, "mode": data_cfg.mode,
              "tokenizer": tokenizer.fingerprint()}
  wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
  if wrong:
    raise UserError(f"{meta_path} was prepared with other settings "
                    + ", ".join(f"{k}: {a!r} (config: {b!r})" for k, (a, b) in wrong.items()))
  paths = [os.path.join(data_cfg.prepared_dir, name) for name in meta["shards"]]
  return ArrayRecordRows(paths, data_cfg.seq_len)


def token_rows(data_cfg, split: str, tokenizer, workdir: str) -> np.ndarray:
  """Rows of `split`: from data.prepared_dir (ArrayRecord) when set, else from the workdir cache
  (memory-mapped .npy), tokenizing the corpus into it the first time."""
  if data_cfg.prepared_dir:
    return prepared_rows(data_cfg, split, tokenizer)
  cache_dir = data_cfg.cache_dir or os.path.join(workdir, "data_cache")
  path = os.path.join(cache_dir, f"{split}-{_cache_key(data_cfg, split, tokenizer)}.npy")
  if os.path.exists(path):
    return np.load(path, mmap_mode="r")
  rows = build_rows(corpus.documents(data_cfg, split), tokenizer, data_cfg.seq_len, data_cfg.mode)
  if len(rows) == 0:
    raise UserError(f"the {split} split has fewer than seq_len={data_cfg.seq_len} tokens: "
                    "add text or lower data.seq_len")
  os.makedirs(cache_dir, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npy", delete=False) as f:
    np.save(f, rows)
  os.replace(f.name, path)
  return rows


def unigram_counts(data_cfg, tokenizer, workdir: str) -> np.ndarray:
  """Token counts of the training split (V,), cached beside its rows."""
  cache_dir = data_cfg.cache_dir or os.path.join(workdir, "data_cache")
  path = os.path.join(cache_dir, f"unigram-{_cache_key(data_cfg, 'train', tokenizer)}.npy")
  if os.path.exists(path):
    return np.load(path)
  rows = token_rows(data_cfg, "train", tokenizer, workdir)
  counts = np.zeros((tokenizer.vocab_size,), np.int64)
  for start in range(0, len(rows), 65536):
    counts += np.bincount(np.asarray(rows[start:start + 65536]).ravel(),
                          minlength=tokenizer.vocab_size)[: tokenizer.vocab_size]
  with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npy", delete=False) as f:
    np.save(f, counts)
  os.replace(f.name, path)
  return counts


class ShuffledBatches:
  """Random-access source: index i -> this process's rows of global batch i."""

  def __init__(self, rows: np.ndarray, global_batch: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    if global_batch % process_count:
      raise UserError(f"batch_size={global_batch} is not divisible by {process_count} processes")
    if len(rows) < global_batch:
      raise UserError(f"the training split has {len(rows)} rows of length {rows.shape[1]}, fewer "
                      f"than batch_size={global_batch}: add text or lower the batch size")
    self.rows, self.global_batch, self.seed = rows, global_batch, seed
    self.local_batch = global_batch // process_count
    self.offset = process_index * self.local_batch
    self.batches_per_epoch = len(rows) // global_batch

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    epoch, b = divmod(int(i), self.batches_per_epoch)
    start = b * self.global_batch + self.offset
    seed = (self.seed * 1_000_003 + epoch) % (2**31)
    idx = [grain.experimental.index_shuffle(g, max_index=len(self.rows) - 1, seed=seed, rounds=4)
           for g in range(start, start + self.local_batch)]
    return {"tokens": np.asarray(self.rows[idx], np.int32)}


def train_iterator(rows: np.ndarray, global_batch: int, seed: int, process_index: int = 0,
                   process_count: int = 1, worker_count: int = 0):
  """A checkpointable grain iterator over local batches (see ShuffledBatches)."""
  ds = grain.MapDataset.source(ShuffledBatches(rows, global_batch, seed, process_index,
                                               process_count)).to_iter_dataset()
  if worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(ds)


def eval_batches(rows: np.ndarray, global_batch: int, process_index: int = 0,
                 process_count: int = 1, max_batches: int = 0,
                 pad_id: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """One deterministic pass over the rows; the last batch is padded with invalid rows."""
  local = global_batch // process_count
  n_batches = -(-len(rows) // global_batch)
  if max_batches:
    n_batches = min(n_batches, max_batches)
  for b in range(n_batches):
    start = b * global_batch + process_index * local
    chunk = np.asarray(rows[start: start + local], np.int32)
    valid = np.zeros((local,), np.float32)
    valid[: len(chunk)] = 1.0
    if len(chunk) < local:
      chunk = np.concatenate([chunk, np.full((local - len(chunk), rows.shape[1]), pad_id, np.int32)])
    yield {"tokens": chunk, "valid": valid}

"""Token rows: documents -> (N, L) int32 rows, cached under the workdir or read from
ArrayRecord shards written by `dlm_jax.data.prepare`.

- `wrap`: documents become [BOS] doc [EOS] and are concatenated and chunked into rows of
  L tokens (MDLM's OWT setup);
- `pad`: one document per row, [BOS] doc [EOS] truncated to L and right-padded with PAD
  (unwrapped LM1B).

A cache file is named by a hash of everything that determines its rows: the whole
`config.data` (minus the settings that cannot change them, `ROW_INDEPENDENT`), the split,
the tokenizer's vocabulary hash and the corpus files (names, sizes, modification times).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Iterator

import grain
import numpy as np

from dlm_jax.data import corpus
from dlm_jax.errors import UserError

_ENCODE_CHUNK = 8192
MODES = ("wrap", "pad")

# config.data keys that cannot change the rows of a split.
ROW_INDEPENDENT = ("cache_dir", "prepared_dir", "worker_count", "train_tokenizer_if_missing",
                   "tokenizer_path")


def cache_key(data_cfg, split: str, tokenizer) -> str:
  relevant = {k: v for k, v in data_cfg.to_dict().items() if k not in ROW_INDEPENDENT}
  relevant.update(split=split, tokenizer=tokenizer.fingerprint(),
                  corpus=corpus.fingerprint(data_cfg))
  return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _cache_dir(data_cfg, workdir: str) -> str:
  return data_cfg.cache_dir or os.path.join(workdir, "data_cache")


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
  if mode not in MODES:
    raise UserError(f"data.mode must be one of {list(MODES)}, got {mode!r}")
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
  cache_dir = _cache_dir(data_cfg, workdir)
  path = os.path.join(cache_dir, f"{split}-{cache_key(data_cfg, split, tokenizer)}.npy")
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
  cache_dir = _cache_dir(data_cfg, workdir)
  path = os.path.join(cache_dir, f"unigram-{cache_key(data_cfg, 'train', tokenizer)}.npy")
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



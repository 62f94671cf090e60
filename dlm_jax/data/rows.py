"""Token rows: documents -> (N, L) int32 rows, cached under the workdir or read from
ArrayRecord shards written by `dlm_jax.data.prepare`.

`data.mode` chooses packing, `data.convention` whose row layout (README "Data conventions"):

| convention | wrap (concatenate, cut rows of L)               | pad (one document per row)       |
|------------|--------------------------------------------------|----------------------------------|
| dlm_jax    | ... [BOS] doc [EOS] [BOS] doc ... cut every L    | [BOS] doc [EOS] cut to L, PAD     |
| mdlm       | [BOS] + L-2 tokens of `doc EOS doc EOS ...` + [EOS]; each group of 1000 documents is cut on its own and its remainder dropped | [BOS] doc[:L-2] [EOS], PAD (BERT truncation keeps [SEP]) |
| md4        | `doc EOS doc EOS ...` cut every L; validation = 2% of each 100k-document group's rows, shuffled | (not defined) |

PAD: under `mdlm` PAD positions are excluded from the loss and from the token count (MDLM's
LM1B rule: the number is then not a bound on the padded row); otherwise they are modelled
(part of the bound) and not counted (`pad_in_loss`).

A cache file is named by a hash of everything that determines its rows: the whole
`config.data` (minus the settings that cannot change them, `ROW_INDEPENDENT`), the split,
the tokenizer's vocabulary hash and the corpus files (names, sizes, modification times).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from typing import Iterable, Iterator

import grain
import numpy as np

from dlm_jax.data import sources
from dlm_jax import atomic_files
from dlm_jax.errors import UserError

_ENCODE_CHUNK = 8192
MODES = ("wrap", "pad")
CONVENTIONS = ("dlm_jax", "mdlm", "md4")
# MDLM groups with `datasets.map(batched=True)`: batches of 1000 documents, each cut on its own.
# (With num_proc > 1 the batches restart at each worker's shard boundary: exact row identity
# with an MDLM cache also needs its num_proc; README "Data conventions".)
MDLM_GROUP_DOCUMENTS = 1000
MD4_GROUP_DOCUMENTS, MD4_HELDOUT_FRACTION = 100_000, 0.02

# config.data keys that cannot change the rows of a split.
ROW_INDEPENDENT = ("cache_dir", "prepared_dir", "worker_count", "train_tokenizer_if_missing",
                   "tokenizer_path")


def pad_in_loss(convention: str) -> bool:
  """Whether PAD positions enter the NELBO sum (they never enter the token count)."""
  return convention != "mdlm"


def pad_rule(convention: str) -> str:
  """The PAD rule in words, reported next to every NELBO."""
  if pad_in_loss(convention):
    return ("PAD modelled, not counted: its loss is in the sum (a bound on the padded row), "
            "the per-token figure divides by non-PAD tokens")
  return ("PAD excluded from the loss and the count (MDLM's rule): not a bound on the padded "
          "row, whose PAD positions the model also sees")


@dataclasses.dataclass(frozen=True)
class Layout:
  """How documents become rows (see the module doc)."""
  seq_len: int
  mode: str = "wrap"
  convention: str = "dlm_jax"
  insert_eos: bool = True     # mdlm wrap: EOS after each document (False: Duo's zero-shot rows)

  @classmethod
  def of(cls, data_cfg) -> "Layout":
    return cls(data_cfg.seq_len, data_cfg.mode, data_cfg.convention)

  def check(self):
    if self.mode not in MODES:
      raise UserError(f"data.mode must be one of {list(MODES)}, got {self.mode!r}")
    if self.convention not in CONVENTIONS:
      raise UserError(f"data.convention must be one of {list(CONVENTIONS)}, "
                      f"got {self.convention!r}")
    if self.convention == "md4" and self.mode != "wrap":
      raise UserError("data.convention='md4' defines wrapped rows only: set data.mode='wrap'")
    if self.convention == "mdlm" and self.seq_len < 3:
      raise UserError(f"data.convention='mdlm' needs data.seq_len >= 3 (BOS, a token, EOS), "
                      f"got {self.seq_len}")

  @property
  def rows_start_with_bos(self) -> bool:
    """Whether every row starts with BOS (dlm_jax wrap and md4 rows start anywhere)."""
    return self.convention == "mdlm" or (self.convention == "dlm_jax" and self.mode == "pad")


def sample_prefix(tokenizer, data_cfg) -> list[int]:
  """The tokens every sample starts with: BOS where every training row starts with one;
  nothing where rows start anywhere in a document (a clamped BOS would ask for a document's
  first tokens, seen once per document) and for the planted language (no special tokens)."""
  if tokenizer.kind == "planted" or not Layout.of(data_cfg).rows_start_with_bos:
    return []
  return [tokenizer.bos_id]


def data_fingerprint(data_cfg) -> str:
  """What a resumed run must find unchanged: the prepared shards' descriptions when
  data.prepared_dir is set, else what the source reads (sources.fingerprint)."""
  if not data_cfg.prepared_dir:
    return sources.fingerprint(data_cfg)
  described = []
  for split in sources.SPLITS:
    path = os.path.join(data_cfg.prepared_dir, f"{split}.json")
    if os.path.exists(path):
      with open(path, "rb") as f:
        described.append(hashlib.sha256(f.read()).hexdigest())
  return "prepared:" + hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]


def _as_flat_dict(data_cfg) -> dict:
  """config.data with each source group under its flat names of before (data.hf_name, ...):
  the cache keys and table fingerprints of runs saved before the groups stay the same."""
  out = data_cfg.to_dict()
  for name in sources.REGISTRY:
    if isinstance(out.get(name), dict):
      out.update({f"{name}_{key}": value for key, value in out.pop(name).items()})
  return out


def cache_key(data_cfg, split: str, tokenizer) -> str:
  relevant = {k: v for k, v in _as_flat_dict(data_cfg).items() if k not in ROW_INDEPENDENT}
  relevant.update(split=split, tokenizer=tokenizer.fingerprint(),
                  corpus=sources.fingerprint(data_cfg))
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


def _cut(stream: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
  """(rows of `width` cut from the front of `stream`, the remainder)."""
  n = len(stream) // width
  return stream[: n * width].reshape(n, width), stream[n * width:]


def _padded(ids: list[int], tokenizer, layout: Layout) -> np.ndarray:
  L = layout.seq_len
  if layout.convention == "mdlm":
    seq = [tokenizer.bos_id, *ids[: L - 2], tokenizer.eos_id]
  else:
    seq = [tokenizer.bos_id, *ids, tokenizer.eos_id][:L]
  row = np.full((L,), tokenizer.pad_id, np.int32)
  row[: len(seq)] = seq
  return row


def _groups(encoded: Iterable[list[int]], size: int) -> Iterator[list[list[int]]]:
  group = []
  for ids in encoded:
    group.append(ids)
    if len(group) == size:
      yield group
      group = []
  if group:
    yield group


def _wrapped_dlm_jax(encoded, tokenizer, L: int) -> Iterator[np.ndarray]:
  carry = np.zeros((0,), np.int32)
  for ids in encoded:
    rows, carry = _cut(np.concatenate([carry, [tokenizer.bos_id, *ids, tokenizer.eos_id]])
                       .astype(np.int32), L)
    yield from rows


def _wrapped_mdlm(encoded, tokenizer, L: int, insert_eos: bool) -> Iterator[np.ndarray]:
  tail = [tokenizer.eos_id] if insert_eos else []
  for group in _groups(encoded, MDLM_GROUP_DOCUMENTS):
    stream = np.asarray([i for ids in group for i in (*ids, *tail)], np.int32)
    payload, _ = _cut(stream, L - 2)                 # the group's remainder is dropped
    for row in payload:
      yield np.concatenate([[tokenizer.bos_id], row, [tokenizer.eos_id]]).astype(np.int32)


def _wrapped_md4(encoded, tokenizer, L: int, split: str) -> Iterator[np.ndarray]:
  carry = np.zeros((0,), np.int32)
  for g, group in enumerate(_groups(encoded, MD4_GROUP_DOCUMENTS)):
    stream = np.concatenate([carry, [i for ids in group for i in (*ids, tokenizer.eos_id)]])
    rows, carry = _cut(stream.astype(np.int32), L)
    # md4 shuffles each group's rows without a seed; this is the same law with a fixed one.
    rows = rows[np.random.default_rng([0, g]).permutation(len(rows))]
    n_val = int(len(rows) * MD4_HELDOUT_FRACTION)
    yield from (rows[:n_val] if split == "validation" else rows[n_val:])


def iter_rows(docs, tokenizer, layout: Layout, split: str = "train") -> Iterator[np.ndarray]:
  """Streams (seq_len,) int32 rows from documents (see the module doc). `split` matters only
  for md4, whose split is drawn from the rows of all documents."""
  layout.check()
  encoded = _encode_all(docs, tokenizer)
  if layout.mode == "pad":
    return (_padded(ids, tokenizer, layout) for ids in encoded)
  if layout.convention == "mdlm":
    return _wrapped_mdlm(encoded, tokenizer, layout.seq_len, layout.insert_eos)
  if layout.convention == "md4":
    return _wrapped_md4(encoded, tokenizer, layout.seq_len, split)
  return _wrapped_dlm_jax(encoded, tokenizer, layout.seq_len)


def build_rows(docs, tokenizer, layout: Layout, split: str = "train") -> np.ndarray:
  """Tokenizes documents into an (N, seq_len) int32 array of rows."""
  rows = list(iter_rows(docs, tokenizer, layout, split))
  return np.stack(rows) if rows else np.zeros((0, layout.seq_len), np.int32)


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
              "convention": data_cfg.convention, "tokenizer": tokenizer.fingerprint()}
  meta.setdefault("convention", "dlm_jax")      # prepared before conventions existed
  wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
  if wrong:
    raise UserError(f"{meta_path} was prepared with other settings "
                    + ", ".join(f"{k}: {a!r} (config: {b!r})" for k, (a, b) in wrong.items()))
  paths = [os.path.join(data_cfg.prepared_dir, name) for name in meta["shards"]]
  try:
    rows = ArrayRecordRows(paths, data_cfg.seq_len)
  except (RuntimeError, OSError) as error:
    for path in paths:             # name the shard that cannot be opened
      try:
        grain.sources.ArrayRecordDataSource([path])
      except (RuntimeError, OSError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"shard {path} of {meta_path} cannot be read ({reason}): prepare the "
                        f"{split} split again") from None
    raise UserError(f"the shards of {meta_path} cannot be read ({error}): prepare the "
                    f"{split} split again") from None
  # The shards themselves, against their description: a first and a last row of seq_len ids.
  if "rows" in meta and len(rows) != meta["rows"]:
    raise UserError(f"{meta_path} describes {meta['rows']} rows, its shards hold {len(rows)}")
  for i in {0, len(rows) - 1} if len(rows) else ():
    found = len(rows.source[i]) / 4
    if found != data_cfg.seq_len:
      raise UserError(f"the shards of {meta_path} hold rows of {found:g} tokens, not seq_len="
                      f"{data_cfg.seq_len} as described: prepare them again")
  return rows


def _load_cache(path: str, mmap_mode=None):
  """A cached array, or None when absent; a damaged one (truncated, empty, not .npy) is
  removed with a warning, to be rebuilt from the corpus."""
  if not os.path.exists(path):
    return None
  try:
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    print(f"warning: cache file {path} is damaged ({type(e).__name__}); rebuilding it from the "
          "corpus", flush=True)
    os.remove(path)
    return None


def _save_cache(path: str, array: np.ndarray) -> None:
  """Writes a cache file atomically (a temporary file renamed), creating its directory."""
  try:
    with atomic_files.replace_on_success(path, "token cache", suffix=".npy") as f:
      np.save(f, array)
  except UserError as e:
    raise UserError(f"{e}; set data.cache_dir to a writable directory") from None


def token_rows(data_cfg, split: str, tokenizer, workdir: str, build: bool = True):
  """Rows of `split`: from data.prepared_dir (ArrayRecord) when set, else from the workdir cache
  (memory-mapped .npy), tokenizing the corpus into it the first time (or, with build=False,
  returning None: a reader that must not start tokenizing a corpus)."""
  if data_cfg.prepared_dir:
    return prepared_rows(data_cfg, split, tokenizer)
  drawn = sources.build(data_cfg).rows(split)
  if drawn is not None:
    return drawn
  path = os.path.join(_cache_dir(data_cfg, workdir),
                      f"{split}-{cache_key(data_cfg, split, tokenizer)}.npy")
  cached = _load_cache(path, mmap_mode="r")
  if cached is not None or not build:
    return cached
  rows = build_rows(sources.documents(data_cfg, split), tokenizer, Layout.of(data_cfg), split)
  if len(rows) == 0:
    raise UserError(f"the {split} split has fewer than seq_len={data_cfg.seq_len} tokens: "
                    "add text or lower data.seq_len")
  _save_cache(path, rows)
  return rows


def leading_rows(data_cfg, split: str, tokenizer, workdir: str, max_tokens: int):
  """The first max_tokens tokens of `split` as whole rows (all of it when max_tokens <= 0):
  read from data.prepared_dir or the workdir cache when there, else tokenized from the start
  of the corpus and no further (never the whole split). The same rows either way: the cache
  and the prepared shards hold the rows in corpus order."""
  if max_tokens <= 0:
    return token_rows(data_cfg, split, tokenizer, workdir)
  count = max(1, max_tokens // data_cfg.seq_len)
  rows = token_rows(data_cfg, split, tokenizer, workdir, build=False)
  if rows is not None:
    return rows[:count] if isinstance(rows, np.ndarray) else _Head(rows, count)
  head = list(itertools.islice(iter_rows(sources.documents(data_cfg, split), tokenizer,
                                         Layout.of(data_cfg), split), count))
  if not head:
    raise UserError(f"the {split} split has fewer than seq_len={data_cfg.seq_len} tokens: "
                    "add text or lower data.seq_len")
  return np.stack(head)


class _Head:
  """The first `count` rows of a row source, indexed as it is (rows[a:b], len)."""

  def __init__(self, rows, count: int):
    self.rows, self.count = rows, min(count, len(rows))
    self.shape = (self.count,) + tuple(rows.shape[1:])

  def __len__(self) -> int:
    return self.count

  def __getitem__(self, index: slice):
    return self.rows[slice(*index.indices(self.count))]


def unigram_counts(data_cfg, tokenizer, workdir: str, build: bool = True):
  """Token counts of the training split (V,), cached beside its rows; None when `build` is
  False and they are not cached."""
  path = os.path.join(_cache_dir(data_cfg, workdir),
                      f"unigram-{cache_key(data_cfg, 'train', tokenizer)}.npy")
  cached = _load_cache(path)
  if cached is not None or not build:
    return cached
  rows = token_rows(data_cfg, "train", tokenizer, workdir)
  counts = np.zeros((tokenizer.vocab_size,), np.int64)
  for start in range(0, len(rows), 65536):
    counts += np.bincount(np.asarray(rows[start:start + 65536]).ravel(),
                          minlength=tokenizer.vocab_size)[: tokenizer.vocab_size]
  _save_cache(path, counts)
  return counts



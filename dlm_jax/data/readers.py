"""Readers of raw text: glob lists of .txt / .jsonl files, Hugging Face datasets (local cache
or save_to_disk directories), and the held-out tail of a document list. What a data source
reads is decided in `dlm_jax/data/sources/`; these functions only read."""

from __future__ import annotations

import glob
import json
import os
import pathlib
import re
import stat
from typing import Iterator

from dlm_jax.errors import UserError

TEXT_UNITS = ("file", "paragraph", "line")


def _split_units(text: str, unit: str) -> list[str]:
  if unit == "file":
    return [text] if text.strip() else []
  if unit == "paragraph":
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
  if unit == "line":
    return [l.strip() for l in text.splitlines() if l.strip()]
  raise UserError(f"data.text_unit must be one of {list(TEXT_UNITS)}, got {unit!r}")


def paths(pattern: str) -> list[str]:
  """The files of a comma-separated glob list; a part that matches nothing (a typo) or a
  directory is an error."""
  found_all = []
  parts = [part.strip() for part in pattern.split(",") if part.strip()]
  for part in parts:
    found = _glob(os.path.expanduser(part))
    if not found and len(parts) > 1:
      raise UserError(f"data pattern part {part!r} (of {pattern!r}) matches no file")
    folders = [p for p in found if os.path.isdir(p)]
    if folders:
      raise UserError(f"data pattern {part!r} matches the directory {folders[0]!r}; match files "
                      "(e.g. dir/*.txt)")
    special = [p for p in found if not stat.S_ISREG(os.stat(p).st_mode)]
    if special:       # a FIFO would block the read forever
      raise UserError(f"data pattern {part!r} matches {special[0]!r}, which is not a regular "
                      "file (a FIFO, socket or device): match files only")
    found_all.extend(found)
  # One file read once, whatever links lead to it (symbolic or hard: it could otherwise be in
  # both splits).
  unique = {}
  for path in sorted(set(found_all)):
    unique.setdefault(file_id(path), path)
  return sorted(unique.values())


def file_id(path: str) -> tuple:
  """What makes two paths one file: its device and inode (symbolic and hard links alike)."""
  st = os.stat(path)
  return st.st_dev, st.st_ino


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
    try:
      value.encode("utf-8")
    except UnicodeEncodeError:
      raise UserError(f"{path}:{lineno}: field {text_field!r} holds a lone surrogate escape "
                      "(\\ud800-\\udfff), which is not text; fix or remove the line") from None
    docs.extend(_split_units(value, "file"))
  return docs


def read_text_files(pattern: str, text_unit: str, text_field: str,
                    exclude: frozenset = frozenset()) -> list[str]:
  """Documents from files matching a glob: `.txt` split by `text_unit`, `.jsonl` one per line.
  Files whose `file_id` is in `exclude` (the validation files) are left out."""
  matched = paths(pattern)
  if not matched:
    raise UserError(f"no files match data pattern {pattern!r}")
  kept = [p for p in matched if file_id(p) not in exclude]
  if not kept:
    raise UserError(f"every file of data pattern {pattern!r} is a validation file "
                    "(data.validation_pattern): nothing is left to train on")
  docs = []
  for path in kept:
    if path.endswith(".jsonl"):
      docs.extend(jsonl_documents(path, text_field))
    else:
      docs.extend(_split_units(_read_utf8(path), text_unit))
  if not docs:
    raise UserError(f"the corpus {pattern!r} is empty: {len(kept)} file(s), no text")
  return docs


def tree_stats(path: str) -> list:
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


def holdout(docs: list[str], split: str, count: int, fraction: float) -> list[str]:
  """The last `count` documents (or, if 0, the last `fraction` of them) for "validation",
  the others for "train"."""
  n_val = count or max(1, int(round(len(docs) * fraction)))
  if n_val >= len(docs):
    held = f"validation_documents={count}" if count else f"validation_fraction={fraction}"
    raise UserError(f"corpus has {len(docs)} document(s): too few to hold out {held}; add "
                    "text or set data.validation_pattern")
  return docs[:-n_val] if split == "train" else docs[-n_val:]


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
                        f"e.g. data.hf.train_split='{own}[:-1000]' and "
                        f"data.hf.validation_split='{own}[-1000:]' (got {split!r})")
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

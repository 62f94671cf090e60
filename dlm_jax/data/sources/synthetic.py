"""The planted language (`data.source='synthetic'`, data/planted.py): rows drawn from a
distribution whose likelihood and entropy are known exactly. It brings its own vocabulary
(`data.tokenizer='planted'`) and its oracle (the exact log-likelihood)."""

from __future__ import annotations

import math

from dlm_jax.data import planted
from dlm_jax.data.sources.base import Source
from dlm_jax.errors import UserError


class Planted(Source):
  name = "synthetic"
  title = "the planted language"
  tokenizer_name = "planted"
  defaults = dict(
      topics=8,                   # topics (V = 4 + 24 + 48 * topics),
      seed=0,                     # the seed of its word / cluster probabilities,
      train_rows=50_000,          # and the rows drawn for each split (seq_len tokens each)
      validation_rows=2_000,
  )

  def check(self):
    own, d = self.own, self.data
    if d.tokenizer != self.tokenizer_name:
      raise UserError("data.source='synthetic' and data.tokenizer='planted' go together (the "
                      f"planted language's rows are its words' ids); got tokenizer="
                      f"{d.tokenizer!r}")
    if min(own.train_rows, own.validation_rows, own.topics) < 1:
      raise UserError("data.synthetic.train_rows, validation_rows and topics must be >= 1")

  def fingerprint_parts(self) -> list:
    own = self.own
    return ["synthetic", own.topics, own.seed, own.train_rows, own.validation_rows]

  def rows(self, split: str):
    return planted.split_rows(self.data, split)

  def describe(self) -> str:
    lang = self.oracle()
    bits = planted.entropy_per_token(lang, self.data.seq_len) / math.log(2)
    return (f"rows of {self.data.seq_len} drawn from the planted language (data/planted.py, "
            f"V = {lang.vocab_size}): exact entropy {bits:.3f} bits/token")

  def tokenizer(self):
    return planted.PlantedTokenizer(self.oracle())

  def vocab_size(self) -> int:
    return self.oracle().vocab_size

  def oracle(self):
    return planted.config_language(self.data)

"""A Hugging Face dataset (`data.source='hf'`), from the local cache or a save_to_disk
directory; never downloads. Splits use the `datasets` slicing syntax (`train[:-100000]`,
`train[-100000:]`, `test[:10%]`)."""

from __future__ import annotations

from dlm_jax.data import readers
from dlm_jax.data.sources.base import Source
from dlm_jax.errors import UserError


class HuggingFace(Source):
  name = "hf"
  title = "a Hugging Face dataset"
  reads = ("text_field",)
  defaults = dict(
      name="",                    # dataset name (local cache) or save_to_disk directory
      config="",
      train_split="train",        # datasets split syntax: train[:-100000], test[:10%], ...
      validation_split="validation",
      cache_dir="",               # empty: the default Hugging Face cache
  )

  def check(self):
    if not self.own.name:
      raise UserError("data.source='hf' needs data.hf.name (a Hugging Face dataset name in "
                      "the local cache, or a save_to_disk directory)")

  def documents(self, split: str):
    own = self.own
    hf_split = own.validation_split if split == "validation" else own.train_split
    return readers.hf_documents(own.name, own.config, hf_split, self.data.text_field,
                                own.cache_dir, split_by_slices=True)

  def fingerprint_parts(self) -> list:
    own = self.own
    return [own.name, own.config, own.train_split, own.validation_split,
            readers.tree_stats(own.name)]

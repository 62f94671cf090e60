"""A prepared TensorFlow Datasets dataset (`data.source='tfds'`); never downloads."""

from __future__ import annotations

from dlm_jax.data.sources.base import Source
from dlm_jax.errors import UserError


class Tfds(Source):
  name = "tfds"
  title = "a TFDS dataset"
  reads = ("text_field",)
  defaults = dict(
      name="lm1b",
      data_dir="",                # empty: ~/tensorflow_datasets
      train_split="train",
      validation_split="test",
  )

  def documents(self, split: str):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    own = self.own
    tfds_split = own.validation_split if split == "validation" else own.train_split
    try:
      source = tfds.data_source(own.name, split=tfds_split, data_dir=own.data_dir or None,
                                download=False)
    except Exception as e:  # tfds raises several types for "not prepared"
      raise UserError(f"TFDS dataset {own.name!r} split {tfds_split!r} is not available under "
                      f"data_dir={own.data_dir or '~/tensorflow_datasets'} "
                      f"({type(e).__name__}); prepare it first") from None
    if len(source) == 0:
      raise UserError(f"TFDS dataset {own.name!r} split {tfds_split!r} is empty")
    field = self.data.text_field

    def generate():
      for record in source:
        text = record[field]
        yield text.decode("utf-8") if isinstance(text, bytes) else str(text)
    return generate()

  def fingerprint_parts(self) -> list:
    own = self.own       # prepared TFDS datasets are versioned
    return ["tfds", own.name, own.data_dir, own.train_split, own.validation_split]

"""Data sources, one module each, chosen once by `config.data.source` (`build`).

Adding a source: a module here with a `Source` subclass (base.py says what it implements),
and its class in REGISTRY below. Its `defaults` become `config.data.<name>.*`."""

from __future__ import annotations

import hashlib
import json

from dlm_jax.data import detokenizers
from dlm_jax.data.sources import files, hf, synthetic, tfds
from dlm_jax.data.sources.base import SHARED_KEYS, Source  # noqa: F401
from dlm_jax.errors import UserError

REGISTRY = {cls.name: cls for cls in (files.Quickstart, files.Files, hf.HuggingFace,
                                      tfds.Tfds, synthetic.Planted)}
SOURCES = tuple(REGISTRY)
SPLITS = ("train", "validation")


def build(data_cfg) -> Source:
  """The source `data_cfg.source` names."""
  if data_cfg.source not in REGISTRY:
    raise UserError(f"unknown data.source {data_cfg.source!r}; expected one of {list(SOURCES)}")
  return REGISTRY[data_cfg.source](data_cfg)


def documents(data_cfg, split: str):
  """All documents of `split`, detokenized by data.detokenizer when set. Under
  data.convention='md4' both splits read every training document: md4 holds out rows, not
  documents (data/rows.py)."""
  if split not in SPLITS:
    raise UserError(f"unknown split {split!r}; expected one of {SPLITS}")
  docs = build(data_cfg).documents("all" if data_cfg.convention == "md4" else split)
  name = data_cfg.detokenizer
  return (detokenizers.detokenize(name, d) for d in docs) if name else docs


def fingerprint(data_cfg) -> str:
  """A hash of what the source reads (the files' names, sizes and modification times; a
  dataset's name and splits): a resumed run must find it unchanged."""
  parts = build(data_cfg).fingerprint_parts()
  return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]

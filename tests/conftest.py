"""Shared fixtures: a small real-text corpus (the stdlib's pydoc topics) and tiny configs."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from absl import flags  # noqa: E402

# grain and absl-using code expect parsed flags.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


def write_corpus(directory: str) -> str:
  """Writes pydoc's help topics (~0.5 MB of English) as a .jsonl corpus; returns the glob."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "topics.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    for name in sorted(topics.topics):
      f.write(json.dumps({"title": name, "text": topics.topics[name]}) + "\n")
  return path


@pytest.fixture(scope="session")
def corpus_glob(tmp_path_factory):
  return write_corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="session")
def shared_tokenizer(tmp_path_factory, corpus_glob):
  """A 256-piece SentencePiece model trained once on the test corpus."""
  from dlm_jax.data.pipeline import get_tokenizer  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(corpus_glob)
  path = str(tmp_path_factory.mktemp("tok") / "tokenizer.model")
  cfg.data.tokenizer_path = path
  get_tokenizer(cfg.data, os.path.dirname(path))
  return path


def tiny_config(corpus_glob: str, tokenizer_path: str = ""):
  """A 2-layer, 32-wide model on 32-token rows: compiles and steps in seconds on CPU."""
  from configs import base  # pylint: disable=g-import-not-at-top
  c = base.get_config()
  c.data.source = "files"
  c.data.train_pattern = corpus_glob
  c.data.validation_fraction = 0.1
  c.data.seq_len = 32
  c.data.vocab_size = 256
  c.data.tokenizer_path = tokenizer_path
  c.model.size = "tiny"
  c.model.num_layers = 2
  c.model.d_model = 32
  c.model.num_heads = 2
  c.model.cond_dim = 16
  c.model.dtype = "float32"
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 5
  c.optim.ema_decay = 0.9
  c.train.batch_size = 8
  c.train.num_steps = 20
  c.train.log_every = 5
  c.train.eval_every = 10
  c.train.eval_batches = 2
  c.train.checkpoint_every = 10
  c.eval.batch_size = 8
  return c


@pytest.fixture
def config(corpus_glob, shared_tokenizer):
  return tiny_config(corpus_glob, shared_tokenizer)

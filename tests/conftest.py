"""Shared fixtures: a small real-text corpus (the stdlib's pydoc topics) and tiny configs."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# The suite runs on CPU; with libtpu installed (the `tpu` extra, for the AOT test) jax would
# otherwise try to open a TPU in every process and contend for libtpu's lock file.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite compiles hundreds of tiny programs and runs each briefly: LLVM's optimisation
# passes cost more than they save there (the suite's wall time ~676 s -> ~490 s on 2 cores).
# Numbers are compared within tolerances, or between programs compiled alike.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

import tempfile  # noqa: E402

from absl import flags  # noqa: E402
import jax  # noqa: E402

# Many tests compile the same tiny train step: share compilations through a persistent
# cache for this session (subprocesses inherit it through the environment).
_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                               tempfile.mkdtemp(prefix="dlm_jax_test_xla_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

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
  from dlm_jax.data.tokenizer import get_tokenizer  # pylint: disable=g-import-not-at-top
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


def kernel_config(name: str, **overrides):
  """config.kernel of the schema with overrides (for building kernels in tests)."""
  from configs import base  # pylint: disable=g-import-not-at-top
  c = base.get_config().kernel
  for key, value in overrides.items():
    c[key] = value
  c.name = name
  return c


def toy_kernels(V: int, seed: int = 0, eps: float = 1e-2, unigram=None, k: int = 3,
                parameterization: str = "mean"):
  """Every member of the family on a tiny vocabulary with random-embedding tables."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dlm_jax.kernels import family, neighbors  # pylint: disable=g-import-not-at-top
  emb = np.random.default_rng(seed).normal(size=(V, 5))
  part = neighbors.build(emb, "partition", k, "toy", special=())
  topk = neighbors.build(emb, "topk", k, "toy", tau=0.5, special=())
  make = lambda name, table=None, **kw: family.make_process(
      kernel_config(name, eps=eps, global_eps=eps, parameterization=parameterization, **kw), V,
      table, unigram)
  return {
      "masking": make("masking"),
      "uniform": make("uniform"),
      "semdlm_A": make("semdlm", part),
      "semdlm_plus_uniform_A": make("semdlm_plus", part, global_kind="uniform"),
      "semdlm_plus_mask_A": make("semdlm_plus", part, global_kind="mask"),
      "semdlm_B": make("semdlm", topk),
      "semdlm_plus_uniform_B": make("semdlm_plus", topk, global_kind="uniform"),
      "semdlm_plus_mask_B": make("semdlm_plus", topk, global_kind="mask"),
  }

"""Neighbour-table files: content-hashed names that every process agrees on, and a restore
refused when the table differs from the one the checkpoint was trained with."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dlm_jax import assets, experiment, training
from dlm_jax.data.tokenizer import get_tokenizer
from dlm_jax.errors import UserError
from dlm_jax.kernels import neighbors
from tests.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PRINT_NAME = """
import sys
sys.path.insert(0, {root!r})
from tests.conftest import tiny_config
from dlm_jax import assets
from dlm_jax.data.tokenizer import get_tokenizer
config = tiny_config({corpus!r}, {tokenizer!r})
config.kernel.name = "semdlm"
config.kernel.embedding_source = "npy"
config.kernel.embedding_path = {emb!r}
tok = get_tokenizer(config.data, {workdir!r})
print(assets.table_path(config, tok, {workdir!r}))
"""


def test_processes_agree_on_the_table_file_name(tmp_path, corpus_glob, shared_tokenizer):
  """Names were built with Python's per-process-randomised hash(): other hosts looked for a
  file process 0 never wrote. Two interpreters with different hash seeds must agree."""
  emb = tmp_path / "emb.npy"
  np.save(emb, np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32))
  script = _PRINT_NAME.format(root=ROOT, corpus=corpus_glob, tokenizer=shared_tokenizer,
                              emb=str(emb), workdir=str(tmp_path / "w"))
  names = []
  for seed in ("1", "2"):
    env = {**os.environ, "PYTHONHASHSEED": seed, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    names.append(out.stdout.strip().splitlines()[-1])
  assert names[0] == names[1]
  assert os.path.dirname(names[0]) == os.path.dirname(shared_tokenizer)  # next to the tokenizer
  np.save(emb, np.random.default_rng(1).normal(size=(256, 8)).astype(np.float32))
  config = tiny_config(corpus_glob, shared_tokenizer)
  config.kernel.name = "semdlm"
  config.kernel.embedding_source = "npy"
  config.kernel.embedding_path = str(emb)
  tokenizer = get_tokenizer(config.data, str(tmp_path / "w"))
  other = assets.table_path(config, tokenizer, str(tmp_path / "w"))
  assert other != names[0] and os.path.dirname(other) == os.path.dirname(names[0])


def test_restore_reads_the_saved_table_and_refuses_another_for_old_runs(config, tmp_path):
  """A run restores the table its checkpoint holds: another file in its place changes nothing.
  A run saved before checkpoints held the process reads the file, and another table there is
  refused (restore and resume)."""
  table_file = str(tmp_path / "table.npz")
  config.kernel.name = "semdlm"
  config.kernel.table_path = table_file
  config.train.num_steps = 2
  config.train.checkpoint_every = 2
  config.train.eval_every = 2
  config.train.eval_batches = 1
  workdir = str(tmp_path / "run")
  training.train_and_evaluate(config, workdir)
  saved = experiment.restore(workdir)[0].process.table_hash()
  original = neighbors.NeighborTable.load(table_file)
  emb = np.random.default_rng(7).normal(size=(original.vocab_size, 8))
  neighbors.build(emb, "partition", config.kernel.k, original.fingerprint,
                  special=original.special).save(table_file)
  assert experiment.restore(workdir)[0].process.table_hash() == saved
  shutil.rmtree(os.path.join(workdir, "checkpoints", "2", "process"))    # an old checkpoint
  with pytest.raises(UserError, match=r"does not match this config \(table: checkpoint"):
    experiment.restore(workdir)
  with pytest.raises(UserError, match=r"table: checkpoint"):
    training.train_and_evaluate(config, workdir)

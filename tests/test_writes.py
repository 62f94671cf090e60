"""Files written whole or not at all: a full disk or a failed `prepare` loses nothing that was
there and leaves no temporary file (reliability round four, D7 and D9)."""

import json
import os
import subprocess
import sys

import pytest

from dlm_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each writer, in a process whose files may not grow past 64 KiB (RLIMIT_FSIZE: the write
# that crosses it fails with EFBIG, and so does close()'s flush of the same buffer -- what
# a full disk does).
_FULL_DISK = r"""
import os, resource, signal, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
out, which = sys.argv[2], sys.argv[3]
from dlm_jax.errors import UserError
big = np.arange(200_000, dtype=np.int32)
def run():
  if which == "safetensors":
    from dlm_jax import safetensors_io
    safetensors_io.save(os.path.join(out, "model.safetensors"), {"a": big})
  elif which == "table":
    from dlm_jax.kernels import neighbors
    ids = big[:199_998].reshape(-1, 6)
    neighbors.NeighborTable("topk", ids, np.ones(ids.shape, np.float32), "f").save(
        os.path.join(out, "table.npz"))
  elif which == "cache":
    from dlm_jax.data import rows
    rows._save_cache(os.path.join(out, "train-x.npy"), big)
  elif which == "tokenizer":
    from dlm_jax import atomic_files
    with atomic_files.replace_on_success(os.path.join(out, "tokenizer.model"), "tokenizer") as f:
      f.write(big.tobytes())
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
try:
  run()
except UserError as e:
  print("USERERROR", e)
"""


@pytest.mark.parametrize("which", ["safetensors", "table", "cache", "tokenizer"])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, which):
  (tmp_path / "keep.txt").write_text("there before")
  run = subprocess.run([sys.executable, "-c", _FULL_DISK, ROOT, str(tmp_path), which],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert run.returncode == 0, run.stderr[-2000:]
  (line,) = [l for l in run.stdout.splitlines() if l.startswith("USERERROR")]
  assert "cannot write the" in line and "nothing was replaced" in line, line
  assert sorted(os.listdir(tmp_path)) == ["keep.txt"]          # no temporary file left


def test_replace_on_success_keeps_the_old_file_when_the_writer_fails(tmp_path):
  from dlm_jax import atomic_files  # pylint: disable=g-import-not-at-top
  path = tmp_path / "tokenizer.model"
  path.write_bytes(b"old")
  with pytest.raises(ValueError):
    with atomic_files.replace_on_success(str(path), "tokenizer") as f:
      f.write(b"half of the new")
      raise ValueError("the writer failed")
  assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["tokenizer.model"]
  with atomic_files.replace_on_success(str(path), "tokenizer") as f:
    f.write(b"new")
  assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["tokenizer.model"]
  umask = os.umask(0o022)
  os.umask(umask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask      # as open() makes it, not 0600


def _prepare_config(corpus_glob, shared_tokenizer):
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  return tiny_config(corpus_glob, shared_tokenizer)


def test_a_failed_prepare_leaves_the_shards_there_intact(tmp_path, corpus_glob, shared_tokenizer,
                                                         monkeypatch):
  """D7: a prepare that failed half-way into a directory of good shards truncated them and
  kept the old description."""
  from dlm_jax.data import prepare, rows  # pylint: disable=g-import-not-at-top
  out = tmp_path / "prepared"
  config = _prepare_config(corpus_glob, shared_tokenizer)
  prepare.prepare(config, str(out), rows_per_shard=50)
  before = {p.name: p.read_bytes() for p in out.iterdir()}
  assert len([n for n in before if n.startswith("train-")]) > 2
  real = prepare.iter_rows

  def fails_half_way(*args, **kwargs):
    for i, row in enumerate(real(*args, **kwargs)):
      if i == 120:
        raise UserError("train row 120: column 'text' is null")
      yield row
  monkeypatch.setattr(prepare, "iter_rows", fails_half_way)
  with pytest.raises(UserError, match="row 120"):
    prepare.prepare(config, str(out), rows_per_shard=50)
  assert {p.name: p.read_bytes() for p in out.iterdir()} == before
  monkeypatch.undo()
  config.data.prepared_dir = str(out)
  train = rows.prepared_rows(config.data, "train", _tokenizer(shared_tokenizer, config))
  assert len(train) == json.loads((out / "train.json").read_text())["rows"]


def _tokenizer(path, config):
  from dlm_jax.data.tokenizer import get_tokenizer  # pylint: disable=g-import-not-at-top
  return get_tokenizer(config.data, os.path.dirname(path))


def test_a_damaged_shard_is_one_line_naming_it(tmp_path, corpus_glob, shared_tokenizer):
  from dlm_jax.data import prepare, rows  # pylint: disable=g-import-not-at-top
  out = tmp_path / "prepared"
  config = _prepare_config(corpus_glob, shared_tokenizer)
  prepare.prepare(config, str(out), rows_per_shard=50, splits=("train",))
  shard = out / "train-00001.array_record"
  shard.write_bytes(shard.read_bytes()[:100])
  config.data.prepared_dir = str(out)
  with pytest.raises(UserError, match=r"shard .*train-00001.array_record of .* cannot be read"
                     r".*prepare the train split again") as e:
    rows.prepared_rows(config.data, "train", _tokenizer(shared_tokenizer, config))
  assert "\n" not in str(e.value)
  assert len(os.listdir(out)) == 1 + len(json.loads((out / "train.json").read_text())["shards"])

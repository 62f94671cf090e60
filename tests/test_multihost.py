"""Two processes on localhost (CPU collectives) == one process, for the same global batch."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, corpus_glob, shared_tokenizer):
  script = os.path.join(HERE, "multihost_train.py")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, script, corpus_glob, shared_tokenizer,
                             str(tmp_path / "two"), str(port), str(i), "2",
                             str(tmp_path / "two.json")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  single = subprocess.run([sys.executable, script, corpus_glob, shared_tokenizer,
                           str(tmp_path / "one"), "0", "0", "1", str(tmp_path / "one.json")],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
  assert single.returncode == 0, single.stderr[-3000:]
  two = json.loads((tmp_path / "two.json").read_text())
  one = json.loads((tmp_path / "one.json").read_text())
  assert two["processes"] == 2 and two["devices"] == 2 and one["processes"] == 1
  np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
  np.testing.assert_allclose(two["val"], one["val"], rtol=1e-5)
  # Both processes wrote their data-iterator state into the shared checkpoint.
  data = tmp_path / "two" / "checkpoints" / "6" / "data"
  assert {p.name for p in data.glob("process_*.json")} == {"process_0-of-2.json",
                                                             "process_1-of-2.json"}

"""The same train step on 8 fake CPU devices (data=2, fsdp=4) and on 1 device."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("objective", ["diffusion"])   # "causal" also works; ~1 min of suite
def test_eight_devices_match_one(tmp_path, corpus_glob, shared_tokenizer, objective):
  out = subprocess.run(
      [sys.executable, os.path.join(HERE, "sharded_steps.py"), corpus_glob, shared_tokenizer,
       str(tmp_path), objective],
      capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(result["losses8"], result["losses1"], rtol=1e-5)
  assert result["max_param_diff"] < 1e-5
  # Parameters really are split over fsdp (not silently replicated).
  assert any("fsdp" in s for s in result["shardings8"]), result["shardings8"]

"""The accelerator suite runs end to end at tiny shapes (its numbers need a device)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_suite_smoke(tmp_path):
  run = subprocess.run(
      [sys.executable, "benchmarks/gpu_suite.py", "--smoke", "--steps=1",
       f"--out={tmp_path}"], capture_output=True, text=True, cwd=ROOT,
      env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  report = json.loads((tmp_path / "gpu_suite.json").read_text())
  assert [r["kernel"] for r in report["owt"]] == ["masking", "uniform", "semdlm_plus"]
  assert all(r["train_tokens_per_s"] > 0 and r["parameterization"] == "mean"
             for r in report["owt"])
  assert report["largest_batch"]["largest_fitting"] >= 4
  assert len(report["sampler"]) == 3 and report["versions"]["jax"]
  assert "| owt | semdlm_plus |" in (tmp_path / "gpu_suite.md").read_text()

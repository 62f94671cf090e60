import json

import pytest

from dlm_jax.analysis import compare_runs
from dlm_jax.errors import UserError


def _write(path, points):
  path.mkdir()
  with open(path / "metrics.jsonl", "w") as f:
    for step, bits in points:
      f.write(json.dumps({"step": step, "val/nelbo_bits_per_token": bits}) + "\n")
      f.write(json.dumps({"step": step + 1, "train/loss": 1.0}) + "\n")


def test_table_at_matched_steps_and_plot(tmp_path):
  _write(tmp_path / "a", [(0, 11.0), (100, 9.0), (200, 8.5)])
  _write(tmp_path / "b", [(0, 16.0), (100, 12.0)])
  table = compare_runs.compare({"a": str(tmp_path / "a"), "b": str(tmp_path / "b")},
                               str(tmp_path / "out"), "t")
  assert table.splitlines()[0] == "| run | step 0 | step 100 |"
  assert "| a | 11.000 | 9.000 |" in table and "| b | 16.000 | 12.000 |" in table
  assert (tmp_path / "out.png").stat().st_size > 1000
  with pytest.raises(UserError, match="not a training workdir"):
    compare_runs.compare({"c": str(tmp_path / "missing")}, str(tmp_path / "x"), "t")

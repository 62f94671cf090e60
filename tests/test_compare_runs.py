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


def test_table_aligned_by_step_says_what_is_missing_and_plots(tmp_path, capsys):
  _write(tmp_path / "a", [(0, 11.0), (100, 9.0), (200, 8.5)])
  _write(tmp_path / "b", [(0, 16.0), (100, 12.0), (150, 11.0)])
  table = compare_runs.compare({"a": str(tmp_path / "a"), "b": str(tmp_path / "b")},
                               str(tmp_path / "out"), "t")
  assert table.splitlines()[0] == "| run | step 0 | step 100 | step 150 | step 200 |"
  assert "| a | 11.000 | 9.000 | — | 8.500 |" in table
  assert "| b | 16.000 | 12.000 | 11.000 | — |" in table
  assert "a lacks step 150; b lacks step 200" in table
  assert "evaluated at different steps" in capsys.readouterr().out
  assert "a lacks step 150" in (tmp_path / "out.md").read_text()
  assert (tmp_path / "out.png").stat().st_size > 1000
  with pytest.raises(UserError, match="not a training workdir"):
    compare_runs.compare({"c": str(tmp_path / "missing")}, str(tmp_path / "x"), "t")

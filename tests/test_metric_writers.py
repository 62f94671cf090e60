"""The metric writers: JSONL kept consistent over a resume, and Weights & Biases (config
`logging.wandb`): what is logged, one W&B run per workdir across resumes, a real offline run."""

import glob
import json
import os
import sys
import types

import pytest
from ml_collections import config_dict

from dlm_jax import metric_writers
from dlm_jax.errors import UserError


def _wandb_cfg(**kw):
  return config_dict.ConfigDict({"project": "dlm", "entity": "", "name": "", "mode": "offline",
                                 **kw})


class _FakeRun:
  def __init__(self, calls, kwargs):
    self.calls = calls
    calls.append(("init", kwargs))

  def log(self, scalars, step):
    self.calls.append(("log", step, dict(scalars)))

  def finish(self):
    self.calls.append(("finish",))


@pytest.fixture
def fake_wandb(monkeypatch):
  calls = []
  module = types.ModuleType("wandb")
  module.init = lambda **kwargs: _FakeRun(calls, kwargs)
  monkeypatch.setitem(sys.modules, "wandb", module)
  return calls


def test_wandb_gets_every_metric_and_one_run_per_workdir(tmp_path, fake_wandb):
  workdir = str(tmp_path / "run_a")
  writer = metric_writers.MetricWriter(workdir, wandb_cfg=_wandb_cfg(entity="team"),
                                       run_config={"seed": 3})
  writer.write(0, {"loss": 5.0})
  writer.write(100, {"nelbo_bits_per_token": 7.5}, prefix="val/")
  writer.close()
  writer = metric_writers.MetricWriter(workdir, resume_step=100, wandb_cfg=_wandb_cfg())
  writer.write(200, {"loss": 4.0})
  writer.close()
  inits = [c[1] for c in fake_wandb if c[0] == "init"]
  assert inits[0]["id"] == inits[1]["id"] and len(inits[0]["id"]) == 8   # the resumed W&B run
  assert inits[0]["resume"] == "allow" and inits[0]["dir"] == workdir
  assert inits[0]["name"] == "run_a" and inits[0]["entity"] == "team"
  assert inits[1]["entity"] is None and inits[0]["config"] == {"seed": 3}
  assert [c for c in fake_wandb if c[0] == "log"] == [
      ("log", 0, {"loss": 5.0}), ("log", 100, {"val/nelbo_bits_per_token": 7.5}),
      ("log", 200, {"loss": 4.0})]
  assert sum(c[0] == "finish" for c in fake_wandb) == 2
  lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [x["step"] for x in lines] == [0, 100, 200]


def test_no_project_no_wandb(tmp_path, fake_wandb):
  writer = metric_writers.MetricWriter(str(tmp_path), wandb_cfg=_wandb_cfg(project=""))
  writer.write(0, {"loss": 1.0})
  writer.close()
  assert fake_wandb == [] and not os.path.exists(tmp_path / "wandb_run_id")


def test_wandb_settings_are_checked_before_any_work(monkeypatch):
  from configs import base  # pylint: disable=g-import-not-at-top
  from dlm_jax import configuration  # pylint: disable=g-import-not-at-top
  c = base.get_config()
  c.logging.wandb.mode = "disabled"
  with pytest.raises(UserError, match="logging.wandb.mode must be one of"):
    configuration.validate_config(c)
  c.logging.wandb.mode, c.logging.wandb.project = "online", "dlm"
  monkeypatch.setattr(configuration.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(UserError, match=r"needs the wandb package: pip install -e '.\[wandb\]'"):
    configuration.validate_config(c)


def test_a_real_offline_wandb_run(tmp_path, monkeypatch):
  """The installed wandb (the test extra) accepts the writer's calls: an offline run under the
  workdir, named by its run id, whose records hold the logged metric."""
  pytest.importorskip("wandb")
  monkeypatch.setenv("WANDB_SILENT", "true")
  monkeypatch.delenv("WANDB_MODE", raising=False)
  workdir = str(tmp_path / "w")
  writer = metric_writers.MetricWriter(workdir, wandb_cfg=_wandb_cfg(), run_config={"a": 1})
  for step in range(3):
    writer.write(step * 10, {"distinctive_metric": 1.0 / (step + 1)}, prefix="train/")
  writer.close()
  run_id = open(os.path.join(workdir, "wandb_run_id")).read().strip()
  records = glob.glob(os.path.join(workdir, "wandb", f"offline-run-*-{run_id}",
                                   f"run-{run_id}.wandb"))
  assert len(records) == 1, os.listdir(os.path.join(workdir, "wandb"))
  assert open(records[0], "rb").read().count(b"train/distinctive_metric") >= 3


def test_training_lines_on_stdout_by_time_every_flush_to_the_file(tmp_path, monkeypatch, capsys):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import base  # pylint: disable=g-import-not-at-top
  from dlm_jax import training  # pylint: disable=g-import-not-at-top
  cfg = base.get_config()
  cfg.train.num_steps, cfg.logging.print_every_seconds = 50, 30.0
  clock = iter(range(0, 10_000, 10))            # every time.time() call: 10 s later
  monkeypatch.setattr(training, "time", types.SimpleNamespace(time=lambda: float(next(clock))))
  writer = metric_writers.MetricWriter(str(tmp_path))
  log = training._TrainLog(cfg, training._Metrics(writer), ckpt=None, start=0)
  for done in range(10, 51, 10):
    log.add({"loss": np.float32(1.0), "finite": np.bool_(True), "tokens": np.int32(4)})
    log.flush(done, last=done == 50)
  writer.close()
  printed = [int(x.split()[1]) for x in capsys.readouterr().out.splitlines()]
  assert printed == [10, 40, 50]                # the first, >= 30 s after it, the last
  lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
  assert [x["step"] for x in lines] == [10, 20, 30, 40, 50]


def test_print_every_seconds_is_checked():
  from configs import base  # pylint: disable=g-import-not-at-top
  from dlm_jax import configuration  # pylint: disable=g-import-not-at-top
  c = base.get_config()
  c.logging.print_every_seconds = -1.0
  with pytest.raises(UserError, match="logging.print_every_seconds must be"):
    configuration.validate_config(c)

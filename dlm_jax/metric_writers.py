"""Metrics to stdout, a JSONL file, TensorBoard event files and (config `logging.wandb.project`)
Weights & Biases."""

from __future__ import annotations

import json
import os
import secrets

from absl import logging


def _keep_until(path: str, step: int) -> None:
  """Rewrites the JSONL file at `path` with its whole lines of step <= `step` only."""
  if not os.path.exists(path):
    return
  kept, dropped = [], 0
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      try:
        keep = line.endswith("\n") and json.loads(line)["step"] <= step
      except (json.JSONDecodeError, KeyError, TypeError):
        keep = False
      if keep:
        kept.append(line)
      else:
        dropped += 1
  if dropped:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)


def _shown(key: str, value: float) -> str:
  """One metric as printed: the time left as h:mm, the rest to 5 significant digits."""
  if key.endswith("eta_hours"):
    minutes = round(value * 60)
    return f"{key[:-len('eta_hours')]}eta={minutes // 60}:{minutes % 60:02d}"
  return f"{key}={value:.5g}"


def wandb_run_id(workdir: str) -> str:
  """The W&B run id of a workdir: made once and kept in <workdir>/wandb_run_id, so a resumed
  run logs to the same W&B run."""
  path = os.path.join(workdir, "wandb_run_id")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      run_id = f.read().strip()
    if run_id:
      return run_id
  run_id = secrets.token_hex(4)
  with open(path, "w", encoding="utf-8") as f:
    f.write(run_id + "\n")
  return run_id


def open_wandb(workdir: str, wandb_cfg, run_config: dict | None):
  """A W&B run for this workdir (resumed when it exists); None without a project."""
  if wandb_cfg is None or not wandb_cfg.project:
    return None
  import wandb  # pylint: disable=g-import-not-at-top
  return wandb.init(project=wandb_cfg.project, entity=wandb_cfg.entity or None,
                    name=wandb_cfg.name or os.path.basename(os.path.abspath(workdir)),
                    id=wandb_run_id(workdir), resume="allow", dir=workdir,
                    mode=wandb_cfg.mode, config=run_config)


class MetricWriter:
  """Writes scalar dicts; a no-op on processes other than 0."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0, wandb_cfg=None,
               run_config: dict | None = None):
    """`resume_step`: the checkpoint a run resumes from; lines logged after it by the run
    that was interrupted (and a line cut off by a kill) are dropped, so none is duplicated.
    `wandb_cfg` (config.logging.wandb) with a project: W&B too (`run_config` its config); W&B keeps
    the first value it got for a step, so after such a resume metrics.jsonl is the record."""
    self.enabled = enabled
    self._tb = None
    self._wandb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    _keep_until(path, resume_step)
    self._jsonl = open(path, "a", encoding="utf-8")
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:
      logging.warning("tensorboardX not installed: no TensorBoard event files")
    self._wandb = open_wandb(workdir, wandb_cfg, run_config)

  def write(self, step: int, scalars: dict[str, float], prefix: str = "",
            echo: bool = True) -> None:
    """Every file gets `scalars`; stdout too where `echo`."""
    if not self.enabled:
      return
    scalars = {f"{prefix}{k}": float(v) for k, v in scalars.items()}
    if echo:
      print(f"step {step} | " + " | ".join(_shown(k, v) for k, v in scalars.items()), flush=True)
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)
      self._tb.flush()
    if self._wandb is not None:
      self._wandb.log(scalars, step=step)

  def close(self):
    if self.enabled:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()
      if self._wandb is not None:
        self._wandb.finish()

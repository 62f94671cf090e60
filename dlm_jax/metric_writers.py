"""Metrics to stdout (absl logging), a JSONL file and TensorBoard event files."""

from __future__ import annotations

import json
import os

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


class MetricWriter:
  """Writes scalar dicts; a no-op on processes other than 0."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    """`resume_step`: the checkpoint a run resumes from; lines logged after it by the run
    that was interrupted (and a line cut off by a kill) are dropped, so none is duplicated."""
    self.enabled = enabled
    self._tb = None
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

  def write(self, step: int, scalars: dict[str, float], prefix: str = "") -> None:
    if not self.enabled:
      return
    scalars = {f"{prefix}{k}": float(v) for k, v in scalars.items()}
    print(f"step {step} | " + " | ".join(_shown(k, v) for k, v in scalars.items()), flush=True)
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)
      self._tb.flush()

  def close(self):
    if self.enabled:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()

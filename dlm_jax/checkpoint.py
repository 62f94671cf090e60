"""Orbax checkpoints: train state + data-iterator state + config, every N steps.

Layout: <workdir>/checkpoints/<step>/{state,data,config}. Orbax writes each
step to a temporary directory and renames it when complete, so a partial
write is never taken for a checkpoint.
"""

from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp
from ml_collections import config_dict

from dlm_jax.errors import UserError


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
  """A CheckpointManager for the three items of a training run."""

  def __init__(self, workdir: str, keep: int = 3, create: bool = True):
    directory = checkpoint_dir(workdir)
    if not create and not os.path.isdir(directory):
      raise UserError(f"no checkpoints in workdir {workdir!r} (expected {directory}); "
                      "train first with `python -m dlm_jax.train --workdir=...`")
    try:
      self.manager = ocp.CheckpointManager(
          directory,
          options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create),
          item_handlers={"state": ocp.StandardCheckpointHandler(),
                         "data": grain.checkpoint.CheckpointHandler(),
                         "config": ocp.JsonCheckpointHandler()})
    except PermissionError as e:
      raise UserError(f"cannot write checkpoints under {directory}: {e.strerror}") from None

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator, config, force: bool = False) -> bool:
    args = {"state": ocp.args.StandardSave(state),
            "config": ocp.args.JsonSave(config.to_dict())}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

  def restore(self, step: int, abstract_state, data_iterator=None):
    """Restores the state into `abstract_state`'s shapes and shardings (and the iterator)."""
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return restored["state"]

  def restore_config(self, step: int | None = None) -> config_dict.ConfigDict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError(f"no checkpoint found under {self.manager.directory}")
    restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return config_dict.ConfigDict(restored["config"])

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def abstract_like(tree):
  """ShapeDtypeStructs carrying the shardings of a concrete or abstract tree."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)

"""Orbax checkpoints: train state + data-iterator state + config + meta + the diffusion
process, every N steps.

Layout: <workdir>/checkpoints/<step>/{state,data,config,meta,process}. `process` holds the
process's arrays (neighbour table, unigram, prior-KL table; kernels/family.process_arrays):
the commands that restore a run read it from there and never from the training corpus. Orbax writes each
step to a temporary directory and renames it when complete, so a partial
write (a killed job, a full disk) is never taken for a checkpoint. Saves are
synchronous, so a failed write is reported at the step that failed.
"""

from __future__ import annotations

import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from dlm_jax.errors import UserError


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
  """A CheckpointManager for the items of a training run."""

  def __init__(self, workdir: str, keep: int = 3, create: bool = True):
    directory = checkpoint_dir(workdir)
    if not create and not os.path.isdir(directory):
      raise UserError(f"no checkpoints in workdir {workdir!r} (expected {directory}); "
                      "train first with `python -m dlm_jax.train --workdir=...`")
    self.directory = directory
    try:
      self.manager = ocp.CheckpointManager(
          directory,
          options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                               enable_async_checkpointing=False),
          item_handlers={"state": ocp.StandardCheckpointHandler(),
                         "data": grain.checkpoint.CheckpointHandler(),
                         "config": ocp.JsonCheckpointHandler(),
                         "meta": ocp.JsonCheckpointHandler(),
                         "process": ocp.StandardCheckpointHandler()})
    except OSError as e:
      raise UserError(f"cannot use {directory} for checkpoints: {e.strerror or e}") from None

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_iterator, config, meta: dict,
           process_arrays: dict | None = None) -> None:
    args = {"state": ocp.args.StandardSave(state),
            "config": ocp.args.JsonSave(config.to_dict()),
            "meta": ocp.args.JsonSave(meta)}
    if process_arrays is not None:
      args["process"] = ocp.args.StandardSave(process_arrays)
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    previous = self.latest_step()
    try:
      self.manager.save(step, args=ocp.args.Composite(**args), force=True)
      self.manager.wait_until_finished()
    except OSError as e:
      raise UserError(f"could not write the checkpoint for step {step} under {self.directory} "
                      f"({e.strerror or e}); the last complete checkpoint is step {previous}"
                      ) from None

  def _restore_one(self, step: int, abstract_state, data_iterator):
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self.manager.restore(step, args=ocp.args.Composite(**args))["state"]

  def restore(self, step: int, abstract_state, data_iterator=None, fallback: bool = False,
              hint: str = ""):
    """Restores `step` into `abstract_state`'s shapes and shardings (and the data iterator).

    An unreadable checkpoint raises a UserError naming it and the usable earlier
    one (`hint`: how the caller picks it), or, with `fallback`, warns and restores the newest
    readable earlier step. Returns (state, step restored).
    """
    return self._newest_readable(
        step, lambda s: self._restore_one(s, abstract_state, data_iterator), fallback,
        "unreadable", hint)

  def still_has(self, step: int) -> bool:
    """Whether `step` is still listed (a running `train` deletes old steps)."""
    self.manager.reload()
    return step in self.manager.all_steps()

  def _newest_readable(self, step: int, read, fallback: bool, what: str, hint: str = ""):
    """(read(s), s) for the newest step s <= `step` that `read` accepts. A step it raises on
    is a UserError naming it, `what` it is, and the earlier step (`hint`: how to pick that
    one; default: train.restore_fallback), or with `fallback` a warning and the next older
    step; steps passed over are moved aside (`_set_aside`)."""
    candidates = [s for s in reversed(self.all_steps()) if s <= step]
    errors = []
    for s in candidates:
      try:
        value = read(s)
        self._set_aside([bad for bad, _ in errors])
        return value, s
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
          raise
        errors.append((s, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"))
        if not fallback:
          earlier = [c for c in candidates if c < s]
          how = (f"the earlier checkpoint {earlier[0]} may be usable: delete "
                 f"{os.path.join(self.directory, str(s))} or "
                 f"{hint or 'set train.restore_fallback=True'}"
                 if earlier else "no earlier checkpoint exists")
          raise UserError(f"checkpoint step {s} in {self.directory} is {what} "
                          f"({errors[-1][1]}); {how}") from None
        logging.warning("checkpoint step %d is %s (%s); trying an earlier one", s, what,
                        errors[-1][1])
        print(f"warning: checkpoint step {s} is {what} ({errors[-1][1]}); "
              "falling back to an earlier one", flush=True)
    raise UserError(f"no readable checkpoint in {self.directory}: "
                    + "; ".join(f"step {s}: {e}" for s, e in errors))

  def _set_aside(self, bad_steps) -> None:
    """Renames unreadable newer checkpoints to <step>.unreadable (kept, never deleted) so
    that training can continue past them."""
    if not bad_steps or jax.process_index() != 0:
      return
    for s in bad_steps:
      src = os.path.join(self.directory, str(s))
      os.replace(src, f"{src}.unreadable")
      print(f"warning: moved unreadable checkpoint {src} to {src}.unreadable", flush=True)
    self.manager.reload()

  def readable_step(self, step: int, fallback: bool = False, hint: str = "") -> int:
    """The newest step <= `step` whose config and meta read. A damaged one (an empty or
    half-deleted step directory, truncated JSON) is a UserError naming it and the earlier
    step, or, with `fallback`, a warning and the next older one (the damaged one is moved
    aside). `hint`: how the caller picks an earlier step."""
    return self._newest_readable(step, self._read_metadata, fallback,
                                 "damaged — its config or meta cannot be read", hint)[1]

  def _read_metadata(self, step: int) -> None:
    for item in ("config", "meta"):
      value = self.restore_json(step, item)
      if not isinstance(value, dict) or not value:
        raise ValueError(f"{item} is empty")

  def restore_json(self, step: int, item: str) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(
        **{item: ocp.args.JsonRestore()}))[item]

  def restore_process_arrays(self, step: int) -> dict | None:
    """The diffusion process's arrays saved at `step` (host arrays), or None for a run saved
    before checkpoints held them (or an autoregressive run)."""
    if not os.path.isdir(os.path.join(self.directory, str(step), "process")):
      return None
    arrays = self.manager.restore(step, args=ocp.args.Composite(
        process=ocp.args.StandardRestore()))["process"]
    return {name: np.asarray(value) for name, value in arrays.items()}

  def restore_param(self, step: int, path: tuple[str, ...]):
    """One array of the saved train state, e.g. ("ema_params", "embed", "embedding"), on the
    host (the state is restored as saved, without building a model)."""
    state = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
    for key in path:
      state = state[key]
    return jax.device_get(state)

  def restore_config(self, step: int | None = None):
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError(f"no checkpoint found under {self.directory}")
    from dlm_jax import configuration  # pylint: disable=g-import-not-at-top
    return configuration.from_saved(self.restore_json(step, "config"))

  def close(self):
    self.manager.close()


"""The workdir: creating it, and the exclusive lock a `train` run holds on it.

Two `train` processes on one workdir would interleave checkpoints of different models and
overwrite each other's metrics. `train_lock` takes an exclusive `fcntl.flock` on
<workdir>/train.lock: the operating system drops it when the holder exits or is killed, so
a crashed run never blocks the next one. The file names the holder (host, pid, start time)
for the error message. Object-store workdirs (gs://...) have no such lock and are not
locked; on a multi-host job only process 0 takes it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import shutil
import socket

import jax

from dlm_jax.errors import UserError

LOCK_NAME = "train.lock"


def ensure(workdir: str) -> None:
  """Creates the workdir (a one-line error when it cannot be created or written)."""
  if "://" in workdir:
    return
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create workdir {workdir!r}: {e.strerror}") from None
  if not os.access(workdir, os.W_OK):
    raise UserError(f"workdir {workdir!r} is not writable")


def check_readable(workdir: str) -> None:
  """A workdir a reader restores from: it exists (it may be read-only)."""
  if "://" not in workdir and not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir!r} does not exist")


def remove_if_unused(workdir: str) -> bool:
  """Removes a workdir that a failed start created, when it holds no checkpoint and no
  metrics yet (only the lock, a tokenizer, caches): the start leaves no debris. Returns
  whether it was removed."""
  checkpoints = os.path.join(workdir, "checkpoints")
  if (os.path.exists(os.path.join(workdir, "metrics.jsonl"))
      or (os.path.isdir(checkpoints) and os.listdir(checkpoints))):
    return False
  shutil.rmtree(workdir, ignore_errors=True)
  return True


@contextlib.contextmanager
def train_lock(workdir: str):
  """Holds the workdir's exclusive train lock for the body (see the module doc)."""
  if "://" in workdir or jax.process_index() != 0:
    yield
    return
  ensure(workdir)
  path = os.path.join(workdir, LOCK_NAME)
  with open(path, "a+", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      raise UserError(f"workdir {workdir!r} is in use by another train run ({holder}); wait "
                      "for it to finish or use another workdir") from None
    except OSError as e:        # a filesystem without flock: go on unlocked, say so
      print(f"warning: cannot lock {path} ({e.strerror}); a second train run on this "
            "workdir would not be stopped", flush=True)
      yield
      return
    f.seek(0)
    f.truncate()
    f.write(f"host {socket.gethostname()}, pid {os.getpid()}, since "
            f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
    f.flush()
    try:
      yield
    finally:
      f.seek(0)
      f.truncate()
      fcntl.flock(f, fcntl.LOCK_UN)

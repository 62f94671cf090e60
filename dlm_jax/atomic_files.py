"""Files written whole or not at all: every writer of a file that a run reads back (tokenizer,
neighbour table, token cache, safetensors) goes through `replace_on_success`."""

from __future__ import annotations

import contextlib
import os
import tempfile

from dlm_jax.errors import UserError


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _discard(f, temporary: str) -> None:
  """Closes and removes a temporary file whose writing failed. On a full disk `close()`
  flushes the same buffer again and fails again; the descriptor is closed all the same."""
  try:
    f.close()
  except OSError:
    pass
  with contextlib.suppress(FileNotFoundError):
    os.remove(temporary)


@contextlib.contextmanager
def replace_on_success(path: str, what: str, suffix: str = ""):
  """Yields a binary file in `path`'s directory (created if needed). When the block ends
  without an error the file replaces `path` in one rename; otherwise it is removed, `path` is
  left as it was, and an OSError (a full disk, a read-only directory) becomes one UserError
  line naming `what` and `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, suffix=suffix, prefix=".tmp-")
  except OSError as e:
    raise UserError(f"cannot write the {what} {path} ({e.strerror or e})") from None
  f = os.fdopen(fd, "wb")
  try:
    os.fchmod(fd, 0o666 & ~_umask())      # what open() gives (mkstemp's file is 0600)
    yield f
    f.close()
    os.replace(temporary, path)
  except BaseException as e:
    _discard(f, temporary)
    if isinstance(e, OSError):
      raise UserError(f"cannot write the {what} {path} ({e.strerror or e}); nothing was "
                      "replaced") from None
    raise

"""Shared helpers of the absl entry points."""

from __future__ import annotations

import sys

from absl import flags, logging

from dlm_jax.errors import UserError


def quiet_logging():
  """Orbax and grain log every save at INFO; keep stdout for our output unless asked."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def run(program: str, fn, *args, **kwargs):
  """Calls fn; a UserError becomes one line on stderr and exit status 1."""
  quiet_logging()
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    sys.exit(f"{program}: error: {e}")

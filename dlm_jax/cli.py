"""Shared helpers of the absl entry points."""

from __future__ import annotations

import sys

from absl import flags, logging

from dlm_jax import distributed
from dlm_jax.errors import UserError


def quiet_logging():
  """Orbax and grain log every save at INFO; keep stdout for our output unless asked."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def run(program: str, fn, *args, **kwargs):
  """Starts the multi-controller runtime when asked (--coordinator_address or --distributed),
  then calls fn; a UserError becomes one line on stderr and exit status 1."""
  quiet_logging()
  try:
    distributed.initialize_from_flags()
    return fn(*args, **kwargs)
  except UserError as e:
    sys.exit(f"{program}: error: {e}")


def unknown_override(argv) -> str | None:
  """The first `--config.a.b=v` override naming a key that configs/base.py does not define."""
  from configs import base  # pylint: disable=g-import-not-at-top
  schema = base.get_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0]
    node = schema
    for part in path.split("."):
      if not hasattr(node, "keys") or part not in node:
        return path
      node = node[part]
  return None


def run_app(program: str, main, define_flags):
  """absl's app.run, with a one-line error for an override of an unknown config key."""
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  bad = unknown_override(sys.argv[1:])
  if bad is not None:
    sys.exit(f"{program}: error: unknown config key {bad!r} in --config.{bad}=... "
             "(keys are defined in configs/base.py)")
  app.run(main)

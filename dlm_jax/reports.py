"""Writing a command's outputs: <stem>.json, <stem>.md and <stem>.png side by side, under a
name that no other run's outputs have (`unique_stem`)."""

from __future__ import annotations

import hashlib
import json
import os

from dlm_jax.errors import UserError


def check_writable(stem: str) -> None:
  """Fails now, before any work, when outputs cannot be written next to `stem` (its
  directory cannot be created, e.g. a path through an existing file, or is read-only)."""
  if stem.endswith(os.sep) or os.path.isdir(stem):
    raise UserError(f"--output={stem!r} is a directory; give a file name without extension "
                    f"in it (e.g. {os.path.join(stem, 'report')!r}: report.json, report.md)")
  directory = os.path.dirname(os.path.abspath(stem))
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot write outputs to {stem!r}: cannot create {directory!r} "
                    f"({e.strerror})") from None
  if not os.access(directory, os.W_OK):
    raise UserError(f"cannot write outputs to {stem!r}: {directory!r} is not writable")


def options_hash(options: dict) -> str:
  """8 hex digits that change with any of `options` (JSON, keys sorted)."""
  text = json.dumps(options, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:8]


def unique_stem(directory: str, name: str, options: dict,
                suffixes=(".json", ".md", ".txt", ".png")) -> str:
  """<directory>/<name>_<options_hash>: calls with other options never share a file; a
  repeated call with the same options gets -2, -3, ... rather than overwriting. The name is
  reserved by creating its first suffix's file exclusively (O_EXCL), so two processes never
  get the same one."""
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot write outputs under {directory!r} ({e.strerror}): give "
                    "--output=PATH in a writable directory") from None
  stem = os.path.join(directory, f"{name}_{options_hash(options)}")
  candidate, n = stem, 1
  while True:
    if not any(os.path.exists(candidate + s) for s in suffixes):
      try:
        os.close(os.open(candidate + suffixes[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return candidate
      except FileExistsError:
        pass
      except OSError as e:
        raise UserError(f"cannot write outputs under {directory!r} ({e.strerror}): give "
                        "--output=PATH in a writable directory") from None
    n += 1
    candidate = f"{stem}-{n}"


def write(stem: str, report=None, markdown: str | None = None, plot=None) -> list[str]:
  """Writes whichever of the JSON report, markdown text and plot (a function of the PNG path)
  are given, creating the directory; returns the paths written."""
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  written = []
  if report is not None:
    with open(stem + ".json", "w", encoding="utf-8") as fh:
      json.dump(report, fh, indent=2)
    written.append(stem + ".json")
  if markdown is not None:
    with open(stem + ".md", "w", encoding="utf-8") as fh:
      fh.write(markdown)
    written.append(stem + ".md")
  if plot is not None:
    plot(stem + ".png")
    written.append(stem + ".png")
  return written


def pyplot():
  """matplotlib's pyplot on the file-only Agg backend (imported only by commands that plot)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt

"""Writing a command's outputs: <stem>.json, <stem>.md and <stem>.png side by side."""

from __future__ import annotations

import json
import os


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

r"""Build (if missing) and inspect the neighbour table a config asks for.

  python -m dlm_jax.kernels.build_neighbors --config=configs/quickstart_semdlm.py \
      --workdir=workdirs/qs_semdlm --words=king,love,death,sword,night,good,lord,sweet,eyes,heart

Prints the build time, size / hubness statistics and, for each word, the
neighbours of its token (the word's first SentencePiece piece) with weights.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import flags
from ml_collections import config_flags

from dlm_jax import cli, configuration
from dlm_jax import assets
from dlm_jax.kernels import neighbors
from dlm_jax.data.tokenizer import get_tokenizer


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.")
  flags.DEFINE_string("workdir", None, "Workdir (tokenizer and table location).")
  flags.DEFINE_list("words", [], "Words whose neighbourhoods to print.")
  flags.DEFINE_bool("rebuild", False, "Rebuild even if the table exists.")


def inspect(config, workdir: str, words=(), rebuild: bool = False) -> dict:
  configuration.validate_config(config)
  tokenizer = get_tokenizer(config.data, workdir)
  path = assets.table_path(config, tokenizer, workdir)
  if rebuild and os.path.exists(path):
    os.remove(path)
  start = time.perf_counter()
  table = assets.neighbor_table(config, tokenizer, workdir)
  report = {"path": path, "seconds": time.perf_counter() - start, **neighbors.statistics(table)}
  piece = lambda i: tokenizer.decode([int(i)]) or f"<{int(i)}>"
  report["neighbourhoods"] = {}
  for word in words:
    ids = tokenizer.encode([" " + word])[0]
    if not ids:
      continue
    x = ids[0]
    report["neighbourhoods"][word] = [
        (piece(j), round(float(w), 3)) for j, w in zip(table.ids[x], table.weights[x]) if j >= 0]
  return report


def main(argv):
  del argv
  f = flags.FLAGS
  if f.config is None or f.workdir is None:
    sys.exit("dlm_jax.kernels.build_neighbors: error: --config and --workdir are required")
  report = cli.run("dlm_jax.kernels.build_neighbors", inspect, f.config, f.workdir, f.words,
                   f.rebuild)
  for word, nbrs in report.pop("neighbourhoods").items():
    print(f"{word:>10}: " + ", ".join(f"{p}({w})" for p, w in nbrs))
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  cli.run_app("dlm_jax.kernels.build_neighbors", main, define_flags)

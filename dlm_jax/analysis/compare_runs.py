r"""Compare training runs from their workdirs: validation bits/token at matched steps.

  python -m dlm_jax.analysis.compare_runs \
      --runs=masking=workdirs/quickstart,uniform=workdirs/qs_uniform \
      --output=docs/quickstart_kernels

Reads each workdir's metrics.jsonl (written by dlm_jax.train) and writes
<output>.md (a markdown table of val NELBO bits/token at every step any run evaluated,
"—" where a run has no evaluation, with a note naming them) and <output>.png (the curves). Every number is labelled as what it
is: a Monte Carlo estimate of the NELBO, an upper bound on -log p(x).
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from dlm_jax import cli, reports
from dlm_jax.errors import UserError

KEY = "val/nelbo_bits_per_token"


def define_flags():
  flags.DEFINE_list("runs", None, "name=workdir pairs.")
  flags.DEFINE_string("output", "comparison", "Output path stem (.md and .png are added).")
  flags.DEFINE_string("title", "Validation NELBO (bits/token, upper bound)", "Plot title.")


def load_curve(workdir: str) -> dict[int, float]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise UserError(f"no metrics.jsonl in {workdir!r}: not a training workdir")
  curve, skipped = {}, 0
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:      # a line cut off by a kill (train drops it on resume)
        skipped += 1
        continue
      if isinstance(record, dict) and KEY in record and "step" in record:
        curve[int(record["step"])] = float(record[KEY])   # a resumed run's later value wins
  if skipped:
    print(f"warning: {path}: skipped {skipped} line(s) that are not JSON (cut off by a kill?)",
          flush=True)
  if not curve:
    raise UserError(f"{path} holds no validation NELBO yet")
  return curve


def compare(runs: dict[str, str], output: str, title: str) -> str:
  curves = {name: load_curve(workdir) for name, workdir in runs.items()}
  every = sorted(set.union(*(set(c) for c in curves.values())))
  lines = ["| run | " + " | ".join(f"step {s}" for s in every) + " |",
           "|---|" + "---|" * len(every)]
  for name, curve in curves.items():
    lines.append(f"| {name} | " + " | ".join(f"{curve[s]:.3f}" if s in curve else "—"
                                            for s in every) + " |")
  missing = {name: [s for s in every if s not in curve] for name, curve in curves.items()}
  missing = {name: steps for name, steps in missing.items() if steps}
  if missing:
    note = ("— : not evaluated at that step (" + "; ".join(
        f"{name} lacks step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))}"
        for name, steps in missing.items()) + ")")
    print(f"note: the runs were evaluated at different steps; {note}", flush=True)
    lines += ["", note]
  table = "\n".join(lines)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output + ".md", "w", encoding="utf-8") as f:
    f.write(f"{title}: Monte Carlo estimates of each kernel's NELBO (EMA parameters), "
            "upper bounds on -log2 p(x) per token.\n\n" + table + "\n")
  plt = reports.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name, curve in curves.items():
    steps = sorted(curve)
    ax.plot(steps, [curve[s] for s in steps], marker="o", label=name)
  ax.set_xlabel("training step")
  ax.set_ylabel("validation NELBO, bits/token (bound)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(output + ".png", dpi=120)
  plt.close(fig)
  return table


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.runs:
    sys.exit("dlm_jax.analysis.compare_runs: error: --runs=name=workdir,... is required")
  runs = {}
  for item in f.runs:
    if "=" not in item:
      sys.exit(f"dlm_jax.analysis.compare_runs: error: {item!r} is not name=workdir")
    name, workdir = item.split("=", 1)
    runs[name] = workdir
  print(cli.run("dlm_jax.analysis.compare_runs", compare, runs, f.output, f.title))
  print(f"wrote {f.output}.md and {f.output}.png")


if __name__ == "__main__":
  cli.run_app("dlm_jax.analysis.compare_runs", main, define_flags)

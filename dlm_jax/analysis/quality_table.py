r"""One markdown table from several `dlm_jax.evaluate --num_samples` reports.

  python -m dlm_jax.analysis.quality_table \
      masking=workdirs/qs_masking/eval/quality_step300.json uniform=... > table.md

The first report's 'data' row (the same metrics on real validation rows) heads the table.
"""

from __future__ import annotations

import json
import sys

from dlm_jax import sample_quality


def table(labelled_reports) -> str:
  lines = sample_quality.quality_markdown(labelled_reports[0][1], labelled_reports[0][0]).splitlines()
  out = lines[:3]                                       # header, rule, data row
  for label, report in labelled_reports:
    out += [l for l in sample_quality.quality_markdown(report, label).splitlines()[2:]
            if not l.startswith("| data ")]
  return "\n".join(out) + "\n"


def main(argv):
  if len(argv) < 2 or any("=" not in a for a in argv[1:]):
    sys.exit("usage: python -m dlm_jax.analysis.quality_table label=report.json ...")
  reports = []
  for arg in argv[1:]:
    label, path = arg.rsplit("=", 1)          # labels may contain "="
    with open(path, encoding="utf-8") as fh:
      reports.append((label, json.load(fh)))
  sys.stdout.write(table(reports))


if __name__ == "__main__":
  main(sys.argv)

r"""Quality against network evaluations for the masking kernel's unmasking laws.

  python -m dlm_jax.analysis.unmasking_table --workdir=workdirs/planted/masking \
      --output=docs/unmasking_planted [--num_samples=64] [--steps=16,64] \
      [--thresholds=0.5,0.7,0.9]

Samples the workdir's model unconditionally with `ancestral` (the exact sampler), the ordered
laws `confidence`, `margin`, `entropy` at each T of --steps, and `threshold` at each threshold
(at most seq_len steps: a threshold law stops calling the network once everything is
revealed). Network evaluations are counted as run, MDLM's cache included (a step in which
nothing changed costs none). Quality: on the planted language (data.source=synthetic) the
exact oracle NLL per token under the true law (scorers.oracle_metrics), otherwise the
judge's gen-PPL (--judge); with entropy and distinct-n either way. Writes <output>.md and
<output>.json.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import flags

from dlm_jax import cli, experiment, objectives, reports, sample_quality
from dlm_jax.errors import UserError
from dlm_jax.samplers import reverse


def define_flags():
  flags.DEFINE_string("workdir", None, "A masking-kernel workdir.")
  flags.DEFINE_string("output", "docs/unmasking", "Output stem (.md, .json).")
  flags.DEFINE_string("judge", None, "AR judge workdir (text corpora; the planted language "
                      "needs none).")
  flags.DEFINE_integer("num_samples", 64, "Samples per setting.")
  flags.DEFINE_list("steps", ["16", "64"], "Reverse steps T for the step-count laws.")
  flags.DEFINE_list("thresholds", ["0.5", "0.7", "0.9"], "Thresholds of the threshold law.")


def settings(steps_list, thresholds, seq_len: int):
  """(label, SamplerOptions) of every row of the table."""
  out = []
  for law in ("ancestral", "confidence", "margin", "entropy"):
    out += [(f"{law}, T={T}", reverse.SamplerOptions(steps=T, unmasking=law))
            for T in steps_list]
  out += [(f"threshold {tau:g}, T<={seq_len}",
           reverse.SamplerOptions(steps=seq_len, unmasking="threshold", threshold=tau))
          for tau in thresholds]
  return out


def table(workdir, judge, num_samples, steps_list, thresholds) -> dict:
  exp, _, _ = experiment.restore(workdir)
  if not objectives.require_diffusion(exp.objective, "unmasking_table").is_absorbing:
    raise UserError("the unmasking laws need a masking-kernel workdir")
  synthetic = exp.source.oracle() is not None      # a known distribution scores the samples
  if not synthetic and not judge:
    raise UserError("--judge (an AR workdir) is required outside the planted language")
  rows, data = [], None
  for label, opts in settings([int(t) for t in steps_list], [float(t) for t in thresholds],
                              exp.config.data.seq_len):
    report = sample_quality.sample_quality(workdir, num_samples, [opts.steps], opts, judge=judge,
                                       batch_size=num_samples)
    data, r = report["results"]
    rows.append({"setting": label, **dataclasses.asdict(opts), **r})
    print(f"{label}: nfe={r['network_evaluations']:.1f} "
          + (f"oracle_nll={r['oracle_nll_nats']:.3f}" if synthetic else f"gen_ppl={r['gen_ppl']:.1f}")
          + f" entropy={r['unigram_entropy']:.3f}", flush=True)
  return {"workdir": workdir, "judge": judge, "num_samples": num_samples,
          "quality": "oracle_nll_nats" if synthetic else "gen_ppl", "data": data, "rows": rows}


def markdown(report: dict) -> str:
  q = report["quality"]
  head = "oracle NLL (nats/token)" if q == "oracle_nll_nats" else "gen-PPL (judge)"
  lines = [f"{report['num_samples']} unconditional samples per setting from "
           f"`{report['workdir']}`; network evaluations per sample as run (MDLM's cache "
           "included).", "",
           f"| setting | network evaluations | {head} | unigram entropy | distinct-2 | "
           + ("valid |" if q == "oracle_nll_nats" else "|"),
           "|---|---|---|---|---|" + ("---|" if q == "oracle_nll_nats" else "")]
  for r in report["rows"] + [{"setting": "real rows", **report["data"]}]:
    quality = f"{r[q]:.3f}" + (f" ± {r['oracle_nll_se']:.3f}" if q == "oracle_nll_nats" else "")
    nfe = f"{r['network_evaluations']:.1f}" if "network_evaluations" in r else "—"
    cells = [r["setting"], nfe, quality, f"{r['unigram_entropy']:.3f}", f"{r['distinct_2']:.3f}"]
    if q == "oracle_nll_nats":
      cells.append(f"{r['valid_share']:.2f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.workdir:
    sys.exit("unmasking_table: error: --workdir is required")
  reports.check_writable(f.output)
  report = cli.run("unmasking_table", table, f.workdir, f.judge, f.num_samples, f.steps,
                   f.thresholds)
  text = markdown(report)
  written = reports.write(f.output, report, text)
  print(text)
  print(f"wrote {', '.join(written)}")


if __name__ == "__main__":
  cli.run_app("unmasking_table", main, define_flags)

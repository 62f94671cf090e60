r"""Compare kernels' training dynamics from their workdirs (the three kernel
factors of the SemDLM analysis, docs/design.md §6).

  python -m dlm_jax.analysis.kernel_report \
      --runs=masking=workdirs/qs_masking,uniform=workdirs/qs_uniform,... \
      --output=docs/kernel_report [--batches=4] [--exposure_steps=8]

Per run:
- NELBO vs training tokens: the validation NELBO (an upper bound, bits/token) logged by
  dlm_jax.train (metrics.jsonl);
- optimisation variance: at every saved checkpoint, on the same `--batches` training batches
  for every run, two-half-batch gradient-noise estimates (steps.gradient_noise: |G|^2,
  tr(Sigma), and B_simple = tr(Sigma) / |G|^2 in sequences), raw (not EMA) parameters;
- approximation difficulty: the per-t loss, the NELBO integrand at fixed t (prior excluded),
  final checkpoint, EMA parameters;
- exposure bias: for t in --exposure_t, states z_t produced by the model's own reverse
  sampler started from z_{t+0.25} ~ q(. | x) (`--exposure_steps` steps) vs fresh forward
  states z_t ~ q_t(. | x); the measure is the denoising cross-entropy -log x_hat(x_i | z_t)
  (unrestricted softmax) averaged over the positions the network must predict (masked ones
  for mask-only kernels, all otherwise). model - forward > 0 means the sampler's own states
  are harder for the network than the states it was trained on.
Writes <output>.md (one table) and <output>.png (four panels) and <output>.json.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import flags

from dlm_jax import cli, reports
from dlm_jax.analysis import dynamics


def define_flags():
  flags.DEFINE_list("runs", None, "name=workdir pairs.")
  flags.DEFINE_string("output", "kernel_report", "Output stem (.md, .png, .json).")
  flags.DEFINE_integer("batches", 4, "Batches for gradient noise, per-t loss and exposure.")
  flags.DEFINE_integer("batch_size", 32, "Sequences per batch.")
  flags.DEFINE_list("exposure_t", ["0.25", "0.5"], "Times t for the exposure-bias measure.")
  flags.DEFINE_integer("exposure_steps", 8, "Reverse steps from t + 0.25 down to t.")


def markdown(results) -> str:
  t_exp = list(results[0]["exposure"])
  head = ["run", "kernel", "step", "val NELBO bits (bound)", "B_simple (seqs)", "loss@t=0.15",
          "loss@t=0.55", "loss@t=0.95"] + [f"exposure CE model/fwd t={t}" for t in t_exp]
  lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  for r in results:
    nelbo = r["nelbo_curve"][-1][1] if r["nelbo_curve"] else float("nan")
    cells = [r["name"], f"{r['kernel']} ({r['structure']})", str(r["step"]), f"{nelbo:.3f}",
             f"{r['grad_noise'][-1]['grad_noise_scale']:.3g}",
             *(f"{r['loss_at_t'][k]:.3f}" for k in ("0.15", "0.55", "0.95")),
             *(f"{r['exposure'][t]['model_states']:.3f} / {r['exposure'][t]['forward_states']:.3f}"
               for t in t_exp)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(results, path):
  plt = reports.pyplot()
  fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
  for r in results:
    if r["nelbo_curve"]:
      xs, ys = zip(*r["nelbo_curve"])
      axes[0].plot(xs, ys, marker="o", label=r["name"])
    axes[1].plot([n["tokens"] for n in r["grad_noise"]],
                 [n["grad_noise_scale"] for n in r["grad_noise"]], marker="o", label=r["name"])
    axes[2].plot([float(t) for t in r["loss_at_t"]], list(r["loss_at_t"].values()), marker=".",
                 label=r["name"])
  width = 0.8 / len(results)
  t_exp = list(results[0]["exposure"])
  for i, r in enumerate(results):
    axes[3].bar(np.arange(len(t_exp)) + i * width, [r["exposure"][t]["gap"] for t in t_exp],
                width, label=r["name"])
  axes[0].set(xlabel="training tokens", ylabel="val NELBO bits/token (upper bound)",
              title="NELBO vs tokens")
  axes[1].set(xlabel="training tokens", ylabel="B_simple = tr(Sigma)/|G|^2 (sequences)",
              title="gradient noise scale", yscale="log")
  axes[2].set(xlabel="t", ylabel="NELBO integrand (nats/token)", title="per-t loss", yscale="log")
  axes[3].set(xticks=np.arange(len(t_exp)) + 0.4 - width / 2, xticklabels=[f"t={t}" for t in t_exp],
              ylabel="CE on model states - CE on forward states (nats)", title="exposure bias")
  for ax in axes:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.runs or any("=" not in r for r in f.runs):
    sys.exit("kernel_report: error: --runs=name=workdir,... is required")
  results = []
  for run in f.runs:
    name, workdir = run.split("=", 1)
    results.append(cli.run("kernel_report", dynamics.analyse, name, workdir, f.batches, f.batch_size,
                           f.exposure_t, f.exposure_steps))
    print(f"{name}: done", flush=True)
  written = reports.write(f.output, results, markdown(results),
                          lambda path: plot(results, path))
  print(markdown(results))
  print(f"wrote {', '.join(written)}")


if __name__ == "__main__":
  cli.run_app("kernel_report", main, define_flags)

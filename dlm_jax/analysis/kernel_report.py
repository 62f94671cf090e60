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

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from dlm_jax import cli, evaluation, experiment, objectives, parallel, reports
from dlm_jax.checkpoint import Checkpointer
from dlm_jax.errors import UserError
from dlm_jax.models.transformer import denoiser_logits
from dlm_jax.samplers import reverse


def define_flags():
  flags.DEFINE_list("runs", None, "name=workdir pairs.")
  flags.DEFINE_string("output", "kernel_report", "Output stem (.md, .png, .json).")
  flags.DEFINE_integer("batches", 4, "Batches for gradient noise, per-t loss and exposure.")
  flags.DEFINE_integer("batch_size", 32, "Sequences per batch.")
  flags.DEFINE_list("exposure_t", ["0.25", "0.5"], "Times t for the exposure-bias measure.")
  flags.DEFINE_integer("exposure_steps", 8, "Reverse steps from t + 0.25 down to t.")


def _batches(rows, batch_size, n):
  rows = np.asarray(rows)
  if len(rows) < batch_size * n:
    raise UserError(f"need {batch_size * n} rows, the split has {len(rows)}")
  return [{"tokens": rows[i * batch_size:(i + 1) * batch_size].astype(np.int32)} for i in range(n)]


def _nelbo_curve(workdir, tokens_per_step):
  path = os.path.join(workdir, "metrics.jsonl")
  curve = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as fh:
      for line in fh:
        m = json.loads(line)
        if "val/nelbo_bits_per_token" in m:
          curve[m["step"]] = m["val/nelbo_bits_per_token"]
  return [(s * tokens_per_step, v) for s, v in sorted(curve.items())]


def _denoising_ce(exp, params, x, z, t):
  logits = denoiser_logits(exp.model, params, exp.kernel, z, jnp.full((x.shape[0],), t))
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  ce = -jnp.take_along_axis(logp, x[..., None], -1)[..., 0]
  kernel = exp.kernel
  only_masked = kernel.is_absorbing
  where = (z == kernel.mask_id) if only_masked else jnp.ones_like(ce, bool)
  return jnp.sum(jnp.where(where, ce, 0.0)), jnp.sum(where)


def exposure_bias(exp, params, batches, times, n_steps: int, seed: int = 0):
  kernel, out = exp.kernel, {}
  opts = reverse.SamplerOptions(steps=n_steps)
  ce = jax.jit(lambda x, z, t: _denoising_ce(exp, params, x, z, t))

  @jax.jit
  def run_reverse(x, key, t0, t):
    z = kernel.sample_forward(jax.random.fold_in(key, 0), x, jnp.full((x.shape[0],), t0))
    grid = jnp.linspace(t0, t, n_steps + 1)

    def body(z, i):
      logits = denoiser_logits(exp.model, params, kernel, z, jnp.full((x.shape[0],), grid[i]))
      return reverse.reverse_step(kernel, opts, jax.random.fold_in(key, i + 1), z,
                                  logits.astype(jnp.float32), grid[i], grid[i + 1]), None
    z, _ = jax.lax.scan(body, z, jnp.arange(n_steps))
    return z

  for t in times:
    t0 = min(t + 0.25, 1.0)
    sums = np.zeros(4)
    for i, b in enumerate(batches):
      x = b["tokens"]
      key = jax.random.key(seed + i)
      z_model = run_reverse(x, key, t0, t)
      z_fwd = kernel.sample_forward(jax.random.fold_in(key, 99), x, jnp.full((x.shape[0],), t))
      sums += np.array([*map(float, ce(x, z_model, t)), *map(float, ce(x, z_fwd, t))])
    model, fwd = sums[0] / max(sums[1], 1), sums[2] / max(sums[3], 1)
    out[f"{t:g}"] = {"model_states": model, "forward_states": fwd, "gap": model - fwd}
  return out


def analyse(name, workdir, n_batches, batch_size, exposure_t, exposure_steps):
  exp, ema, last = experiment.restore(workdir)
  objectives.require_diffusion(exp.objective, "the kernel report")
  cfg = exp.config
  train_batches = [parallel.global_batch(b, exp.mesh)
                   for b in _batches(exp.rows("train"), batch_size, n_batches)]
  val_batches = _batches(exp.rows("validation"), batch_size, n_batches)
  noise_fn = exp.jit_gradient_noise()
  noise = []
  ckpt = Checkpointer(workdir, create=False)
  for step in sorted(ckpt.all_steps()):
    raw = ckpt.restore(step, exp.abstract_state)[0].params
    vals = [jax.device_get(noise_fn(raw, b, jax.random.key(i)))
            for i, b in enumerate(train_batches)]
    signal = float(np.mean([v["grad_signal_sq"] for v in vals]))
    trace = float(np.mean([v["grad_noise_trace"] for v in vals]))
    noise.append({"step": step, "tokens": step * cfg.train.batch_size * cfg.data.seq_len,
                  "grad_signal_sq": signal, "grad_noise_trace": trace,
                  "grad_noise_scale": trace / signal})
  ckpt.close()
  profile = evaluation.loss_profile(exp, exp.jit_loss_at_times(), ema, exp.rows("validation"),
                                    batch_size, n_batches, seed=0)
  return {
      "name": name, "workdir": os.path.abspath(workdir), **exp.objective.describe(),
      "step": last,
      "nelbo_curve": _nelbo_curve(workdir, cfg.train.batch_size * cfg.data.seq_len),
      "grad_noise": noise,
      "loss_at_t": {k.split("/")[-1]: v for k, v in profile.items()},
      "exposure": exposure_bias(exp, ema, val_batches, [float(t) for t in exposure_t],
                                exposure_steps),
  }


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
    results.append(cli.run("kernel_report", analyse, name, workdir, f.batches, f.batch_size,
                           f.exposure_t, f.exposure_steps))
    print(f"{name}: done", flush=True)
  written = reports.write(f.output, results, markdown(results),
                          lambda path: plot(results, path))
  print(markdown(results))
  print(f"wrote {', '.join(written)}")


if __name__ == "__main__":
  cli.run_app("kernel_report", main, define_flags)

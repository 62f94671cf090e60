"""Training-dynamics measures of a diffusion run, read from its workdir (the kernel factors
of the SemDLM analysis, docs/design.md §6): the logged NELBO curve, two-half-batch gradient
noise at every saved checkpoint, the per-t loss, and exposure bias. The commands
`analysis.kernel_report` and `experiments.planted` report them; the definitions are in
kernel_report's docstring.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax import denoiser, evaluation, experiment, objectives, parallel, rng
from dlm_jax.checkpoint import Checkpointer
from dlm_jax.errors import UserError
from dlm_jax.samplers import reverse


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
  logits = denoiser.logits(exp.model, params, exp.process, z, jnp.full((x.shape[0],), t))
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  ce = -jnp.take_along_axis(logp, x[..., None], -1)[..., 0]
  process = exp.process
  only_masked = process.absorbing
  where = (z == process.mask_id) if only_masked else jnp.ones_like(ce, bool)
  return jnp.sum(jnp.where(where, ce, 0.0)), jnp.sum(where)


def exposure_bias(exp, params, batches, times, n_steps: int, seed: int = 0):
  kernel, out = exp.process, {}
  opts = reverse.SamplerOptions(steps=n_steps)
  ce = jax.jit(lambda x, z, t: _denoising_ce(exp, params, x, z, t))

  @jax.jit
  def run_reverse(x, key, t0, t):
    z = kernel.sample_forward(jax.random.fold_in(key, 0), x, jnp.full((x.shape[0],), t0))
    grid = jnp.linspace(t0, t, n_steps + 1)

    def body(z, i):
      logits = denoiser.logits(exp.model, params, kernel, z, jnp.full((x.shape[0],), grid[i]))
      return reverse.reverse_step(kernel, opts, jax.random.fold_in(key, i + 1), z,
                                  logits.astype(jnp.float32), grid[i], grid[i + 1]), None
    z, _ = jax.lax.scan(body, z, jnp.arange(n_steps))
    return z

  for t in times:
    t0 = min(t + 0.25, 1.0)
    sums = np.zeros(4)
    for i, b in enumerate(batches):
      x = b["tokens"]
      key = jax.random.fold_in(rng.key(seed), i)
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
                                    batch_size, n_batches, rng.stream(0, "loss_profile"))
  return {
      "name": name, "workdir": os.path.abspath(workdir), **exp.objective.describe(),
      "step": last,
      "nelbo_curve": _nelbo_curve(workdir, cfg.train.batch_size * cfg.data.seq_len),
      "grad_noise": noise,
      "loss_at_t": {k.split("/")[-1]: v for k, v in profile.items()},
      "exposure": exposure_bias(exp, ema, val_batches, [float(t) for t in exposure_t],
                                exposure_steps),
  }

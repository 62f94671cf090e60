r"""Position-decay probe and the marginal trap on a trained checkpoint (after *The Role of
Discreteness in Diffusion LLMs*).

  python -m dlm_jax.analysis.probe --workdir=workdirs/qs_masking --judge=workdirs/qs_ar \
      [--num_prompts=32] [--prompt_tokens=16] [--masks=64] [--output=docs/probe_masking]

1. Decay: each prompt (the first P tokens of a validation row) is followed by M fully noised
   positions (the mask, or a draw from p_1 for kernels without one, at t = 1). One network
   call gives x_hat at every noised position; per distance d = 1..M from the prompt, averaged
   over prompts: the entropy of x_hat, its mass on the 10 most frequent training tokens and
   on EOS, and the top-k tokens of the averaged distribution.
2. Marginal trap (kernels with a mask): the first n noised positions are decoded either in
   one parallel step (each token drawn from its own marginal x_hat) or one at a time left to
   right (n calls, each conditioning on the tokens already decoded); the judge scores the n
   tokens given the prompt. Parallel decoding ignores the dependence between the n tokens,
   so its judge NLL is expected to be higher; the probe measures by how much.
Writes <output>.json and <output>.png.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from dlm_jax import cli, denoiser, evaluation, experiment, objectives, reports, rng, scorers
from dlm_jax.errors import UserError
from dlm_jax.samplers.reverse import draw_tokens
from dlm_jax.data.rows import unigram_counts


def define_flags():
  flags.DEFINE_string("workdir", None, "Workdir of the model to probe.")
  flags.DEFINE_string("judge", None, "AR judge workdir for the marginal trap (optional).")
  flags.DEFINE_integer("num_prompts", 32, "Validation rows used as prompts.")
  flags.DEFINE_integer("prompt_tokens", 16, "Prompt length (BOS included).")
  flags.DEFINE_integer("masks", 64, "Noised positions after the prompt.")
  flags.DEFINE_integer("top_k", 5, "Tokens listed per distance.")
  flags.DEFINE_list("trap_sizes", ["2", "4", "8"], "n for the marginal trap.")
  flags.DEFINE_integer("seed", 0, "Seed.")
  flags.DEFINE_string("output", None, "Output stem (default <workdir>/eval/probe).")


def _noised_inputs(exp, prompts, masks: int, key):
  n, P = prompts.shape
  if exp.process.has_mask:
    tail = jnp.full((n, masks), exp.process.mask_id)
  else:
    tail = exp.process.sample_prior(key, (n, masks))
  return jnp.concatenate([jnp.asarray(prompts), tail], 1)


def position_decay(exp, params, prompts, masks: int, top_k: int, seed: int):
  n, P = prompts.shape
  z = _noised_inputs(exp, prompts, masks, rng.key(seed))
  logits = denoiser.logits(exp.model, params, exp.process, z, jnp.ones((n,)))
  probs = np.asarray(jax.nn.softmax(logits[:, P:].astype(jnp.float32), -1), np.float64)
  counts = unigram_counts(exp.config.data, exp.tokenizer, exp.workdir)
  frequent = np.argsort(-np.asarray(counts))[:10]
  entropy = -(probs * np.log(np.maximum(probs, 1e-30))).sum(-1).mean(0)
  mean_probs = probs.mean(0)                                          # (M, V)
  top = np.argsort(-mean_probs, -1)[:, :top_k]
  return {
      "distance": list(range(1, masks + 1)),
      "entropy_nats": entropy.tolist(),
      "mass_on_top10_frequent": probs[..., frequent].sum(-1).mean(0).tolist(),
      "mass_on_eos": probs[..., exp.tokenizer.eos_id].mean(0).tolist(),
      "top_tokens": [[(exp.tokenizer.decode([int(i)]), float(mean_probs[d, i])) for i in top[d]]
                     for d in range(masks)],
      "frequent_tokens": [exp.tokenizer.decode([int(i)]) for i in frequent],
  }


def marginal_trap(exp, params, judge, prompts, masks: int, sizes, seed: int):
  """Judge NLL per token of n tokens decoded in parallel vs one at a time."""
  n_prompts, P = prompts.shape
  out = {}
  apply = jax.jit(lambda z: denoiser.logits(exp.model, params, exp.process, z,
                                            jnp.ones((n_prompts,))))
  for n in sizes:
    key = jax.random.fold_in(rng.key(seed), n)
    z = _noised_inputs(exp, prompts, masks, key)
    parallel = draw_tokens(jax.random.fold_in(key, 0),
                           apply(z)[:, P: P + n].astype(jnp.float32), True)
    seq = z
    for j in range(n):
      token = draw_tokens(jax.random.fold_in(key, j + 1),
                          apply(seq)[:, P + j].astype(jnp.float32), True)
      seq = seq.at[:, P + j].set(token)
    rows = {"parallel": jnp.concatenate([jnp.asarray(prompts), parallel], 1),
            "one_at_a_time": seq[:, : P + n]}
    result = {}
    for name, r in rows.items():
      total, count = judge.nll(np.asarray(r), exp.tokenizer, score_from=P)
      result[f"{name}_judge_nll"] = total / count
    result["gap_nats_per_token"] = result["parallel_judge_nll"] - result["one_at_a_time_judge_nll"]
    out[str(n)] = result
  return out


def probe(workdir, judge, num_prompts, prompt_tokens, masks, top_k, trap_sizes, seed):
  exp, params, step = experiment.restore(workdir)
  process = objectives.require_diffusion(exp.objective, "the probe")
  if prompt_tokens + masks > exp.config.data.seq_len:
    raise UserError(f"--prompt_tokens + --masks = {prompt_tokens + masks} exceeds the trained "
                    f"seq_len {exp.config.data.seq_len}")
  rows = np.asarray(exp.rows("validation")[:num_prompts]).copy()
  if len(rows) < num_prompts:
    raise UserError(f"the validation split has only {len(rows)} rows")
  rows[:, 0] = exp.tokenizer.bos_id
  prompts = rows[:, :prompt_tokens]
  report = {"workdir": os.path.abspath(workdir), "step": step, **exp.objective.describe(),
            "num_prompts": num_prompts,
            "prompt_tokens": prompt_tokens, "masks": masks,
            "decay": position_decay(exp, params, prompts, masks, top_k, seed)}
  if judge and process.has_mask_token:
    report["marginal_trap"] = marginal_trap(exp, params, scorers.WorkdirJudge(judge), prompts,
                                            masks, [int(s) for s in trap_sizes], seed)
    report["marginal_trap_what"] = ("mean judge NLL (nats/token) of n tokens after the prompt, "
                                    "decoded in one parallel step vs one at a time")
  elif judge:
    report["marginal_trap"] = None
    report["marginal_trap_what"] = "needs a kernel with a mask state"
  return report


def plot(report, path):
  plt = reports.pyplot()
  d = report["decay"]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  axes[0].plot(d["distance"], d["entropy_nats"])
  axes[0].set(xlabel="distance from the prompt", ylabel="entropy of x_hat (nats)",
              title=f"{report['kernel']}: entropy vs distance")
  axes[1].plot(d["distance"], d["mass_on_top10_frequent"], label="10 most frequent tokens")
  axes[1].plot(d["distance"], d["mass_on_eos"], label="EOS")
  axes[1].set(xlabel="distance from the prompt", ylabel="probability mass",
              title="mass on frequent tokens / EOS")
  axes[1].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.workdir:
    sys.exit("probe: error: --workdir is required")
  report = cli.run("probe", probe, f.workdir, f.judge, f.num_prompts, f.prompt_tokens, f.masks,
                   f.top_k, f.trap_sizes, f.seed)
  stem = f.output or os.path.join(f.workdir, "eval", "probe")
  written = reports.write(stem, report, plot=lambda path: plot(report, path))
  d = report["decay"]
  for i in sorted({i for i in (0, 3, 15) if i < len(d["distance"])} | {len(d["distance"]) - 1}):
    print(f"d={d['distance'][i]}: entropy={d['entropy_nats'][i]:.3f} "
          f"top10_mass={d['mass_on_top10_frequent'][i]:.3f} eos={d['mass_on_eos'][i]:.4f} "
          f"top={d['top_tokens'][i][:3]}")
  if report.get("marginal_trap"):
    print(json.dumps(report["marginal_trap"], indent=1))
  print(f"wrote {', '.join(written)}")


if __name__ == "__main__":
  cli.run_app("probe", main, define_flags)

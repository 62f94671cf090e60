r"""Generate text from a trained model with the exact reverse sampler of its kernel.

  python -m dlm_jax.sample --workdir=/tmp/dlm --num_samples=4 --steps=128 \
      [--length=128] [--prompt="ROMEO."] [--suffix="Exeunt."] [--temperature=1.0] \
      [--top_p=1.0] [--eta=0.0 --eta_schedule=constant|linear] [--rho=0.0] \
      [--unmasking=ancestral|fixed|random] [--block_size=0] [--no_cache] [--float64]

--eta / --rho are SemDLM+'s global transition and semantic-frequency penalty (any kernel
accepts them); --unmasking other than ancestral and caching apply to the masking kernel;
--block_size generates semi-autoregressively, --steps per block. A causal (AR) workdir
samples left to right. Prints the samples and writes
<workdir>/samples/step<N>_T<steps>.{txt,json} (or --output).
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from dlm_jax import cli, experiment
from dlm_jax.errors import UserError
from dlm_jax.samplers import autoregressive, reverse


def define_sampler_flags(steps: bool = True):
  if steps:
    flags.DEFINE_integer("steps", 128, "Reverse steps T (per block with --block_size).")
  flags.DEFINE_integer("length", None, "Sequence length (default: data.seq_len).")
  flags.DEFINE_string("prompt", None, "Text prefix (after BOS).")
  flags.DEFINE_string("suffix", None, "Text fixed at the end of the sequence (infilling).")
  flags.DEFINE_float("temperature", 1.0, "Softmax temperature.")
  flags.DEFINE_float("top_p", 1.0, "Nucleus sampling of the denoiser (1: off).")
  flags.DEFINE_float("eta", 0.0, "SemDLM+ global transition probability per position and step.")
  flags.DEFINE_enum("eta_schedule", "constant", list(reverse.ETA_SCHEDULES),
                    "eta_t = eta (constant) or eta * t (linear).")
  flags.DEFINE_float("rho", 0.0, "SemDLM+ semantic-frequency penalty.")
  flags.DEFINE_enum("unmasking", "ancestral", ["ancestral", "fixed", "random"],
                    "Unmasking-size law (masking kernel).")
  flags.DEFINE_integer("block_size", 0, "Semi-autoregressive block length (0: off).")
  flags.DEFINE_bool("no_cache", False, "Call the network at every step.")
  flags.DEFINE_bool("float64", False, "Sample in float64.")
  flags.DEFINE_integer("batch_size", 16, "Samples generated per jitted call.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")


def define_flags():
  flags.DEFINE_string("workdir", None, "Training workdir with checkpoints.")
  flags.DEFINE_integer("num_samples", 4, "Number of samples.")
  flags.DEFINE_string("output", None, "Output stem (default <workdir>/samples/step<N>_T<T>).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  define_sampler_flags()


def options_from_flags(f, steps=None) -> reverse.SamplerOptions:
  return reverse.SamplerOptions(
      steps=steps or f.steps, temperature=f.temperature, top_p=f.top_p, eta=f.eta,
      eta_schedule=f.eta_schedule, rho=f.rho, unmasking=f.unmasking, block_size=f.block_size,
      cache=not f.no_cache, float64=f.float64)


def conditioning(tokenizer, num: int, length: int, prompt=None, suffix=None):
  """(fixed tokens, fixed mask): BOS + prompt at the start, suffix at the end."""
  prefix = [tokenizer.bos_id] + (tokenizer.encode([prompt])[0] if prompt else [])
  tail = tokenizer.encode([suffix])[0] if suffix else []
  if len(prefix) + len(tail) >= length:
    raise UserError(f"prompt + suffix are {len(prefix) + len(tail)} tokens, not shorter than "
                    f"the length {length}")
  fixed = np.zeros((num, length), np.int32)
  mask = np.zeros((num, length), bool)
  fixed[:, : len(prefix)], mask[:, : len(prefix)] = prefix, True
  if tail:
    fixed[:, length - len(tail):], mask[:, length - len(tail):] = tail, True
  return fixed, mask


def _progress(done: int, total: int, what: str):
  if sys.stderr.isatty() or os.environ.get("DLM_PROGRESS"):
    bar = "#" * int(30 * done / total)
    sys.stderr.write(f"\r{what} [{bar:<30}] {done}/{total}")
    if done == total:
      sys.stderr.write("\n")
    sys.stderr.flush()


def generate_with(exp, params, num_samples: int, opts: reverse.SamplerOptions, length=None,
                  prompt=None, suffix=None, seed: int = 0, batch_size: int = 16,
                  progress: str | None = None, prompt_rows=None):
  """Samples from a restored experiment. Returns (token array (N, L), info dict).

  prompt_rows: optional (N, P) token ids, one prefix per sample (BOS included), instead of
  the text `prompt`."""
  if num_samples < 1 or batch_size < 1:
    raise UserError("num_samples and batch_size must be >= 1")
  length = length or exp.config.data.seq_len
  if length > exp.config.data.seq_len:
    raise UserError(f"length {length} exceeds the trained seq_len {exp.config.data.seq_len}")
  batch_size = min(batch_size, num_samples)
  fixed, mask = conditioning(exp.tokenizer, batch_size, length, prompt, suffix)
  if prompt_rows is not None and (len(prompt_rows) < num_samples
                                  or np.shape(prompt_rows)[1] >= length):
    raise UserError(f"need {num_samples} prompts shorter than {length} tokens, got "
                    f"{np.shape(prompt_rows)}")
  if exp.kernel is None:
    fn = autoregressive.jit_sample(exp.model, opts.temperature, opts.top_p)
    sampler = "autoregressive"
  else:
    reverse.check_options(opts, exp.kernel, length)
    fn = reverse.jit_sample(exp.model, exp.kernel, opts)
    sampler = f"reverse/{exp.kernel.name}"
  rows, nfes, seconds = [], [], []
  n_batches = -(-num_samples // batch_size)
  for b in range(n_batches):
    if prompt_rows is not None:
      chunk = np.asarray(prompt_rows)[b * batch_size:(b + 1) * batch_size]
      fixed[: len(chunk), : chunk.shape[1]] = chunk
      mask[: len(chunk), : chunk.shape[1]] = True
    start = time.time()
    tokens, nfe = fn(params, jax.random.fold_in(jax.random.key(seed), b), jnp.asarray(fixed),
                     jnp.asarray(mask))
    rows.append(np.asarray(jax.device_get(tokens)))
    nfes.append(int(nfe))
    seconds.append(time.time() - start)
    if progress:
      _progress(b + 1, n_batches, progress)
  tokens = np.concatenate(rows)[:num_samples]
  steady = seconds[1:] or seconds                # the first call includes compilation
  per_batch = float(np.mean(steady))
  total_steps = opts.steps * (length // (opts.block_size or length)) if exp.kernel else length - 1
  info = {"sampler": sampler, "options": opts.__dict__, "length": length,
          "num_samples": num_samples, "batch_size": batch_size, "prompt": prompt,
          "suffix": suffix, "network_evaluations": float(np.mean(nfes)),
          "seconds_first_call_with_compile": seconds[0],
          "seconds_per_batch": per_batch, "timing_includes_compile": len(seconds) == 1,
          "steps_per_sec": total_steps / per_batch,
          "tokens_per_sec": batch_size * length / per_batch}
  return tokens, info


def generate(workdir: str, num_samples: int, opts: reverse.SamplerOptions, length=None,
             prompt=None, suffix=None, seed: int = 0, step=None, batch_size: int = 16):
  """Restores `workdir` and samples. Returns (texts, tokens, info)."""
  exp, params, ckpt_step = experiment.restore(workdir, step)
  tokens, info = generate_with(exp, params, num_samples, opts, length, prompt, suffix, seed,
                               batch_size, progress="sampling")
  info["step"] = ckpt_step
  return [exp.tokenizer.decode(row) for row in tokens], tokens, info


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.workdir:
    sys.exit("dlm_jax.sample: error: --workdir is required")
  texts, tokens, info = cli.run("dlm_jax.sample", generate, f.workdir, f.num_samples,
                                options_from_flags(f), f.length, f.prompt, f.suffix, f.seed,
                                f.step, f.batch_size)
  for i, text in enumerate(texts):
    print(f"=== sample {i} ===\n{text}\n")
  print(json.dumps(info))
  stem = f.output or os.path.join(f.workdir, "samples", f"step{info['step']}_T{f.steps}")
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  with open(stem + ".txt", "w", encoding="utf-8") as fh:
    fh.write("\n\n".join(texts))
  with open(stem + ".json", "w", encoding="utf-8") as fh:
    json.dump({**info, "samples": texts, "tokens": tokens.tolist()}, fh)
  print(f"wrote {stem}.txt")


if __name__ == "__main__":
  cli.run_app("dlm_jax.sample", main, define_flags)

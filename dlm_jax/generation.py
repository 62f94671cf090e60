"""Sampling from a restored run: conditioning (prompt, suffix, per-sample prefixes), batches
through the objective's jitted sampler (the exact reverse sampler of a diffusion kernel, or
left to right for the AR baseline), timings. `python -m dlm_jax.sample` is its shell."""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax import experiment
from dlm_jax.data.tokenizer import sample_prefix
from dlm_jax.errors import UserError
from dlm_jax.samplers import reverse


def conditioning(tokenizer, num: int, length: int, prompt=None, suffix=None):
  """(fixed tokens, fixed mask): BOS + prompt at the start, suffix at the end."""
  prefix = sample_prefix(tokenizer) + (tokenizer.encode([prompt])[0] if prompt else [])
  tail = tokenizer.encode([suffix])[0] if suffix else []
  if len(prefix) + len(tail) >= length:
    raise UserError(f"prompt + suffix are {len(prefix) + len(tail)} tokens, not shorter than "
                    f"the length {length}")
  fixed = np.zeros((num, length), np.int32)
  mask = np.zeros((num, length), bool)
  if prefix:
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
  length = exp.config.data.seq_len if length is None else length
  if length < 1:
    raise UserError(f"length must be >= 1 (omit it for the trained seq_len), got {length}")
  if length > exp.config.data.seq_len:
    raise UserError(f"length {length} exceeds the trained seq_len {exp.config.data.seq_len}")
  batch_size = min(batch_size, num_samples)
  fixed, mask = conditioning(exp.tokenizer, batch_size, length, prompt, suffix)
  if prompt_rows is not None and (len(prompt_rows) < num_samples
                                  or np.shape(prompt_rows)[1] >= length):
    raise UserError(f"need {num_samples} prompts shorter than {length} tokens, got "
                    f"{np.shape(prompt_rows)}")
  fn = exp.objective.sampler(exp.model, opts, length)
  sampler = (f"reverse/{exp.objective.name}" if exp.objective.is_bound
             else exp.objective.name)
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
  total_steps = exp.objective.sampler_steps(opts, length)
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

r"""Generate text from a trained masking DLM with the MDLM ancestral sampler.

  python -m dlm_jax.sample --workdir=/tmp/dlm --num_samples=4 --steps=128 \
      [--length=128] [--prompt="ROMEO."] [--no_cache] [--temperature=1.0]

Prints the samples and writes <workdir>/samples/step<N>_T<steps>.{txt,json}.
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
from dlm_jax.samplers import masking

def define_flags():
  flags.DEFINE_string("workdir", None, "Training workdir with checkpoints.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_integer("num_samples", 4, "Number of samples.")
  flags.DEFINE_integer("length", None, "Sequence length (default: data.seq_len).")
  flags.DEFINE_integer("steps", 128, "Reverse steps T.")
  flags.DEFINE_string("prompt", None, "Optional text prefix (after BOS).")
  flags.DEFINE_bool("no_cache", False, "Call the network at every step.")
  flags.DEFINE_float("temperature", 1.0, "Softmax temperature.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")


def generate(workdir: str, num_samples: int = 4, length=None, steps: int = 128, prompt=None,
             use_cache: bool = True, temperature: float = 1.0, seed: int = 0, step=None):
  """Returns (texts, token arrays, info dict)."""
  if steps < 1 or num_samples < 1:
    raise UserError("--steps and --num_samples must be >= 1")
  if temperature <= 0:
    raise UserError(f"--temperature must be > 0, got {temperature}")
  exp, params, ckpt_step = experiment.restore(workdir, step)
  if exp.kernel is None or exp.kernel.name != "masking":
    raise UserError(f"this workdir's model uses the "
                    f"{exp.kernel.name if exp.kernel else 'autoregressive'} objective; only the "
                    "masking kernel has a sampler so far (the others land with the samplers issue)")
  length = length or exp.config.data.seq_len
  prefix = [exp.tokenizer.bos_id] + (exp.tokenizer.encode([prompt])[0] if prompt else [])
  if len(prefix) >= length:
    raise UserError(f"prompt is {len(prefix)} tokens, not shorter than --length={length}")
  fixed = np.zeros((num_samples, length), np.int32)
  fixed[:, : len(prefix)] = prefix
  fixed_mask = np.zeros((num_samples, length), bool)
  fixed_mask[:, : len(prefix)] = True
  # Caching is exact only when x_hat does not depend on t.
  use_cache = use_cache and not exp.model.cfg.time_conditioning
  fn = masking.jit_sample(exp.model, exp.kernel, steps, use_cache, temperature)
  start = time.time()
  tokens, nfe = fn(params, jax.random.key(seed), jnp.asarray(fixed), jnp.asarray(fixed_mask))
  tokens = np.asarray(jax.device_get(tokens))
  elapsed = time.time() - start
  texts = [exp.tokenizer.decode(row) for row in tokens]
  info = {"step": ckpt_step, "steps": steps, "length": length, "num_samples": num_samples,
          "network_evaluations": int(nfe), "cache": use_cache, "temperature": temperature,
          "seconds_including_compile": elapsed, "prompt": prompt}
  return texts, tokens, info


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.workdir:
    sys.exit("dlm_jax.sample: error: --workdir is required")
  texts, tokens, info = cli.run("dlm_jax.sample", generate, f.workdir, f.num_samples, f.length,
                                f.steps, f.prompt, not f.no_cache, f.temperature, f.seed, f.step)
  for i, text in enumerate(texts):
    print(f"=== sample {i} ===\n{text}\n")
  print(json.dumps(info))
  out = os.path.join(f.workdir, "samples")
  os.makedirs(out, exist_ok=True)
  stem = os.path.join(out, f"step{info['step']}_T{info['steps']}")
  with open(stem + ".txt", "w", encoding="utf-8") as fh:
    fh.write("\n\n".join(texts))
  with open(stem + ".json", "w", encoding="utf-8") as fh:
    json.dump({**info, "samples": texts, "tokens": tokens.tolist()}, fh)
  print(f"wrote {stem}.txt")


if __name__ == "__main__":
  cli.run_app("dlm_jax.sample", main, define_flags)

r"""Reverse-sampler throughput per kernel and per option, on whatever device runs it.

  python benchmarks/samplers.py --config=configs/quickstart.py [--steps=64] [--batch_size=16]

A freshly initialised model of the config's shape (weights do not change the cost), random-
embedding neighbour tables, unconditional sampling of (batch_size, seq_len) tokens in T
steps. Prints, per sampler, the time per reverse step, steps/s, generated tokens/s and the
step time relative to the plain ancestral step of the same kernel (SemDLM+'s controls) and
to the masking ancestral step without cache (every sampler calls the network each step).
"""

from __future__ import annotations

import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from configs import base  # noqa: E402
from dlm_jax.models import Transformer, model_config  # noqa: E402
from dlm_jax.samplers import reverse  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import random_table_process, time_fn  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Config file.")
flags.DEFINE_integer("steps", 64, "Reverse steps T per sample.")
flags.DEFINE_integer("batch_size", 16, "Sequences per call.")
flags.DEFINE_integer("repeats", 2, "Timed calls.")
FLAGS = flags.FLAGS

CASES = [  # (label, kernel, neighbors, global_kind, options)
    ("masking ancestral, no cache", "masking", None, None, dict(cache=False)),
    ("masking ancestral, cache", "masking", None, None, dict(cache=True)),
    ("masking fixed sizes", "masking", None, None, dict(cache=False, unmasking="fixed")),
    ("masking random sizes", "masking", None, None, dict(cache=False, unmasking="random")),
    ("uniform ancestral", "uniform", None, None, {}),
    ("semdlm (A) ancestral", "semdlm", "partition", None, {}),
    ("semdlm (B) ancestral", "semdlm", "topk", None, {}),
    ("semdlm_plus (A, uniform) ancestral", "semdlm_plus", "partition", "uniform", {}),
    ("semdlm_plus (A, uniform) eta=0.1 rho=2", "semdlm_plus", "partition", "uniform",
     dict(eta=0.1, rho=2.0)),
    ("semdlm_plus (B, mask) ancestral", "semdlm_plus", "topk", "mask", {}),
    ("semdlm_plus (B, mask) eta=0.1 rho=2", "semdlm_plus", "topk", "mask",
     dict(eta=0.1, rho=2.0)),
]


def main(argv):
  del argv
  cfg = FLAGS.config
  L, B, V = cfg.data.seq_len, FLAGS.batch_size, cfg.data.vocab_size
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} | B={B} L={L} V={V} "
        f"T={FLAGS.steps} | model {cfg.model.size} {cfg.model.dtype}", flush=True)
  rows, plain = [], {}
  for label, name, nbrs, gkind, options in CASES:
    c = base.use_kernel(cfg.copy_and_resolve_references(), name)
    if nbrs:
      c.kernel.neighbors = nbrs
    if gkind:
      c.kernel.global_kind = gkind
    kernel = random_table_process(c, V)
    model = Transformer(model_config(c.model, kernel.input_vocab_size, V))
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, L), jnp.int32),
                                               jnp.ones((1,))))["params"]
    fn = reverse.jit_sample(model, kernel, reverse.SamplerOptions(steps=FLAGS.steps, **options))
    fixed, mask = jnp.zeros((B, L), jnp.int32), jnp.zeros((B, L), bool).at[:, 0].set(True)
    seconds = time_fn(fn, (params, jax.random.key(1), fixed, mask), FLAGS.repeats, 0)
    step = seconds / FLAGS.steps
    key = (name, nbrs, gkind)
    if not options or options == dict(cache=False):
      plain[key] = step
    row = {"sampler": label, "ms_per_step": 1e3 * step, "steps_per_sec": 1 / step,
           "tokens_per_sec": B * L / seconds,
           "vs_plain_same_kernel": step / plain.get(key, step),
           "vs_masking_no_cache": step / plain[("masking", None, None)]}
    rows.append(row)
    print(f"{label:42s} {row['ms_per_step']:8.2f} ms/step {row['steps_per_sec']:8.1f} steps/s "
          f"{row['tokens_per_sec']:9.1f} tok/s  x{row['vs_plain_same_kernel']:.2f} plain  "
          f"x{row['vs_masking_no_cache']:.2f} masking", flush=True)
  print(json.dumps(rows))


if __name__ == "__main__":
  app.run(main)

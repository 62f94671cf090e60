r"""NELBO integrand cost per kernel: value and gradient with respect to the logits, as the
train step evaluates it, against the O(V) reference form of the same sum.

  python benchmarks/integrands.py --vocab_size=8192 --batch=8 --seq_len=256
  python benchmarks/integrands.py --kernels=semdlm_plus --global_kind=mask

Random logits and tokens, a shape-only table (random embeddings; its shape sets the cost).
"production" is what the train step runs: `elbo.chunked_integrand` with the head's columns
in the order the kernel's structure asks for (its logits are emitted in that order, so the
permutation is not timed); "O(V) form" is `reference.full_vocabulary_integrand` on logits in
vocabulary order (Markov kernels only). One chunk of all positions; milliseconds per call,
the mean of --steps calls after --warmup.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
from absl import app, flags

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from configs import base  # noqa: E402
from dlm_jax import elbo  # noqa: E402
from dlm_jax.kernels import reference  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import random_table_process, time_fn  # noqa: E402

flags.DEFINE_list("kernels", ["masking", "uniform", "semdlm", "semdlm_plus"], "Kernels.")
flags.DEFINE_string("global_kind", "uniform", "SemDLM+'s global part: uniform | mask.")
flags.DEFINE_string("neighbors", "partition", "Table kind: partition | topk.")
flags.DEFINE_integer("vocab_size", 8192, "V.")
flags.DEFINE_integer("batch", 8, "Rows.")
flags.DEFINE_integer("seq_len", 256, "Positions per row.")
flags.DEFINE_integer("steps", 5, "Timed calls.")
flags.DEFINE_integer("warmup", 1, "Untimed calls after compilation.")
FLAGS = flags.FLAGS


def ms(fn, *args) -> float:
  return time_fn(fn, args, FLAGS.steps, FLAGS.warmup) * 1e3


def kernel_of(name: str):
  cfg = base.use_kernel(base.get_config(), name)
  cfg.kernel.global_kind, cfg.kernel.neighbors = FLAGS.global_kind, FLAGS.neighbors
  return random_table_process(cfg, FLAGS.vocab_size)


def measure(name: str) -> dict:
  kernel, V = kernel_of(name), FLAGS.vocab_size
  B, L, d = FLAGS.batch, FLAGS.seq_len, 64
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.randint(keys[0], (B, L), 0, V)
  t = jax.random.uniform(keys[1], (B,))
  z = kernel.sample_forward(keys[2], x, t)
  # Every head column is a distinct logit column (padding columns of the slot layout included).
  width = (kernel.table.members.size if kernel.table is not None and kernel.glob is not None
           and kernel.table_kind == "partition" and not kernel.has_mask_token else V)
  logits = jax.random.normal(keys[3], (B, L, width))
  features = jnp.zeros((B, L, d))       # the head below ignores them: logits are the input

  def production(logits):
    head = lambda h, columns=None: logits + h[..., :1]
    return elbo.chunked_integrand(kernel, head, features, x, z, t, keys[3], 0).sum()

  row = {"kernel": name, "structure": kernel.table_kind,
         "production_ms": ms(jax.jit(jax.value_and_grad(production)), logits)}
  if kernel.exact_nelbo:
    full = lambda lg: reference.full_vocabulary_integrand(kernel, lg, x, z, t).sum()
    row["full_vocabulary_ms"] = ms(jax.jit(jax.value_and_grad(full)),
                                   jax.random.normal(keys[3], (B, L, V)))
  return row


def main(argv):
  del argv
  rows = [measure(name) for name in FLAGS.kernels]
  print(f"device={jax.devices()[0].device_kind} | B x L x V = {FLAGS.batch} x "
        f"{FLAGS.seq_len} x {FLAGS.vocab_size} | value and gradient, mean of {FLAGS.steps}")
  print("| kernel | structure | production (ms) | O(V) form (ms) | vs masking |")
  print("|---|---|---|---|---|")
  first = next((r["production_ms"] for r in rows if r["kernel"] == "masking"), None)
  for r in rows:
    full = r.get("full_vocabulary_ms")
    ratio = f"{r['production_ms'] / first:.2f}" if first else ""
    print(f"| {r['kernel']} | {r['structure']} | {r['production_ms']:.1f} | "
          f"{'' if full is None else f'{full:.1f}'} | {ratio} |")


if __name__ == "__main__":
  app.run(main)

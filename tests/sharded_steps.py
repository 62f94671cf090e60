"""Run by test_sharding.py in a subprocess with 8 fake CPU devices.

Trains a few steps on a (data=2, fsdp=4) mesh and on a 1-device mesh from the
same seed and batches; prints the losses and the largest parameter difference.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from dlm_jax import experiment, parallel, rng  # noqa: E402
from dlm_jax.data import pipeline  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402


def run(config, workdir, devices, num_steps=3):
  exp = experiment.build(config, workdir, devices)
  step_fn = exp.jit_train_step()
  state = exp.init_state(rng.stream(config.seed, "init"))
  it = pipeline.train_iterator(exp.rows("train"), config.train.batch_size, config.seed)
  losses = []
  for _ in range(num_steps):
    state, metrics = step_fn(state, parallel.global_batch(next(it), exp.mesh), jax.random.key(5))
    losses.append(float(metrics["loss"]))
  shardings = {str(x.sharding.spec) for x in jax.tree.leaves(state.params)}
  return losses, jax.device_get(state.params), shardings


def main():
  corpus_glob, tokenizer, workdir, causal = sys.argv[1:5]
  assert len(jax.devices()) == 8
  config = tiny_config(corpus_glob, tokenizer)
  config.model.causal = causal == "causal"
  config.model.dropout = 0.1
  config.mesh.data, config.mesh.fsdp = 2, 4
  losses8, params8, shardings8 = run(config, workdir, jax.devices())
  config.mesh.data, config.mesh.fsdp = 1, 1
  losses1, params1, _ = run(config, workdir, jax.devices()[:1])
  diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(params8),
                                                       jax.tree.leaves(params1)))
  print(json.dumps({"losses8": losses8, "losses1": losses1, "max_param_diff": diff,
                    "shardings8": sorted(shardings8)}))


if __name__ == "__main__":
  main()

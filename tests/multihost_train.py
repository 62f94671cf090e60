"""One process of a 2-process localhost run (CPU, gloo), launched by test_multihost.py.

  python tests/multihost_train.py CORPUS TOKENIZER WORKDIR PORT PROCESS_ID NUM_PROCESSES OUT
"""

import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import jax  # noqa: E402

from dlm_jax import distributed, training# noqa: E402
from tests.conftest import tiny_config  # noqa: E402


def main():
  corpus, tokenizer, workdir, port, pid, nproc, out = sys.argv[1:8]
  if int(nproc) > 1:
    distributed.initialize(f"localhost:{port}", int(nproc), int(pid))
  config = tiny_config(corpus, tokenizer)
  config.train.num_steps = 6
  config.train.log_every = 1
  config.train.checkpoint_every = 3
  config.train.eval_every = 6
  history, state = training.train_and_evaluate(config, workdir)
  if jax.process_index() == 0:
    with open(out, "w") as f:
      json.dump({"processes": jax.process_count(), "devices": jax.device_count(),
                 "losses": [h["train/loss"] for h in history if "train/loss" in h],
                 "val": [h["val/nelbo_bits_per_token"] for h in history
                         if "val/nelbo_bits_per_token" in h],
                 "step": int(state.step)}, f)


if __name__ == "__main__":
  main()

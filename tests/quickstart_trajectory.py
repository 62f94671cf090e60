"""The first steps of the README's quickstart run (configs/quickstart.py unchanged: its
tokenizer, rows, model, optimizer and learning-rate schedule), with the validation NELBO
every EVERY steps; prints {step: bits/token} as JSON. tests/test_quickstart.py pins it.

  python tests/quickstart_trajectory.py WORKDIR [STEPS=60] [EVERY=20] [key=value ...]

key=value overrides a config value (e.g. optim.learning_rate=0.0033), to see how far a
change that alters learning moves the figures.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

from configs import quickstart  # noqa: E402
from dlm_jax import training  # noqa: E402

STEPS, EVERY, EVAL_BATCHES = 60, 30, 8


def main():
  workdir = sys.argv[1]
  steps = int(sys.argv[2]) if len(sys.argv) > 2 else STEPS
  every = int(sys.argv[3]) if len(sys.argv) > 3 else EVERY
  config = quickstart.get_config()
  config.train.eval_every = every              # evaluation draws from its own random stream:
  config.train.eval_batches = EVAL_BATCHES     # the training trajectory is the README's
  config.train.checkpoint_every = steps
  for override in sys.argv[4:]:
    key, value = override.split("=", 1)
    *path, last = key.split(".")
    node = config
    for part in path:
      node = node[part]
    node[last] = type(node[last])(value)
  history, _ = training.train_and_evaluate(config, workdir, stop_after=steps)
  curve = {int(h["step"]): h["val/nelbo_bits_per_token"] for h in history
           if "val/nelbo_bits_per_token" in h}
  print(json.dumps(curve))


if __name__ == "__main__":
  main()

"""Trains the tiny test config in a subprocess, for signal and kill -9 tests.

  python tests/train_subprocess.py CORPUS TOKENIZER WORKDIR NUM_STEPS [kill_in_save=STEP]

`kill_in_save=STEP` is fault injection: the process SIGKILLs itself while
writing the checkpoint of STEP, after the train state is on disk and before
the checkpoint is finalised.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import grain  # noqa: E402

from dlm_jax import training# noqa: E402
from tests.conftest import tiny_config  # noqa: E402


def main():
  corpus, tokenizer, workdir, num_steps = sys.argv[1:5]
  config = tiny_config(corpus, tokenizer)
  config.train.num_steps = int(num_steps)
  config.train.log_every = 1
  config.train.checkpoint_every = 4
  config.train.eval_every = 10**6
  config.optim.lr_schedule = "constant"
  for arg in sys.argv[5:]:
    if arg.startswith("kill_in_save="):
      target = int(arg.split("=")[1])
      original = grain.checkpoint.CheckpointHandler.save

      def save(self, directory, *args, **kwargs):
        if f"/{target}." in str(directory) or str(directory).rstrip("/").endswith(f"/{target}"):
          os.kill(os.getpid(), signal.SIGKILL)
        return original(self, directory, *args, **kwargs)
      grain.checkpoint.CheckpointHandler.save = save
  training.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  main()

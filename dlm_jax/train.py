r"""Train a diffusion (or autoregressive) LM.

  python -m dlm_jax.train --config=configs/quickstart.py --workdir=/tmp/dlm \
      --config.train.num_steps=500

Resumes automatically from the latest checkpoint in --workdir. The loop is
`dlm_jax.training.train_and_evaluate`.
"""

from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from dlm_jax import cli, training


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and caches.")


def main(argv):
  del argv
  f = flags.FLAGS
  if f.config is None or f.workdir is None:
    sys.exit("dlm_jax.train: error: --config and --workdir are required")
  cli.run("dlm_jax.train", training.train_and_evaluate, f.config, f.workdir)


if __name__ == "__main__":
  cli.run_app("dlm_jax.train", main, define_flags)

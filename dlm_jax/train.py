r"""Train a diffusion (or autoregressive) LM.

  python -m dlm_jax.train --config=configs/quickstart.py --workdir=/tmp/dlm \
      --config.train.num_steps=500

Resumes automatically from the latest checkpoint in --workdir. `--print_config` prints the
resolved config (with every override applied and checked) and exits. The loop is
`dlm_jax.training.train_and_evaluate`.
"""

from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_dict, config_flags

from dlm_jax import cli, configuration, training


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and caches.")
  flags.DEFINE_bool("print_config", False, "Print the resolved config (the file, its "
                    "--config.* overrides, checked against dlm_jax/config_schema.py) and exit.")


def _print_config(config):
  configuration.validate_config(config)
  shown = config.copy_and_resolve_references().to_dict()
  for flat_key, _, _ in configuration.flat_source_keys():   # old names, None once validated
    shown["data"].pop(flat_key, None)
  print(config_dict.ConfigDict(shown))


def main(argv):
  del argv
  f = flags.FLAGS
  if f.config is not None and f.print_config:
    cli.run("dlm_jax.train", _print_config, f.config)
    return
  if f.config is None or f.workdir is None:
    sys.exit("dlm_jax.train: error: --config and --workdir are required")
  cli.run("dlm_jax.train", training.train_and_evaluate, f.config, f.workdir)


if __name__ == "__main__":
  cli.run_app("dlm_jax.train", main, define_flags)

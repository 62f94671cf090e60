r"""Train the SentencePiece tokenizer a config asks for, from its training split.

  python -m dlm_jax.data.train_tokenizer --config=configs/quickstart.py --workdir=/tmp/run

Writes data.tokenizer_path (default <workdir>/tokenizer.model); refuses to
overwrite an existing file unless --overwrite, and never replaces the tokenizer of a workdir
that holds checkpoints.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from dlm_jax import cli, configuration
from dlm_jax.data import sources
from dlm_jax.data.tokenizer import train_sentencepiece
from dlm_jax.errors import UserError
from dlm_jax.data.tokenizer import tokenizer_path


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.")
  flags.DEFINE_string("workdir", None, "Workdir (tokenizer default location).")
  flags.DEFINE_bool("overwrite", False, "Replace an existing tokenizer file.")


def train(config, workdir: str, overwrite: bool = False) -> str:
  configuration.validate_config(config)
  path = tokenizer_path(config.data, workdir)
  if os.path.exists(path) and not overwrite:
    raise UserError(f"{path} exists; pass --overwrite to replace it (its data caches and "
                    "checkpoints would no longer match)")
  checkpoints = os.path.join(workdir, "checkpoints")
  if (os.path.exists(path) and os.path.dirname(os.path.abspath(path)) == os.path.abspath(workdir)
      and os.path.isdir(checkpoints) and os.listdir(checkpoints)):
    raise UserError(f"{workdir} holds checkpoints trained with {path}: replacing the run's only "
                    "tokenizer would make them unreadable; write the new one elsewhere "
                    "(--config.data.tokenizer_path=...) or use a new workdir")
  tok = train_sentencepiece(sources.documents(config.data, "train"), path, config.data.vocab_size,
                            config.data.tokenizer_model_type)
  print(f"wrote {path}: {tok.vocab_size} pieces, fingerprint {tok.fingerprint()}")
  return path


def main(argv):
  del argv
  f = flags.FLAGS
  if f.config is None or f.workdir is None:
    sys.exit("dlm_jax.data.train_tokenizer: error: --config and --workdir are required")
  cli.run("dlm_jax.data.train_tokenizer", train, f.config, f.workdir, f.overwrite)


if __name__ == "__main__":
  cli.run_app("dlm_jax.data.train_tokenizer", main, define_flags)

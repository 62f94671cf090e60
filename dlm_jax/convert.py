r"""Move models between dlm_jax workdirs and MDLM / Duo Hugging Face checkpoint directories.

  python -m dlm_jax.convert import-mdlm --checkpoint=DIR --workdir=W [--tokenizer=auto] \
      [--config=configs/owt_masking.py] [--config.kernel.name=uniform ...]
  python -m dlm_jax.convert export --workdir=W --out=DIR [--step=N] [--raw_params] [--overwrite]
  python -m dlm_jax.convert check --workdir=W --reference=expected.npz [--tolerance=1e-4]

`import-mdlm` reads `model.safetensors` + `config.json` (keys `backbone.*`) into step 0 of a
new workdir with `model.variant=mdlm` and the checkpoint's sizes and tokenizer (by its vocabulary
size, or --tokenizer); data, optimizer and kernel come from --config (masking for MDLM,
--config.kernel.name=uniform for Duo). `export` writes
the same format back. `check` runs the network on the `tokens` and `sigma` of an npz and
prints the max abs difference from its `logits` (exit 1 above --tolerance). The mapping is
`dlm_jax.mdlm_checkpoint`.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

from dlm_jax import cli, mdlm_checkpoint

COMMANDS = ("import-mdlm", "export", "check")
# The checkout's OWT config, found from any working directory.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "owt_masking.py")


def define_flags():
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG,
                                  "Data, tokenizer and kernel of an imported model.",
                                  lock_config=True)
  flags.DEFINE_string("checkpoint", None, "import-mdlm: the Hugging Face checkpoint directory.")
  flags.DEFINE_enum("tokenizer", "auto", ["auto", *mdlm_checkpoint.FIELD_TOKENIZERS],
                    "import-mdlm: the checkpoint's tokenizer (auto: GPT-2 BPE for 50257 real "
                    "tokens, bert-base-uncased for 30522, else token ids).")
  flags.DEFINE_string("workdir", None, "The dlm_jax workdir.")
  flags.DEFINE_string("out", None, "export: the directory to write.")
  flags.DEFINE_integer("step", None, "export / check: checkpoint step (default: latest).")
  flags.DEFINE_bool("raw_params", False, "export: raw instead of EMA parameters.")
  flags.DEFINE_bool("overwrite", False, "export: replace files in --out.")
  flags.DEFINE_string("reference", None, "check: npz with tokens, sigma and logits.")
  flags.DEFINE_float("tolerance", 1e-4, "check: the largest accepted max abs difference.")


def main(argv):
  f = flags.FLAGS
  command = argv[1] if len(argv) == 2 else None
  if command not in COMMANDS:
    sys.exit(f"dlm_jax.convert: error: give one command, one of {', '.join(COMMANDS)}")
  if not f.workdir:
    sys.exit("dlm_jax.convert: error: --workdir is required")
  name = f"dlm_jax.convert {command}"
  if command == "import-mdlm":
    if not f.checkpoint:
      sys.exit(f"{name}: error: --checkpoint is required")
    print(json.dumps(cli.run(name, mdlm_checkpoint.import_checkpoint, f.checkpoint, f.workdir,
                             f.config, f.tokenizer), indent=1))
  elif command == "export":
    if not f.out:
      sys.exit(f"{name}: error: --out is required")
    print(json.dumps(cli.run(name, mdlm_checkpoint.export_checkpoint, f.workdir, f.out, f.step,
                             not f.raw_params, f.overwrite)))
  else:
    if not f.reference:
      sys.exit(f"{name}: error: --reference is required")
    diff = cli.run(name, mdlm_checkpoint.reference_difference, f.workdir, f.reference, f.step)
    passed = diff <= f.tolerance                   # NaN (a NaN in either side) fails
    print(f"max abs difference {diff:.3e} (tolerance {f.tolerance:g}): "
          f"{'ok' if passed else 'FAILED'}")
    if not passed:
      sys.exit(1)


if __name__ == "__main__":
  cli.run_app("dlm_jax.convert", main, define_flags)

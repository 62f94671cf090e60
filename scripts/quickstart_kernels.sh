#!/usr/bin/env bash
# Regenerates docs/quickstart_kernels.{md,png}: every kernel on the quickstart (Shakespeare,
# 256 pieces, rows of 64, the 4 x 128 DiT) for 300 steps, validation NELBO every 100 steps,
# the default (mean) parameterisation. About 2 min per run on 2 cores (11 min 31 s for the six
# here); docs/kernels.md quotes the table.
#   STEPS=300 scripts/quickstart_kernels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WORKDIRS:-workdirs/quickstart_kernels}
STEPS=${STEPS:-300}
. scripts/train_once.sh
runs=""
run() {  # name config [overrides...]
  train "$1" "$2" --config.train.num_steps="$STEPS" --config.train.eval_every=$((STEPS / 3)) \
      --config.train.checkpoint_every="$STEPS" --config.data.vocab_size=256 "${@:3}"
  runs="$runs${runs:+,}$1=$W/$1"
}
quickstart_kernels run ""
python -m dlm_jax.analysis.compare_runs --runs="$runs" --output=docs/quickstart_kernels \
    --title="Quickstart (CPU, $STEPS steps, mean parameterisation): validation NELBO"

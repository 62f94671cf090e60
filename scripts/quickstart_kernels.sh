#!/usr/bin/env bash
# Regenerates docs/quickstart_kernels.{md,png}: every kernel on the quickstart (Shakespeare,
# 256 pieces, rows of 64, the 4 x 128 DiT) for 300 steps, validation NELBO every 100 steps,
# the default (mean) parameterisation. About 1-2 min per run on 2 cores. (The page was
# generated with the tokenizer of before the newline piece; a rerun refreshes it.)
#   STEPS=300 scripts/quickstart_kernels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WORKDIRS:-workdirs/quickstart_kernels}
STEPS=${STEPS:-300}
. scripts/train_once.sh
run() {  # name config [overrides...]
  train "$1" "$2" --config.train.num_steps="$STEPS" --config.train.eval_every=$((STEPS / 3)) \
      --config.train.checkpoint_every="$STEPS" --config.data.vocab_size=256 "${@:3}"
}
run masking quickstart
run uniform quickstart_uniform
run semdlm_A quickstart_semdlm
run semdlm_B quickstart_semdlm --config.kernel.neighbors=topk
run semdlm_plus_uniform_A quickstart_semdlm_plus
run semdlm_plus_mask_A quickstart_semdlm_plus --config.kernel.global_kind=mask
runs=""
for name in masking uniform semdlm_A semdlm_B semdlm_plus_uniform_A semdlm_plus_mask_A; do
  runs="$runs${runs:+,}$name=$W/$name"
done
python -m dlm_jax.analysis.compare_runs --runs="$runs" --output=docs/quickstart_kernels \
    --title="Quickstart (CPU, $STEPS steps, mean parameterisation): validation NELBO"

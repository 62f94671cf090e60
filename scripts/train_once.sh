# Sourced by the scripts that regenerate docs: train NAME CONFIG [overrides...] trains
# configs/CONFIG.py into $W/NAME unless that workdir already has checkpoints.
train() {
  local name=$1 config=$2
  shift 2
  [ -d "$W/$name/checkpoints" ] || python -m dlm_jax.train --config="configs/$config.py" \
      --workdir="$W/$name" "$@"
}

# The quickstart's six kernel runs: FN NAME CONFIG [overrides...] for each, NAME = PREFIX + run.
quickstart_kernels() {
  local fn=$1 prefix=$2
  "$fn" "${prefix}masking" quickstart
  "$fn" "${prefix}uniform" quickstart_uniform
  "$fn" "${prefix}semdlm_A" quickstart_semdlm
  "$fn" "${prefix}semdlm_B" quickstart_semdlm --config.kernel.neighbors=topk
  "$fn" "${prefix}semdlm_plus_uniform_A" quickstart_semdlm_plus
  "$fn" "${prefix}semdlm_plus_mask_A" quickstart_semdlm_plus --config.kernel.global_kind=mask
}

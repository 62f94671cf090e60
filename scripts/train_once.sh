# Sourced by the scripts that regenerate docs: train NAME CONFIG [overrides...] trains
# configs/CONFIG.py into $W/NAME unless that workdir already has checkpoints.
train() {
  local name=$1 config=$2
  shift 2
  [ -d "$W/$name/checkpoints" ] || python -m dlm_jax.train --config="configs/$config.py" \
      --workdir="$W/$name" "$@"
}

#!/usr/bin/env bash
# Regenerates docs/results.md's numbers on a CPU from the quickstart runs: trains what is
# missing (about 7 min per run on 2 cores), chooses SemDLM+'s sampling controls on validation
# prompts, then evaluates unconditional samples of every kernel at T in $STEPS. Reports
# already in $OUT are reused (said on stderr): delete them to regenerate the page.
#   N=16 STEPS=16,64,256 scripts/quickstart_results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WORKDIRS:-workdirs}
N=${N:-16}
STEPS=${STEPS:-16,64,256}
OUT=${OUT:-docs/results}
mkdir -p "$OUT"

. scripts/train_once.sh
quickstart_kernels train qs_
train qs_ar quickstart_ar

# SemDLM+ controls (eta, rho): chosen on validation prompts only.
for run in qs_semdlm_plus_uniform_A qs_semdlm_plus_mask_A; do
  if [ -f "$OUT/tune_$run.json" ]; then
    echo "reusing $OUT/tune_$run.json (delete it to tune $run again)" >&2
  else
    python -m dlm_jax.analysis.tune_sampler --workdir="$W/$run" --judge="$W/qs_ar" \
        --eta=0,0.1 --rho=0,2 --num_samples=16 --output="$OUT/tune_$run.json"
  fi
done
chosen() {
  python -c "import json,sys; c=json.load(open(sys.argv[1]))['chosen']; print(f\"--eta={c['eta']:g} --rho={c['rho']:g}\")" "$OUT/tune_$1.json"
}

evaluate() {  # label run [sampler flags...]
  local label=$1 run=$2
  shift 2
  if [ -f "$OUT/$label.json" ]; then
    echo "reusing $OUT/$label.json (delete it to evaluate $run again)" >&2
    return
  fi
  python -m dlm_jax.evaluate --workdir="$W/$run" --judge="$W/qs_ar" \
      --num_samples="$N" --steps="$STEPS" --output="$OUT/$label" "$@"
}
evaluate masking qs_masking
evaluate uniform qs_uniform
evaluate semdlm_A qs_semdlm_A
evaluate semdlm_B qs_semdlm_B
evaluate semdlm_plus_uniform_A_plain qs_semdlm_plus_uniform_A
evaluate semdlm_plus_uniform_A_tuned qs_semdlm_plus_uniform_A $(chosen qs_semdlm_plus_uniform_A)
evaluate semdlm_plus_uniform_A_eta0.1_rho20 qs_semdlm_plus_uniform_A --eta=0.1 --rho=20
evaluate semdlm_plus_mask_A_plain qs_semdlm_plus_mask_A
evaluate semdlm_plus_mask_A_tuned qs_semdlm_plus_mask_A $(chosen qs_semdlm_plus_mask_A)
STEPS=127 evaluate autoregressive qs_ar    # left to right: one step per position

python -m dlm_jax.analysis.quality_table \
  masking="$OUT/masking.json" uniform="$OUT/uniform.json" \
  "SemDLM (A)=$OUT/semdlm_A.json" "SemDLM (B)=$OUT/semdlm_B.json" \
  "SemDLM+ uniform, no controls=$OUT/semdlm_plus_uniform_A_plain.json" \
  "SemDLM+ uniform, tuned=$OUT/semdlm_plus_uniform_A_tuned.json" \
  "SemDLM+ uniform, eta=0.1 rho=20 (fixed by hand)=$OUT/semdlm_plus_uniform_A_eta0.1_rho20.json" \
  "SemDLM+ mask, no controls=$OUT/semdlm_plus_mask_A_plain.json" \
  "SemDLM+ mask, tuned=$OUT/semdlm_plus_mask_A_tuned.json" \
  "AR (judge itself)=$OUT/autoregressive.json" > "$OUT/table.md"
cat "$OUT/table.md"

#!/usr/bin/env bash
# The main job. Until the coordinator lands, this is centralized training on Fashion-MNIST:
# the mlp and the cnn, each in fp32 and in int8 quantization-aware training.
#   EPOCHS=3 scripts/demo.sh     # a quicker run
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${FEDGE_BUILD_DIR:-build}"
OUT="${FEDGE_OUT:-out/demo}"
EPOCHS="${EPOCHS:-15}"
mkdir -p "$OUT"

summary=()
for model in mlp cnn; do
  for mode in fp32 int8; do
    echo
    echo "=== $model, $mode, $EPOCHS epochs ==="
    "$BUILD_DIR/bin/centralized_fmnist" --model "$model" --mode "$mode" --epochs "$EPOCHS" \
      --metrics-out "$OUT/${model}_${mode}.jsonl" --save "$OUT/${model}_${mode}.fedgemodel" \
      | tee "$OUT/${model}_${mode}.log"
    acc=$(tail -n 1 "$OUT/${model}_${mode}.jsonl" | sed 's/.*"test_accuracy":\([0-9.]*\).*/\1/')
    summary+=("$(printf '%-4s %-5s test accuracy %s' "$model" "$mode" "$acc")")
  done
done
echo
echo "=== summary (metrics and models in $OUT/) ==="
printf '%s\n' "${summary[@]}"

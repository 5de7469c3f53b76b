#!/usr/bin/env bash
# The main job: a federated training run on Fashion-MNIST as a real multi-process fleet —
# fedge-coordinator with its SQLite state, 10 fedge-client processes holding label-Dirichlet
# (α=0.5) shards, fedgectl starting and watching the job, over mutual TLS on loopback
# (examples/fleet/run.sh): FedAvg, cnn, 20 rounds of one local epoch.
#
#   scripts/demo.sh                 # the fleet (about two minutes on 2 cores)
#   ROUNDS=5 scripts/demo.sh        # shorter (also CLIENTS, LOCAL_EPOCHS, MODEL: see run.sh)
#   scripts/demo.sh inprocess       # the same job with coordinator and devices in one process
#   scripts/demo.sh centralized     # the centralized baselines: mlp and cnn, fp32 and int8-QAT
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${FEDGE_BUILD_DIR:-build}"
OUT="${FEDGE_OUT:-out/demo}"
mkdir -p "$OUT"

case "${1:-fleet}" in
  fleet)
    FEDGE_BUILD_DIR="$BUILD_DIR" OUT="$OUT/fleet" exec examples/fleet/run.sh
    ;;
  centralized)
    EPOCHS="${EPOCHS:-15}"
    summary=()
    for model in mlp cnn; do
      for mode in fp32 int8; do
        echo
        echo "=== centralized $model, $mode, $EPOCHS epochs ==="
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
    ;;
  inprocess)
    ROUNDS="${ROUNDS:-20}"
    STATE="$OUT/fedavg-state"
    rm -rf "$STATE"   # a fresh job each time (the same --state-dir would resume the last one)
    echo
    echo "=== federated in one process: cnn, 10 devices, label-Dirichlet α=0.5, $ROUNDS rounds, 1 local epoch ==="
    FEDGE_LOG_LEVEL=1 "$BUILD_DIR/bin/fedavg_inprocess" --model cnn --clients 10 --alpha 0.5 \
      --rounds "$ROUNDS" --local-epochs 1 --lr 0.01 --momentum 0.9 --batch 64 \
      --state-dir "$STATE" --metrics-out "$OUT/fedavg_metrics.jsonl" | tee "$OUT/fedavg.log"
    echo
    echo "metrics: $OUT/fedavg_metrics.jsonl   coordinator state (SQLite): $STATE/coordinator.db"
    ;;
  *)
    echo "usage: scripts/demo.sh [fleet | inprocess | centralized]" >&2
    exit 2
    ;;
esac

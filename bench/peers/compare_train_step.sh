#!/usr/bin/env bash
# fedge vs PyTorch training-step throughput, measured back to back ROUNDS times on this
# machine (its speed drifts by tens of percent over minutes, so one-off comparisons
# mislead): each round runs PyTorch (bench/peers/pytorch_train_step.py, one thread) and
# fedge's train_step_bench (one thread), and the table gives each round's ratios.
#   bench/peers/compare_train_step.sh [ROUNDS]
# Needs: apt-get install python3-torch libopenblas0-pthread
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS="${1:-5}"
BENCH="${FEDGE_BUILD_DIR:-build}/bin/train_step_bench"
printf '%-5s %10s %12s %12s %10s %10s\n' model pytorch fedge_fp32 fedge_int8 fp32/pt int8/pt
for r in $(seq "$ROUNDS"); do
  pt=$(/usr/bin/python3 bench/peers/pytorch_train_step.py 2)
  fe=$("$BENCH" --benchmark_filter=TrainStep --benchmark_min_time=1 2>/dev/null | grep -E '^(mlp|cnn) ')
  for m in mlp cnn; do
    p=$(echo "$pt" | awk -v m=$m '$2 == m {print $3}')
    f=$(echo "$fe" | awk -v m=$m '$1 == m {print $2}')
    i=$(echo "$fe" | awk -v m=$m '$1 == m {print $3}')
    awk -v m=$m -v p="$p" -v f="$f" -v i="$i" \
      'BEGIN {printf "%-5s %10.0f %12.0f %12.0f %10.2f %10.2f\n", m, p, f, i, f / p, i / p}'
  done
done

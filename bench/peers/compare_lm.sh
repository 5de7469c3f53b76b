#!/usr/bin/env bash
# fedge's language model against the same architecture in PyTorch, on this machine:
#   1. parity: lm_train_bench --dump writes initial weights and 100 batches and trains on
#      them; bench/peers/pytorch_lm.py trains PyTorch from the same weights on the same
#      batches and prints the largest relative difference between the two loss curves;
#   2. speed: ROUNDS back-to-back pairs of one-thread training tokens/s (PyTorch, then
#      fedge's lm_train_bench), each pair's ratio.
#   bench/peers/compare_lm.sh [ROUNDS]
# Needs: apt-get install python3-torch libopenblas0-pthread
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS="${1:-3}"
BENCH="${FEDGE_BUILD_DIR:-build}/bin/lm_train_bench"
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
"$BENCH" --dump "$DIR" 100
/usr/bin/python3 bench/peers/pytorch_lm.py parity "$DIR"
printf '%-6s %12s %12s %8s\n' round pytorch fedge ratio
for r in $(seq "$ROUNDS"); do
  pt=$(/usr/bin/python3 bench/peers/pytorch_lm.py speed 10 | awk '{print $3}')
  fe=$("$BENCH" --benchmark_filter=LmTrainStep --benchmark_min_time=10 2>/dev/null |
       grep -o 'items_per_second=[0-9.]*k' | tr -dc '0-9.' | awk '{print $1 * 1000}')
  awk -v r="$r" -v p="$pt" -v f="$fe" 'BEGIN {printf "%-6s %12.0f %12.0f %8.2f\n", r, p, f, f / p}'
done

#!/usr/bin/env bash
# fedcg_inprocess --early-stop-rounds (the FedCG code's early_stop_rounds): on a
# tiny FedAvg run (100 examples per client, 1 local epoch, Adam 3e-3, at most 10 rounds),
#   - with patience P the run ends at round best_val_round + P, or at the cap without an
#     early stop; the summary's rounds equals the number of per-round lines;
#   - with patience 0 every --rounds round is run;
#   - a negative patience is refused before any work.
#
#   tests/fedcg_inprocess_early_stop_test.sh PATH/TO/fedcg_inprocess
set -euo pipefail
BIN="$1"
DIR="$(mktemp -d -t fedge-fedcg-es.XXXXXX)"
trap 'rm -rf "$DIR"' EXIT

field() {  # field NAME FILE: a number or boolean from the summary line
  grep '"summary":true' "$2" | sed -E "s/.*\"$1\":([^,}]*).*/\1/"
}

check() {  # check PATIENCE CAP
  local out="$DIR/p$1.jsonl"
  "$BIN" --algorithms fedavg --train-per-client 100 --local-epochs 1 --lr 3e-3 --seed 3 --threads 2 \
    --rounds "$2" --early-stop-rounds "$1" --metrics-out "$out" > /dev/null
  local rounds best stopped lines
  rounds=$(field rounds "$out"); best=$(field best_val_round "$out")
  stopped=$(field stopped_early "$out")
  lines=$(grep -c '"round":' "$out")
  echo "patience $1 cap $2: rounds $rounds, best_val_round $best, stopped_early $stopped, lines $lines"
  [ "$lines" -eq "$rounds" ] || { echo "FAIL: $lines round lines, summary says $rounds"; exit 1; }
  if [ "$1" -eq 0 ]; then
    [ "$rounds" -eq "$2" ] && [ "$stopped" = false ] || { echo "FAIL: patience 0 must run all $2 rounds"; exit 1; }
  elif [ "$stopped" = true ]; then
    [ "$rounds" -eq $((best + $1)) ] && [ "$rounds" -lt "$2" ] || { echo "FAIL: stopped at $rounds, best $best, patience $1"; exit 1; }
  else
    [ "$rounds" -eq "$2" ] && [ $((rounds - best)) -lt "$1" ] || { echo "FAIL: ran $rounds of $2 rounds without stopping, best $best, patience $1"; exit 1; }
  fi
}

check 1 10
check 2 10
check 0 3
if "$BIN" --early-stop-rounds -1 --metrics-out "$DIR/neg.jsonl" > "$DIR/neg.log" 2>&1; then
  echo "FAIL: --early-stop-rounds -1 accepted"; exit 1
fi
grep -q "must be 0 (off) or positive, got -1" "$DIR/neg.log" || { cat "$DIR/neg.log"; exit 1; }
[ ! -s "$DIR/neg.jsonl" ] || { echo "FAIL: output written for a refused run"; exit 1; }
echo PASS

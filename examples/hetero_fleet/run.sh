#!/usr/bin/env bash
# A heterogeneous fleet on one machine: 10 fedge-client processes on loopback with
# different memory budgets, so the coordinator hands each a sub-model tier of the mlp
# 784-400-400-10 in examples/hetero_fleet/job.textproto (3 devices full width, 3 half,
# 4 quarter), each variant run through examples/fleet/run.sh (coordinator with SQLite state,
# TLS, fedgectl), then one table comparing them.
#
#   examples/hetero_fleet/run.sh                   # every variant, 30 rounds each
#   ROUNDS=5 examples/hetero_fleet/run.sh mixed kd # some variants, shorter
#
# Variants:
#   full        every device holds the full model (budgets 512 MiB), fp32
#   mixed       3 full, 3 half, 4 quarter, fp32, no distillation
#   kd          mixed, with distillation from the central model (λ 0.5, T 2, int8 teacher)
#   random      mixed with Federated Dropout's random subsets instead of leading slices
#   full-int8   full, int8 quantization-aware local training
#   compressed  kd with an int4 teacher, int8 task weights and int8 stochastic-rounded updates
# SCALER=0 turns off HeteroFL's scaler (SubModelConfig.scaler) in every variant;
# TEMPLATE=examples/hetero_fleet/job_cnn.textproto runs a wide cnn instead of the mlp.
# Output: out/hetero/<variant>/ (rounds.txt has per-tier lines: the tier's sub-model
# evaluated on its own, bytes per client) and out/hetero/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS="${ROUNDS:-30}"
OUT_ROOT="${OUT:-out/hetero}"
VARIANTS=("$@")
if ((${#VARIANTS[@]} == 0)); then VARIANTS=(full mixed random kd full-int8 compressed); fi
TEMPLATE="${TEMPLATE:-examples/hetero_fleet/job.textproto}"
# base::Rng's split, on which the README's tier figures were measured (the fleet's default is
# now NIID-Bench's numpy split: SPLIT_RNG=numpy here for that).
SPLIT_RNG="${SPLIT_RNG:-fedge}"
MIXED_MB="512 512 512 128 128 128 32 32 32 32"
mkdir -p "$OUT_ROOT"

run_variant() {
  local v="$1" budgets="$MIXED_MB" edits=()
  case "$v" in
    full) budgets="512" ;;
    mixed) ;;
    kd) edits=(-e 's/^  weight: 0$/  weight: 0.5/') ;;
    random) edits=(-e 's/EXTRACTION_LEADING/EXTRACTION_RANDOM_SUBSET/') ;;
    full-int8) budgets="512"; edits=(-e 's/COMPUTE_MODE_FP32/COMPUTE_MODE_INT8/') ;;
    compressed)
      edits=(-e 's/^  weight: 0$/  weight: 0.5/'
             -e 's/teacher_compute_mode: .*/teacher_compute_mode: COMPUTE_MODE_INT4/'
             -e 's/task_encoding: .*/task_encoding: TENSOR_ENCODING_INT8_PER_CHANNEL/'
             -e 's/update_encoding: .*/update_encoding: TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED/') ;;
    *) echo "hetero_fleet: unknown variant '$v' (full, mixed, kd, random, full-int8, compressed)" >&2
       exit 2 ;;
  esac
  if [ "${SCALER:-1}" = "0" ]; then edits+=(-e 's/^  scaler: true/  scaler: false/'); fi
  mkdir -p "$OUT_ROOT/$v"
  sed "${edits[@]}" -e "s/^name: .*/name: \"hetero-$v\"/" "$TEMPLATE" \
    > "$OUT_ROOT/$v/job-template.textproto"
  echo "=== hetero_fleet: variant $v ==="
  JOB_TEMPLATE="$OUT_ROOT/$v/job-template.textproto" MODEL="" CLIENTS=10 ROUNDS="$ROUNDS" \
    CLIENT_BUDGETS_MB="$budgets" OUT="$OUT_ROOT/$v" SPLIT_RNG="$SPLIT_RNG" examples/fleet/run.sh
}

if [ "${SUMMARY_ONLY:-0}" != "1" ]; then  # SUMMARY_ONLY=1: only the table of earlier runs
  for v in "${VARIANTS[@]}"; do run_variant "$v"; done
fi

# ---- the table: the central model's accuracy (last round, and the mean of the last 5:
# one round's figure moves by about a point), each smaller tier's leading sub-model on its
# own (mean of the last 5 rounds; '-' for random subsets), bytes per client in the last round
{
  printf '%-11s %-6s %-7s %-7s  %s\n' variant rounds acc last5 \
    "per tier: own acc (last 5), MB down / up per client"
  for v in "${VARIANTS[@]}"; do
    f="$OUT_ROOT/$v/rounds.txt"
    [ -f "$f" ] || continue
    last=$(grep -n " completed " "$f" | tail -n 1)
    n=$(echo "$last" | sed -n 's/^[0-9]*:round *\([0-9]*\) .*/\1/p')
    acc=$(echo "$last" | sed -n 's/.* acc \([0-9.]*\) .*/\1/p')
    last5=$(grep " completed " "$f" | sed -n 's/.* acc \([0-9.]*\) .*/\1/p' | tail -n 5 |
      awk '{ s += $1; n++ } END { if (n) printf "%.4f", s / n }')
    line=${last%%:*}
    tiers=""
    for t in $(tail -n +"$((line + 1))" "$f" | sed -n 's/^      tier \([A-Za-z0-9_.-]*\) .*/\1/p'); do
      own=$(grep "^      tier $t " "$f" | sed -n 's/.* acc \([0-9.]*\) .*/\1/p' | tail -n 5 |
        awk '{ s += $1; n++ } END { if (n) printf "%.4f", s / n; else print "-" }')
      bytes=$(tail -n +"$((line + 1))" "$f" | grep "^      tier $t " |
        sed -n 's/.*r=\([0-9.]*\) .* down \([0-9.]*\) MB  up \([0-9.]*\) MB/r=\1 \2\/\3/p')
      tiers+="$t($bytes) $own; "
    done
    printf '%-11s %-6s %-7s %-7s  %s\n' "$v" "${n:--}" "${acc:--}" "${last5:--}" "$tiers"
  done
} | tee "$OUT_ROOT/summary.txt"

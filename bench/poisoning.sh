#!/usr/bin/env bash
# Poisoning: the fleet demo's setting (examples/sim_fleet.textproto: 10 devices, the cnn,
# label-Dirichlet α = 0.5, 1 local epoch, 20 rounds) with one hostile device (HOSTILE,
# default device 3), under each defence, in fedge-sim, which runs the coordinator and device round that ship
# (a hostile device's update goes through the same encoding, link and intake).
#
#   bench/poisoning.sh [BIN_DIR]     # OUT=out/poisoning ROUNDS=20 THREADS=2 HOSTILE=3
#
# Attacks (SimConfig.attack): none; Δ = −1000·w with 60,000 claimed examples (the whole
# dataset, the most a device can declare); every value 1e30; sign-flipped updates ×10 every
# round; label-flipped training. Defences (JobConfig.robustness): the defaults (weight caps,
# the adaptive norm bound and the direction check, weighted mean), "no-direction" (the
# defaults without the direction check), multi-Krum (f = 1), trimmed mean (β = 0.1),
# "strict" (the bound and the weight cap at the median: no update weighs or reaches further
# than a median one), and "none" (bounds and check off: what the attacks do unchecked).
# Prints one table row per (defence, attack): accuracy at the last round, rounds completed,
# how the job ended, the updates the norm bound clipped and the direction check excluded. Metrics per run: OUT/<defence>-<attack>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-build/bin}"
OUT="${OUT:-out/poisoning}"
ROUNDS="${ROUNDS:-20}"
THREADS="${THREADS:-2}"
HOSTILE="${HOSTILE:-3}"   # the hostile device's index
mkdir -p "$OUT"

declare -A ATTACK=(
  [none]=""
  [neg-model]="attack { kind: ATTACK_KIND_SCALED_NEGATIVE_MODEL clients: $HOSTILE scale: 1000 claimed_examples: 60000 }"
  [huge]="attack { kind: ATTACK_KIND_CONSTANT clients: $HOSTILE value: 1e30 }"
  [sign-flip]="attack { kind: ATTACK_KIND_SIGN_FLIP clients: $HOSTILE scale: 10 }"
  [label-flip]="attack { kind: ATTACK_KIND_LABEL_FLIP clients: $HOSTILE }"
)
declare -A DEFENCE=(
  [default]=''
  [multi-krum]='robustness { aggregation_rule: AGGREGATION_RULE_MULTI_KRUM krum_byzantine: 1 }'
  [trimmed-mean]='robustness { aggregation_rule: AGGREGATION_RULE_TRIMMED_MEAN trim_fraction: 0.1 }'
  [no-direction]='robustness { direction_check: false }'
  [none]='robustness { norm_bound_multiple: 0 max_weight_multiple: 0 direction_check: false }'
  [strict]='robustness { norm_bound_multiple: 1 max_weight_multiple: 1 direction_check: false }'
)
DEFENCES="${DEFENCES:-default no-direction multi-krum trimmed-mean none}"
ATTACKS="${ATTACKS:-none neg-model huge sign-flip label-flip}"

echo "poisoning: $(lscpu | sed -n 's/^Model name: *//p'); $ROUNDS rounds, $THREADS threads, hostile device $HOSTILE"
printf '%-13s %-11s %9s %7s %-28s %7s %s\n' defence attack accuracy rounds ended clipped excluded
for d in $DEFENCES; do
  for a in $ATTACKS; do
    cfg="$OUT/$d-$a.textproto"
    # The job's robustness goes inside its job block (before the block's closing brace).
    awk -v rob="${DEFENCE[$d]}" -v rounds="$ROUNDS" '
      /^job \{/ { in_job = 1 }
      in_job && /^  rounds:/ { print "  rounds: " rounds; next }
      in_job && /^\}/ { if (rob != "") print "  " rob; in_job = 0 }
      { print }' examples/sim_fleet.textproto > "$cfg"
    if [ -n "${ATTACK[$a]}" ]; then echo "${ATTACK[$a]}" >> "$cfg"; fi
    log="$OUT/$d-$a.log"
    metrics="$OUT/$d-$a.jsonl"
    rm -f "$metrics"
    ended="finished"
    "$BIN/fedge-sim" --config "$cfg" --threads "$THREADS" --metrics-out "$metrics" > "$log" 2>&1 ||
      ended="$(tail -n 1 "$log" | sed 's/.*job failed: //; s/ (round_policy.*//' | cut -c1-28)"
    acc=$(tail -n 1 "$metrics" 2>/dev/null | sed -n 's/.*"test_accuracy":\([0-9.e-]*\).*/\1/p')
    rounds=$(grep -c '"round"' "$metrics" 2>/dev/null || true)
    clipped=$(sed -n 's/.*"bound_clipped":\([0-9]*\).*/\1/p' "$metrics" 2>/dev/null | paste -sd+ | bc 2>/dev/null || echo 0)
    excluded=$(sed -n 's/.*"bound_excluded":\([0-9]*\).*/\1/p' "$metrics" 2>/dev/null | paste -sd+ | bc 2>/dev/null || echo 0)
    printf '%-13s %-11s %9s %7s %-28s %7s %s\n' "$d" "$a" "${acc:--}" "${rounds:-0}" "$ended" "${clipped:-0}" "${excluded:-0}"
  done
done

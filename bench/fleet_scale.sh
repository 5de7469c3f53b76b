#!/usr/bin/env bash
# One coordinator under many lightweight devices over real gRPC on loopback: a job of a
# 1,010,850-parameter MLP (784-1024-200-10) with every device in every round, answered by
# bench/fleet_load's synthetic updates (no training). Prints the rounds (time, bytes in and
# out) and the coordinator's CPU seconds and peak RSS over the job.
#
#   bench/fleet_scale.sh BUILD_DIR [DEVICES=2000] [ROUNDS=3]
#   STORE=postgresql://fedge@127.0.0.1:5432/fedge bench/fleet_scale.sh ...   # the store there
#   RELAYS=4 bench/fleet_scale.sh ...   # a root with 4 relays, DEVICES/4 devices on each
#
# With relays, also printed: the bytes of the relays' parts (what the root takes in a round
# instead of the devices' updates) and each relay's CPU seconds and peak RSS.
#
# Everything runs on this machine: the load generator's threads compete with the
# coordinator for the same cores, so round times are an upper bound of the coordinator's.
set -euo pipefail
BIN="$1/bin"
N="${2:-2000}"
ROUNDS="${3:-3}"
DIR="$(mktemp -d -t fedge-scale.XXXXXX)"
RELAYS="${RELAYS:-0}"
COORD_PID=""
LOAD_PIDS=()
RELAY_PIDS=()
cleanup() {
  for p in "${LOAD_PIDS[@]}" "${RELAY_PIDS[@]}" ${COORD_PID:+"$COORD_PID"}; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; tail -n 20 "$DIR"/*.log >&2 || true; exit 1; }

PORT=$((20000 + ($$ * 7 + RANDOM) % 30000))
ADDR="127.0.0.1:$PORT"
ADMIN="127.0.0.1:$((PORT + 1))"
mkdir -p "$DIR/state"
"$BIN/fedge-coordinator" operators add bench --role operator --state-dir "$DIR/state" \
  2> /dev/null > "$DIR/operator-token"
(umask 077; echo "fleet-scale-$$" > "$DIR/token")
CTL=("$BIN/fedgectl" --coordinator "$ADMIN" --token-file "$DIR/operator-token" --insecure --timeout 30)

"$BIN/fedge-coordinator" --listen "$ADDR" --admin-listen "$ADMIN" --state-dir "$DIR/state" --insecure \
  --enrollment-token-file "$DIR/token" --max-threads $((N + 512)) --max-streams-per-peer $((N + 512)) \
  --register-burst $((N + 100)) --register-per-second 10000 --register-per-token-burst $((N + 100)) \
  --register-per-token-per-second 10000 --max-message-mb 64 --liveness-seconds 300 \
  --max-wait-seconds 20 ${STORE:+--store "$STORE"} > "$DIR/coordinator.log" 2>&1 &
COORD_PID=$!
for _ in $(seq 100); do grep -q "serving on" "$DIR/coordinator.log" && break; sleep 0.1; done
grep -q "serving on" "$DIR/coordinator.log" || fail "the coordinator did not start"

if [ "$RELAYS" -gt 0 ]; then
  per=$(( (N + RELAYS - 1) / RELAYS ))
  for ((r = 0; r < RELAYS; r++)); do
    "$BIN/fedge-coordinator" operators add "relay-$r" --role relay --state-dir "$DIR/state" \
      2> /dev/null > "$DIR/relay-$r.token"
    chmod 600 "$DIR/relay-$r.token"
    "$BIN/fedge-coordinator" --role relay --upstream "$ADMIN" --relay-token-file "$DIR/relay-$r.token" \
      --insecure --listen "127.0.0.1:$((PORT + 2 + r))" --max-threads $((per + 512)) \
      --max-streams-per-peer $((per + 512)) --register-burst $((per + 100)) \
      --register-per-second 10000 --max-message-mb 64 --liveness-seconds 300 \
      --max-wait-seconds 20 > "$DIR/relay-$r.log" 2>&1 &
    RELAY_PIDS+=($!)
  done
  for ((r = 0; r < RELAYS; r++)); do
    for _ in $(seq 100); do grep -q "serving devices" "$DIR/relay-$r.log" && break; sleep 0.1; done
    grep -q "serving devices" "$DIR/relay-$r.log" || fail "relay $r did not start"
    "$BIN/fleet_load" --coordinator "127.0.0.1:$((PORT + 2 + r))" --insecure \
      --enrollment-token-file "$DIR/token" --devices "$per" --examples 100 > "$DIR/load-$r.log" 2>&1 &
    LOAD_PIDS+=($!)
  done
  N=$((per * RELAYS))
else
  "$BIN/fleet_load" --coordinator "$ADDR" --insecure --enrollment-token-file "$DIR/token" \
    --devices "$N" --examples 100 > "$DIR/load.log" 2>&1 &
  LOAD_PIDS+=($!)
fi
for _ in $(seq 600); do
  n=$("${CTL[@]}" clients 2>/dev/null | sed -n 's/^\([0-9]*\) client(s)$/\1/p' || true)
  [ "${n:-0}" -ge "$N" ] && break
  sleep 0.5
done
[ "${n:-0}" -ge "$N" ] || fail "only ${n:-0} of $N devices registered"

cat > "$DIR/job.textproto" <<JOB
name: "fleet-scale"
model_spec {
  name: "mlp1m"
  input_shape: 784
  layers { name: "fc1" dense { in_features: 784 out_features: 1024 } }
  layers { name: "relu1" relu {} }
  layers { name: "fc2" dense { in_features: 1024 out_features: 200 } }
  layers { name: "relu2" relu {} }
  layers { name: "fc3" dense { in_features: 200 out_features: 10 } }
}
rounds: $ROUNDS
selection { clients_per_round: $N }
round_policy { quorum: $N deadline_seconds: 900 }
local_training { epochs: 1 batch_size: 32 learning_rate: 0.05 }
evaluation { max_examples: 1000 }
JOB
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/${1:-$COORD_PID}/stat"; }
relay_t0=()
for p in "${RELAY_PIDS[@]}"; do relay_t0+=("$(cpu_ticks "$p")"); done
t0=$(cpu_ticks)
s0=$(date +%s.%N)
"${CTL[@]}" job start "$DIR/job.textproto" > "$DIR/start.log" 2>&1 || fail "job start: $(cat "$DIR/start.log")"
JOB=$(sed -n 's/^started job \([^ ]*\) .*/\1/p' "$DIR/start.log")
for _ in $(seq 7200); do
  st=$("${CTL[@]}" status "$JOB" 2>/dev/null || true)
  echo "$st" | grep -q "finished" && break
  echo "$st" | grep -qE "failed|stopped" && fail "the job ended early: $st"
  kill -0 "$COORD_PID" 2>/dev/null || fail "the coordinator died"
  sleep 0.5
done
s1=$(date +%s.%N)
t1=$(cpu_ticks)
"${CTL[@]}" status "$JOB" | grep -q "finished" || fail "the job did not finish"
hz=$(getconf CLK_TCK)
"${CTL[@]}" rounds "$JOB"
echo "devices: $N per round, $ROUNDS rounds, model 1,010,850 parameters (float32 both ways)"
awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s0="$s0" -v s1="$s1" 'BEGIN {
  printf "coordinator CPU: %.1f s over %.1f s of job (%.2f cores)\n", (b - a) / hz, s1 - s0, (b - a) / hz / (s1 - s0) }'
grep VmHWM "/proc/$COORD_PID/status" | awk '{ printf "coordinator peak RSS: %.0f MB\n", $2 / 1024 }'
if [ "$RELAYS" -gt 0 ]; then
  cat "$DIR"/relay-*.log | sed -n 's/.*round \([0-9]*\).s part ([0-9]* devices, \([0-9]*\) bytes of sums) taken.*/\1 \2/p' |
    awk '{ n[$1]++; b[$1] += $2 } END { for (r in n) printf "round %d: %d relays'"'"' parts into the root, %.1f MB\n", r, n[r], b[r] / 1e6 }' | sort -n -k2
fi
for ((r = 0; r < ${#RELAY_PIDS[@]}; r++)); do
  p=${RELAY_PIDS[$r]}
  awk -v a="${relay_t0[$r]}" -v b="$(cpu_ticks "$p")" -v hz="$hz" -v s0="$s0" -v s1="$s1" -v r="$r" \
    -v rss="$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$p/status")" 'BEGIN {
    printf "relay-%d CPU: %.1f s (%.2f cores), peak RSS %.0f MB\n", r, (b - a) / hz, (b - a) / hz / (s1 - s0), rss / 1024 }'
done
for p in "${LOAD_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
grep -hE "failures" "$DIR"/load*.log | tail -n "${#LOAD_PIDS[@]}"

#!/usr/bin/env bash
# Pre-authentication resources under attack, measured on a real fleet on loopback:
# fedge-coordinator (plaintext, devices' listener on [::] for IPv4 and IPv6), an attacker
# (idle_streams_probe, from ::1: another address than the device's 127.0.0.1) holding
# STREAMS upload streams open that never send a header — a new one for each the server
# ends — for SECONDS, and meanwhile an operator (GetJob every 100 ms on the admin listener)
# and one device that registers and runs a 2-round job.
#
#   bench/idle_streams.sh [BIN_DIR]        # STREAMS=2000 SECONDS=60 by default
#
# Prints the probe's report (threads, GetJob p50/p99/max, streams ended by the header
# timeout) and whether the device finished its rounds. Every process started is stopped on
# exit. Figures: docs/security.md, "Pre-authentication resources".
set -euo pipefail
BIN="${1:-build/bin}"
STREAMS="${STREAMS:-2000}"
HOLD="${SECONDS_HELD:-60}"
DIR="$(mktemp -d -t fedge-idle-streams.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
fail() { echo "idle_streams: $*" >&2; for f in "$DIR"/*.log; do echo "--- $f"; tail -5 "$f"; done; exit 1; }

PORT=$((20000 + ($$ * 7 + RANDOM) % 30000))
ADDR="127.0.0.1:$PORT"
ATTACKER_ADDR="[::1]:$PORT"
ADMIN="127.0.0.1:$((PORT + 1))"
(umask 077; echo "idle-streams-token-$$" > "$DIR/token")
mkdir -p "$DIR/state"
"$BIN/fedge-coordinator" operators add bench --role operator --state-dir "$DIR/state" \
  2> /dev/null | (umask 077; cat > "$DIR/op.token")
CTL=("$BIN/fedgectl" --coordinator "$ADMIN" --token-file "$DIR/op.token" --insecure --timeout 10)

"$BIN/partition_fmnist" --clients 1 --scheme iid --train-examples 2000 --out "$DIR/shards" \
  > "$DIR/partition.log" 2>&1 || fail "partition_fmnist"
"$BIN/fedge-coordinator" --listen "[::]:$PORT" --admin-listen "$ADMIN" --state-dir "$DIR/state" \
  --insecure --enrollment-token-file "$DIR/token" --tick-ms 100 --max-wait-seconds 2 \
  > "$DIR/coordinator.log" 2>&1 &
COORD=$!
PIDS+=("$COORD")
for _ in $(seq 100); do grep -q "serving on" "$DIR/coordinator.log" && break; sleep 0.1; done
grep -q "serving on" "$DIR/coordinator.log" || fail "the coordinator did not start"

echo "idle_streams: $(lscpu | sed -n 's/^Model name: *//p'); $STREAMS idle streams for $HOLD s"
"$BIN/idle_streams_probe" --coordinator "$ATTACKER_ADDR" --admin "$ADMIN" --token_file "$DIR/op.token" \
  --pid "$COORD" --streams "$STREAMS" --seconds "$HOLD" > "$DIR/probe.log" 2>&1 &
PROBE=$!
PIDS+=("$PROBE")
sleep 5  # the streams are open

"$BIN/fedge-client" --coordinator "$ADDR" --insecure --enrollment-token-file "$DIR/token" \
  --shard "$DIR/shards/client-00000.shard" --state-dir "$DIR/device" --fetch-wait-seconds 1 \
  > "$DIR/client.log" 2>&1 &
PIDS+=($!)
cat > "$DIR/job.textproto" <<EOF
name: "idle-streams"
architecture: "mlp"
rounds: 2
selection { clients_per_round: 1 }
round_policy { quorum: 1 deadline_seconds: 30 }
local_training { epochs: 1 batch_size: 32 learning_rate: 0.05 }
evaluation { max_examples: 500 }
EOF
for _ in $(seq 100); do
  "${CTL[@]}" clients 2>/dev/null | grep -q "^1 client" && break
  sleep 0.2
done
"${CTL[@]}" job start "$DIR/job.textproto" > "$DIR/start.log" 2>&1 || fail "job start"
t0=$(date +%s.%N)
"${CTL[@]}" watch > "$DIR/watch.log" 2>&1 || true
t1=$(date +%s.%N)
rounds=$(grep -c "completed" "$DIR/watch.log" || true)
echo "idle_streams: the device registered during the attack; rounds completed: $rounds of 2 ($(echo "$t1 - $t0" | bc) s)"
wait "$PROBE" || true
cat "$DIR/probe.log"
[ "$rounds" = "2" ] || fail "the device did not finish its rounds"

#!/usr/bin/env bash
# The aarch64 client in a real round: the x86-64 fedge-coordinator,
# one cross-built aarch64 fedge-client (scripts/cross-aarch64.sh) running under qemu-user
# (Debian's qemu-user-static) and one x86-64 fedge-client, on loopback, plaintext.
#
#   tests/aarch64_client_test.sh X86_BIN_DIR AARCH64_FEDGE_CLIENT
#
# A 1-round mlp job (int8 quantization-aware training, so the aarch64 device runs the int8
# GEMMs, the NEON SMMLA ones on qemu's default CPU model, max; 2 local epochs on 1000
# Fashion-MNIST examples per device) with quorum 2 of 2: the round can only complete with the
# aarch64 device's update aggregated (about 50 s on 2 busy cores, most of it the device
# training under qemu). Checked: the binary is aarch64; the round completed with 2/2 clients;
# the registry shows a linux-aarch64 client that took part in 1 round; the aarch64 device
# logged its round and its neoni8mm kernels; the aggregated model beats chance by far (test
# accuracy > 0.5 on 1000 examples). Fails (never skips) when anything is missing.
# Every process started is killed on any exit; on failure the logs are printed and kept.
set -euo pipefail
BIN="$1"
ARM_CLIENT="$2"
DIR="$(mktemp -d -t fedge-aarch64-test.XXXXXX)"
PIDS=()
OK=0

cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if ((OK)); then
    rm -rf "$DIR"
  else
    for f in "$DIR"/*.log; do
      [ -f "$f" ] || continue
      echo "----- $f (last 20 lines)"
      tail -n 20 "$f"
    done
    echo "(files kept in $DIR)"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

QEMU="$(command -v qemu-aarch64-static || true)"
[ -n "$QEMU" ] || fail "qemu-aarch64-static not found (scripts/cross-aarch64.sh installs it)"
[ -x "$ARM_CLIENT" ] || fail "no aarch64 fedge-client at $ARM_CLIENT (run scripts/cross-aarch64.sh)"
file -b "$ARM_CLIENT" | grep -q "ARM aarch64" || fail "$ARM_CLIENT is not an aarch64 binary: $(file -b "$ARM_CLIENT")"
for b in fedge-coordinator fedgectl fedge-client partition_fmnist; do
  [ -x "$BIN/$b" ] || fail "no $BIN/$b"
done

# The loader, libc and libraries (gRPC, protobuf, Abseil, libsodium) are the arm64 multiarch
# packages' (/lib/ld-linux-aarch64.so.1, /usr/lib/aarch64-linux-gnu), so qemu needs no -L.
# Not -L /usr/aarch64-linux-gnu: that loader (libc6-arm64-cross, glibc 2.36-8cross1) with
# the multiarch libc.so.6 (2.36-9+deb12u*) hangs in the first pthread_create.
run_arm() {
  env -u QEMU_LD_PREFIX "$QEMU" "$ARM_CLIENT" "$@"
}
run_arm --help > "$DIR/arm-help.log" 2>&1 || true
grep -q "fedge-client" "$DIR/arm-help.log" || fail "the aarch64 fedge-client does not run under qemu"

# A loopback port nobody listens on.
PORT=$((20000 + ($$ * 7 + RANDOM) % 30000))
for _ in $(seq 50); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  PORT=$((PORT + 1))
done
ADDR="127.0.0.1:$PORT"
ADMIN_ADDR="127.0.0.1:$((PORT + 1))"
mkdir -p "$DIR/state"
"$BIN/fedge-coordinator" operators add test-operator --role operator --state-dir "$DIR/state" \
  2> "$DIR/operators.log" | (umask 077; cat > "$DIR/operator-token") || fail "operators add"
CTL=("$BIN/fedgectl" --coordinator "$ADMIN_ADDR" --token-file "$DIR/operator-token" --insecure
     --timeout 10)
(umask 077; echo "aarch64-test-token-$$" > "$DIR/token")

"$BIN/partition_fmnist" --clients 2 --scheme iid --train-examples 2000 --out "$DIR/shards" \
  > "$DIR/partition.log" 2>&1 || fail "partition_fmnist"

"$BIN/fedge-coordinator" --listen "$ADDR" --admin-listen "$ADMIN_ADDR" --state-dir "$DIR/state" --insecure \
  --enrollment-token-file "$DIR/token" --tick-ms 100 --max-wait-seconds 2 \
  > "$DIR/coordinator.log" 2>&1 &
PIDS+=($!)
for i in $(seq 101); do
  grep -q "serving on" "$DIR/coordinator.log" && break
  kill -0 "${PIDS[0]}" 2>/dev/null || fail "fedge-coordinator exited"
  ((i < 101)) || fail "fedge-coordinator did not start"
  sleep 0.1
done

CLIENT_FLAGS=(--coordinator "$ADDR" --insecure --enrollment-token-file "$DIR/token"
              --fetch-wait-seconds 1)
# exec: the background job is qemu itself, so that cleanup's kill reaches it (a
# function run in the background is a subshell whose child would outlive the kill).
(exec env -u QEMU_LD_PREFIX "$QEMU" "$ARM_CLIENT" "${CLIENT_FLAGS[@]}" \
  --shard "$DIR/shards/client-00000.shard" --state-dir "$DIR/arm" --seed 1) \
  > "$DIR/client-aarch64.log" 2>&1 &
PIDS+=($!)
"$BIN/fedge-client" "${CLIENT_FLAGS[@]}" --shard "$DIR/shards/client-00001.shard" \
  --state-dir "$DIR/x86" --seed 2 > "$DIR/client-x86_64.log" 2>&1 &
PIDS+=($!)

# Both registered (qemu start-up included).
n=0
for _ in $(seq 600); do
  n=$("${CTL[@]}" clients 2>/dev/null | sed -n 's/^\([0-9]*\) client(s)$/\1/p')
  [ "${n:-0}" -ge 2 ] && break
  for p in "${PIDS[@]:1}"; do kill -0 "$p" 2>/dev/null || fail "a fedge-client exited"; done
  sleep 0.1
done
[ "${n:-0}" -ge 2 ] || fail "only ${n:-0} of 2 clients registered"

cat > "$DIR/job.textproto" <<EOF
name: "aarch64-client-test"
architecture: "mlp"
rounds: 1
selection { clients_per_round: 2 }
round_policy { quorum: 2 deadline_seconds: 300 }
local_training { epochs: 2 batch_size: 32 learning_rate: 0.05 momentum: 0.9
                 compute_mode: COMPUTE_MODE_INT8 }
preprocessing { kind: KIND_UNIT_RANGE }
evaluation { max_examples: 1000 }
EOF
out=$("${CTL[@]}" job start "$DIR/job.textproto") || fail "job start: $out"
JOB=$(echo "$out" | sed -n 's/^started job \([^ ]*\) .*/\1/p')
[ -n "$JOB" ] || fail "no job id in: $out"

# fedgectl watch in the background so that a signal reaches the trap at once.
"${CTL[@]}" watch "$JOB" --replay > "$DIR/watch.log" 2>&1 &
WATCH_PID=$!
PIDS+=("$WATCH_PID")
for _ in $(seq 3000); do
  kill -0 "$WATCH_PID" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$WATCH_PID" 2>/dev/null && fail "the job did not end within 300 s"
"${CTL[@]}" status "$JOB" > "$DIR/status.log" 2>&1 || fail "status: $(cat "$DIR/status.log")"
"${CTL[@]}" rounds "$JOB" > "$DIR/rounds.log" 2>&1 || fail "rounds failed"
"${CTL[@]}" clients > "$DIR/clients.log" 2>&1 || fail "clients failed"
cat "$DIR/rounds.log" "$DIR/clients.log"
grep -q "finished" "$DIR/status.log" || fail "job did not finish: $(cat "$DIR/status.log")"
grep -q "^round *1  completed  clients 2/2 " "$DIR/rounds.log" ||
  fail "round 1 did not complete with both clients: $(cat "$DIR/rounds.log")"
awk '$6 == "linux-aarch64" && $5 == 1 { found = 1 } END { exit !found }' "$DIR/clients.log" ||
  fail "no linux-aarch64 client took part in 1 round"
awk '$6 == "linux-x86_64" && $5 == 1 { found = 1 } END { exit !found }' "$DIR/clients.log" ||
  fail "no linux-x86_64 client took part in 1 round"
grep "^round 1 " "$DIR/client-aarch64.log" || fail "the aarch64 client did not report round 1"
# qemu-user's default CPU model (max) has dotprod and i8mm: the int8 training ran the NEON
# SMMLA GEMMs.
grep -q "quantized kernels neoni8mm" "$DIR/client-aarch64.log" ||
  fail "the aarch64 client did not run the neoni8mm kernels: $(grep -m1 'quantized kernels' "$DIR/client-aarch64.log")"
acc=$(sed -n 's/^round *1  completed .* acc \([0-9.]*\) .*/\1/p' "$DIR/rounds.log")
awk -v a="${acc:-0}" 'BEGIN { exit !(a > 0.5) }' ||
  fail "test accuracy ${acc:-?} after the round (expected > 0.5)"
OK=1
echo "PASS: aarch64 client (under $(basename "$QEMU")) aggregated in round 1, test accuracy $acc"

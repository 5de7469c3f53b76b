#!/usr/bin/env bash
# Fault tests of the multi-process fleet: a real
# fedge-coordinator, real fedge-client processes and fedgectl, on loopback, plaintext
# (--insecure; TLS is covered by coordinator_binary_test and examples/fleet/run.sh).
#
#   tests/fleet_faults_test.sh BIN_DIR coordinator-crash
#     4 devices, a 6-round mlp job; SIGKILL the coordinator while a round is in flight after
#     ≥ 2 completed, restart it on the same state dir and port. Expected: the job finishes,
#     rounds 1..6 are each completed exactly once, the same 4 clients (same ids, same
#     processes, none restarted) take part after the restart.
#   tests/fleet_faults_test.sh BIN_DIR root-takeover
#     The store in PostgreSQL (Debian's, in a temporary directory, run as the user fedge-pg
#     when root); two coordinators on it, on different ports: one active, one standby.
#     4 devices and fedgectl name both addresses (a gRPC ipv4: target list). SIGKILL the
#     active coordinator mid-round. Expected: the standby takes over within the lease plus
#     one poll (and a start-up), the job finishes, rounds 1..6 each completed exactly once,
#     the same 4 devices (same ids, same processes) take part after the takeover. Then
#     PostgreSQL is stopped mid-round for 2 s and started again: the coordinator waits and
#     the job finishes.
#   tests/fleet_faults_test.sh BIN_DIR relay-kill
#     A root and two relays (fedge-coordinator --role relay), three devices on each; the
#     relays' tokens of the relay role. SIGKILL relay-b mid-round, restart it 3 s later.
#     Expected: the round completes from relay-a's devices (quorum 3), relay-b's devices
#     register again through the restarted relay (same ids, same processes) and the last
#     round has all 6; every round completed exactly once.
#   tests/fleet_faults_test.sh BIN_DIR relay-secagg
#     Secure aggregation (threshold 4 of 6, distributed DP noise) in two relays' groups of
#     3 devices. Expected: every round completes with all 6, each relay sends one part per
#     round of its 3 devices, and the root takes 2 parts per round.
#   tests/fleet_faults_test.sh BIN_DIR relay-haproxy
#     Six devices dial HAProxy (examples/relays/haproxy.cfg) in front of two relays; the
#     relay it sent them to is SIGKILLed mid-round. Expected: HAProxy sends them to the
#     other relay, they register again there (same ids, same processes) and the job
#     finishes with all 6 in its last round.
#   tests/fleet_faults_test.sh BIN_DIR client-loss
#     10 devices, quorum 7; SIGKILL 3 devices while a round is in flight. Expected: that
#     round (or the next, if they had already uploaded) closes with the survivors, the job
#     finishes, and the rounds after it sample only the 7 live devices.
#
# Data: a small iid slice of Fashion-MNIST (partition_fmnist --train-examples). Every process
# started is killed on any exit; the port is chosen from the pid and checked free. On failure
# the logs are printed and kept.
set -euo pipefail
BIN="$1"
CASE="$2"
DIR="$(mktemp -d -t fedge-fleet-test.XXXXXX)"
COORD_PID=""
WATCH_PID=""
CLIENT_PIDS=()
OK=0

STANDBY_PID=""
STARTED_PID=""
PG_PID=""
PG_DIR=""

cleanup() {
  for p in ${WATCH_PID:+"$WATCH_PID"} ${COORD_PID:+"$COORD_PID"} ${STANDBY_PID:+"$STANDBY_PID"} ${STARTED_PID:+"$STARTED_PID"} "${RELAY_PIDS[@]}" "${CLIENT_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ -n "$PG_PID" ]; then kill -INT "$PG_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  if [ -n "$PG_DIR" ]; then
    cp "$PG_DIR/server.log" "$DIR/postgres.log" 2>/dev/null || true
    rm -rf "$PG_DIR"
  fi
  if ((OK)); then
    rm -rf "$DIR"
  else
    for f in "$DIR"/*.log; do
      [ -f "$f" ] || continue
      echo "----- $f (last 15 lines)"
      tail -n 15 "$f"
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

# A loopback port nobody listens on.
# Eight loopback ports in a row nobody listens on (PORT .. PORT+7: coordinators, relays,
# HAProxy, PostgreSQL).
ports_free() {
  local p
  for ((p = $1; p < $1 + 8; p++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then return 1; fi
  done
}
PORT=$((20000 + ($$ * 7 + RANDOM) % 30000))
for _ in $(seq 50); do
  ports_free "$PORT" && break
  PORT=$((PORT + 8))
done
ADDR="127.0.0.1:$PORT"
ADMIN_ADDR="127.0.0.1:$((PORT + 1))"
mkdir -p "$DIR/state"
"$BIN/fedge-coordinator" operators add test-operator --role operator --state-dir "$DIR/state" \
  2> "$DIR/operators.log" | (umask 077; cat > "$DIR/operator-token") || fail "operators add"
CTL=("$BIN/fedgectl" --coordinator "$ADMIN_ADDR" --token-file "$DIR/operator-token" --insecure
     --timeout 10)
(umask 077; echo "fleet-test-token-$$" > "$DIR/token")

DEVICE_TARGET="$ADDR"
DEVICE_TARGETS=()
RELAY_PIDS=()

start_coordinator() {  # $1: log name; more arguments go to fedge-coordinator
  local log="$1"
  shift
  "$BIN/fedge-coordinator" --listen "$ADDR" --admin-listen "$ADMIN_ADDR" --state-dir "$DIR/state" --insecure \
    --enrollment-token-file "$DIR/token" --tick-ms 100 --liveness-seconds "$LIVENESS" \
    --max-wait-seconds 2 "$@" > "$DIR/$log.log" 2>&1 &
  COORD_PID=$!
  set -- "$log"
  for _ in $(seq 100); do
    grep -q "serving on" "$DIR/$1.log" && return 0
    kill -0 "$COORD_PID" 2>/dev/null || fail "fedge-coordinator exited: $(cat "$DIR/$1.log")"
    sleep 0.1
  done
  fail "fedge-coordinator did not start"
}

# A throwaway PostgreSQL on a free port; sets PG_URL. PostgreSQL does not run as root: as
# root it runs as fedge-pg (scripts/setup.sh creates the user), through setpriv, which execs
# (so PG_PID is postgres itself).
start_postgres() {
  local bin as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -x "$bin/postgres" ] || fail "no PostgreSQL server: install Debian's postgresql (scripts/setup.sh does)"
  PG_DIR="$(mktemp -d -t fedge-pg.XXXXXX)"
  if [ "$(id -u)" -eq 0 ]; then
    id -u fedge-pg > /dev/null 2>&1 || fail "no user fedge-pg to run PostgreSQL as (scripts/setup.sh creates it)"
    chown fedge-pg: "$PG_DIR"
    as=(setpriv --reuid=fedge-pg --regid="$(id -g fedge-pg)" --clear-groups --pdeathsig QUIT --)
  else
    as=(setpriv --pdeathsig QUIT --)
  fi
  "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U fedge -A trust -E UTF8 --locale=C --no-sync \
    > "$DIR/initdb.log" 2>&1 || fail "initdb: $(tail -5 "$DIR/initdb.log")"
  PG_AS=("${as[@]}")
  PG_BIN="$bin"
  PG_PORT=$((PORT + 7))
  PG_URL="postgresql://fedge@127.0.0.1:$PG_PORT/postgres"
  launch_postgres
}

launch_postgres() {
  # --pdeathsig: postgres ends with this script, even if the script is SIGKILLed.
  "${PG_AS[@]}" "$PG_BIN/postgres" -D "$PG_DIR/data" -p "$PG_PORT" -c unix_socket_directories= \
    -c listen_addresses=127.0.0.1 -c fsync=off >> "$PG_DIR/server.log" 2>&1 &
  PG_PID=$!
  for _ in $(seq 200); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && return 0
    kill -0 "$PG_PID" 2>/dev/null || fail "postgres exited: $(cat "$PG_DIR/server.log")"
    sleep 0.1
  done
  fail "postgres did not start"
}

restart_postgres() {  # $1: seconds down
  kill -INT "$PG_PID"
  wait "$PG_PID" 2>/dev/null || true
  sleep "$1"
  launch_postgres
}

start_clients() {  # $1: count; client i connects to DEVICE_TARGETS[i mod n], else DEVICE_TARGET
  for ((i = 0; i < $1; i++)); do
    local name target="$DEVICE_TARGET"
    name="$(printf 'client-%05d' "$i")"
    if [ "${#DEVICE_TARGETS[@]}" -gt 0 ]; then target="${DEVICE_TARGETS[$((i % ${#DEVICE_TARGETS[@]}))]}"; fi
    "$BIN/fedge-client" --coordinator "$target" --insecure --enrollment-token-file "$DIR/token" \
      --shard "$DIR/shards/$name.shard" --state-dir "$DIR/$name" --fetch-wait-seconds 1 \
      --seed $((i + 1)) > "$DIR/$name.log" 2>&1 &
    CLIENT_PIDS+=($!)
  done
  local n=0
  for _ in $(seq 200); do
    n=$("${CTL[@]}" clients 2>/dev/null | sed -n 's/^\([0-9]*\) client(s)$/\1/p')
    [ "${n:-0}" -ge "$1" ] && return 0
    sleep 0.1
  done
  fail "only ${n:-0} of $1 clients registered"
}

write_job() {  # $1 rounds, $2 clients per round, $3 quorum, $4 deadline, $5 local epochs
  cat > "$DIR/job.textproto" <<EOF
name: "fleet-fault-test"
architecture: "mlp"
rounds: $1
selection { clients_per_round: $2 }
round_policy { quorum: $3 deadline_seconds: $4 }
local_training { epochs: $5 batch_size: 32 learning_rate: 0.05 momentum: 0.9 }
evaluation { max_examples: 1000 }
EOF
}

start_job() {
  local out
  out=$("${CTL[@]}" job start "$DIR/job.textproto") || fail "job start: $out"
  JOB=$(echo "$out" | sed -n 's/^started job \([^ ]*\) .*/\1/p')
  [ -n "$JOB" ] || fail "no job id in: $out"
}

# Polls `fedgectl status` until ≥ $1 rounds are completed and a round is in flight.
wait_mid_round() {  # $1: at least this many rounds completed; $2 (optional): at most
  local s
  for _ in $(seq 600); do
    s=$("${CTL[@]}" status "$JOB" 2>/dev/null || true)
    local done_rounds
    done_rounds=$(echo "$s" | sed -n 's/^  rounds *\([0-9]*\) of.*/\1/p')
    if [ -n "${2:-}" ] && [ "${done_rounds:-0}" -gt "$2" ]; then
      fail "round $((done_rounds + 1)) already running before the fault (wanted it by round $(($2 + 1))): too slow a machine for this test's timing"
    fi
    if [ "${done_rounds:-0}" -ge "$1" ] && echo "$s" | grep -q "in flight"; then
      echo "$s" | grep "rounds"
      return 0
    fi
    echo "$s" | grep -q "finished" && fail "the job finished before the fault was injected"
    sleep 0.05
  done
  fail "no round in flight after $1 completed: $s"
}

wait_finished() {  # $1 rounds
  # fedgectl watch runs in the background so that a signal reaches the trap at once.
  "${CTL[@]}" watch "$JOB" --replay > "$DIR/watch.log" 2>&1 &
  WATCH_PID=$!
  for _ in $(seq 1200); do
    kill -0 "$WATCH_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$WATCH_PID" 2>/dev/null && fail "the job did not end within 120 s"
  wait "$WATCH_PID" 2>/dev/null || true
  WATCH_PID=""
  "${CTL[@]}" status "$JOB" > "$DIR/status.log" 2>&1 || fail "status: $(cat "$DIR/status.log")"
  grep -q "finished" "$DIR/status.log" || fail "job did not finish: $(cat "$DIR/status.log")"
  grep -q "$1 of $1 completed" "$DIR/status.log" || fail "not all rounds: $(cat "$DIR/status.log")"
  "${CTL[@]}" rounds "$JOB" > "$DIR/rounds.log" 2>&1 || fail "rounds failed"
  cat "$DIR/rounds.log"
}

client_ids() { "${CTL[@]}" clients --all | awk 'NR > 1 && $1 != "" && $0 !~ /client\(s\)$/ { print $1 }' | sort; }

# A coordinator on $PG_URL that waits as a standby (the lease is held): $1 log name, $2 and
# $3 its device and admin addresses. Sets STARTED_PID; fails unless it says it is a standby
# and does not serve.
start_standby() {
  "$BIN/fedge-coordinator" --listen "$2" --admin-listen "$3" \
    --state-dir "$DIR/standby-state" --store "$PG_URL" --lease-seconds "$LEASE" --insecure \
    --enrollment-token-file "$DIR/token" --tick-ms 100 --liveness-seconds "$LIVENESS" \
    --max-wait-seconds 2 > "$DIR/$1.log" 2>&1 &
  STARTED_PID=$!
  for _ in $(seq 100); do
    grep -q "standby" "$DIR/$1.log" && break
    kill -0 "$STARTED_PID" 2>/dev/null || fail "$1 exited: $(cat "$DIR/$1.log")"
    sleep 0.1
  done
  grep -q "standby" "$DIR/$1.log" || fail "$1 did not wait as a standby"
  grep -q "serving on" "$DIR/$1.log" && fail "$1 serves while the lease is held"
  return 0
}

# 4 devices and a 6-round job, until a round is in flight after 2 completed; sets
# ids_before to the devices' ids.
run_fleet_to_mid_round() {
  start_clients 4
  ids_before=$(client_ids)
  [ "$(echo "$ids_before" | grep -c .)" -eq 4 ] || fail "expected 4 client ids, got [$ids_before]"
  write_job "$ROUNDS" 4 4 60 2
  start_job
  wait_mid_round 2
}

# After a coordinator fault: rounds 1..$1 each completed exactly once, the last with all 4
# devices, the same device processes alive and the same ids as before the fault ($2).
check_each_round_once_same_devices() {
  local rounds="$1" ids_before="$2" r n
  for ((r = 1; r <= rounds; r++)); do
    n=$(grep -c "^round *$r  completed " "$DIR/rounds.log" || true)
    [ "$n" -eq 1 ] || fail "round $r completed $n times"
  done
  n=$(grep -c " completed " "$DIR/rounds.log" || true)
  [ "$n" -eq "$rounds" ] || fail "$n completed rounds, expected $rounds"
  grep -q "^round *$rounds  completed  clients 4/4" "$DIR/rounds.log" ||
    fail "the last round did not have all 4 clients (they did not reconnect)"
  for p in "${CLIENT_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || fail "client process $p died"; done
  [ "$ids_before" = "$(client_ids)" ] || fail "client ids changed: [$ids_before] -> [$(client_ids)]"
}

# A relay of the root: $1 its name (and token name), $2 its devices' address, $3 its index
# in RELAY_PIDS. Its token is made once (operators add --role relay).
start_relay() {
  if [ ! -f "$DIR/$1.token" ]; then
    "$BIN/fedge-coordinator" operators add "$1" --role relay --state-dir "$DIR/state" \
      2>> "$DIR/operators.log" | (umask 077; cat > "$DIR/$1.token") || fail "operators add $1"
  fi
  "$BIN/fedge-coordinator" --role relay --upstream "$ADMIN_ADDR" --relay-token-file "$DIR/$1.token" \
    --insecure --listen "$2" --liveness-seconds "$LIVENESS" --max-wait-seconds 2 \
    --relay-sync-ms 200 >> "$DIR/$1.log" 2>&1 &
  RELAY_PIDS[$3]=$!
  for _ in $(seq 100); do
    grep -q "relay $1 serving devices" "$DIR/$1.log" && return 0
    kill -0 "${RELAY_PIDS[$3]}" 2>/dev/null || fail "relay $1 exited: $(cat "$DIR/$1.log")"
    sleep 0.1
  done
  fail "relay $1 did not start"
}

# 6 shards, the root, and relay-a and relay-b (at RELAY_A and RELAY_B) under it.
start_root_and_two_relays() {
  "$BIN/partition_fmnist" --clients 6 --scheme iid --train-examples 9000 --out "$DIR/shards" \
    > "$DIR/partition.log" || fail "partition_fmnist"
  start_coordinator root
  RELAY_A="127.0.0.1:$((PORT + 2))"
  RELAY_B="127.0.0.1:$((PORT + 3))"
  start_relay relay-a "$RELAY_A" 0
  start_relay relay-b "$RELAY_B" 1
}

# participation.txt: "round participants sampled" per completed round, from rounds.log.
write_participation() {
  sed -n 's/^round *\([0-9]*\)  completed  clients \([0-9]*\)\/\([0-9]*\) .*/\1 \2 \3/p' \
    "$DIR/rounds.log" > "$DIR/participation.txt"
}

case "$CASE" in
  coordinator-crash)
    LIVENESS=30
    ROUNDS=6
    "$BIN/partition_fmnist" --clients 4 --scheme iid --train-examples 8000 --out "$DIR/shards" \
      > "$DIR/partition.log" || fail "partition_fmnist"
    start_coordinator coordinator-1
    run_fleet_to_mid_round
    kill -KILL "$COORD_PID"
    wait "$COORD_PID" 2>/dev/null || true
    echo "SIGKILLed the coordinator; restarting it on the same state dir and port"
    start_coordinator coordinator-2
    grep -q "resuming job $JOB" "$DIR/coordinator-2.log" || fail "the restarted coordinator did not resume $JOB"
    wait_finished "$ROUNDS"
    check_each_round_once_same_devices "$ROUNDS" "$ids_before"
    for ((i = 0; i < 4; i++)); do
      grep -q "^round $ROUNDS " "$DIR/$(printf 'client-%05d' "$i").log" ||
        fail "client $i did not train round $ROUNDS"
    done
    ;;
  root-takeover)
    LIVENESS=30
    ROUNDS=6
    LEASE=3
    "$BIN/partition_fmnist" --clients 4 --scheme iid --train-examples 8000 --out "$DIR/shards" \
      > "$DIR/partition.log" || fail "partition_fmnist"
    start_postgres
    # The standby: its own ports and state dir (the same operators file), the same database.
    STANDBY_ADDR="127.0.0.1:$((PORT + 2))"
    STANDBY_ADMIN="127.0.0.1:$((PORT + 3))"
    mkdir -p "$DIR/standby-state"
    cp -p "$DIR/state/operators" "$DIR/standby-state/operators"
    DEVICE_TARGET="ipv4:$ADDR,$STANDBY_ADDR"
    CTL=("$BIN/fedgectl" --coordinator "ipv4:$ADMIN_ADDR,$STANDBY_ADMIN" --token-file "$DIR/operator-token"
         --insecure --timeout 10)
    start_coordinator active --store "$PG_URL" --lease-seconds "$LEASE"
    start_standby standby "$STANDBY_ADDR" "$STANDBY_ADMIN"
    STANDBY_PID=$STARTED_PID
    run_fleet_to_mid_round
    kill -KILL "$COORD_PID"
    killed_ms=$(date +%s%3N)
    wait "$COORD_PID" 2>/dev/null || true
    COORD_PID=""
    echo "SIGKILLed the active coordinator mid-round; the standby should take over"
    for _ in $(seq 300); do
      grep -q "serving on" "$DIR/standby.log" && break
      kill -0 "$STANDBY_PID" 2>/dev/null || fail "the standby exited: $(cat "$DIR/standby.log")"
      sleep 0.05
    done
    grep -q "serving on" "$DIR/standby.log" || fail "the standby did not take over"
    took_ms=$(( $(date +%s%3N) - killed_ms ))
    echo "the standby serves ${took_ms} ms after the kill (lease ${LEASE} s, poll $((LEASE * 1000 / 3)) ms)"
    [ "$took_ms" -le $(( LEASE * 1000 + LEASE * 1000 / 3 + 5000 )) ] ||
      fail "takeover took ${took_ms} ms, more than the lease plus one poll plus 5 s"
    grep -q "resuming job $JOB" "$DIR/standby.log" || fail "the standby did not resume $JOB"
    # A third coordinator waits as a standby, and stops at once on SIGTERM.
    start_standby standby-2 "127.0.0.1:$((PORT + 4))" "127.0.0.1:$((PORT + 5))"
    third=$STARTED_PID
    kill -TERM "$third"
    for _ in $(seq 50); do kill -0 "$third" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$third" 2>/dev/null && { kill -KILL "$third"; fail "a standby ignored SIGTERM"; }
    wait "$third" || fail "the standby stopped by SIGTERM exited with status $?"
    # The database restarted mid-round, down 2 s: the coordinator waits and goes on.
    wait_mid_round 4
    restart_postgres 2
    echo "restarted PostgreSQL mid-round"
    wait_finished "$ROUNDS"
    check_each_round_once_same_devices "$ROUNDS" "$ids_before"
    kill -0 "$STANDBY_PID" 2>/dev/null || fail "the coordinator did not outlive the database restart"
    grep -q "lost the store's lease" "$DIR/standby.log" && fail "the coordinator gave up its lease"
    ;;
  client-loss)
    LIVENESS=4
    ROUNDS=10
    "$BIN/partition_fmnist" --clients 10 --scheme iid --train-examples 10000 --out "$DIR/shards" \
      > "$DIR/partition.log" || fail "partition_fmnist"
    start_coordinator coordinator
    start_clients 10
    write_job "$ROUNDS" 10 7 60 4
    start_job
    # Killed by round 6 at the latest, so that rounds remain to see the sampling settle.
    wait_mid_round 1 $((ROUNDS - 5))
    kill -KILL "${CLIENT_PIDS[@]:0:3}"
    echo "SIGKILLed clients ${CLIENT_PIDS[*]:0:3}"
    wait_finished "$ROUNDS"
    # Liveness is by silence: a device killed mid-training is dropped from its round once it
    # has been silent for --liveness-seconds, and the round closes with the survivors (≥
    # quorum). A device killed just after uploading looks alive until then, so the round
    # right after may still sample it (and close without it); from then on only the 7 live
    # devices are sampled.
    write_participation
    [ "$(wc -l < "$DIR/participation.txt")" -eq "$ROUNDS" ] || fail "not every round completed"
    awk '$2 < 7 { exit 1 }' "$DIR/participation.txt" || fail "a round closed below quorum 7"
    first=$(awk '$2 < $3 { print $1; exit }' "$DIR/participation.txt")
    [ -n "$first" ] || fail "no round closed with dropped clients"
    awk -v f="$first" '$1 > f && $2 != 7 { exit 1 }' "$DIR/participation.txt" ||
      fail "a round after $first had other than the 7 live participants"
    settled=$(awk '$2 == 7 && $3 == 7 { print $1; exit }' "$DIR/participation.txt")
    [ -n "$settled" ] && [ "$settled" -le $((first + 2)) ] ||
      fail "sampling did not settle on the 7 live clients by round $((first + 2))"
    awk -v s="$settled" '$1 >= s && !($2 == 7 && $3 == 7) { exit 1 }' "$DIR/participation.txt" ||
      fail "a round after $settled sampled other than the 7 live clients"
    ;;
  relay-kill)
    # A root and two relays, three devices on each; relay-b SIGKILLed mid-round.
    # Rounds take a few tenths of a second: 40 leave time for the restart and the devices'
    # backoff before they register again.
    LIVENESS=4
    ROUNDS=40
    start_root_and_two_relays
    DEVICE_TARGETS=("$RELAY_A" "$RELAY_B")
    start_clients 6
    ids_before=$(client_ids)
    [ "$(echo "$ids_before" | grep -c .)" -eq 6 ] || fail "expected 6 client ids at the root, got [$ids_before]"
    write_job "$ROUNDS" 6 3 60 3
    start_job
    wait_mid_round 2 $((ROUNDS - 6))
    kill -KILL "${RELAY_PIDS[1]}"
    wait "${RELAY_PIDS[1]}" 2>/dev/null || true
    killed_round=$(("$("${CTL[@]}" status "$JOB" | sed -n 's/^  rounds *\([0-9]*\) of.*/\1/p')" + 1))
    echo "SIGKILLed relay-b in round $killed_round; restarting it in 3 s"
    sleep 3
    start_relay relay-b "$RELAY_B" 1
    wait_finished "$ROUNDS"
    write_participation
    [ "$(wc -l < "$DIR/participation.txt")" -eq "$ROUNDS" ] || fail "not every round completed once"
    awk '$2 < 3 { exit 1 }' "$DIR/participation.txt" || fail "a round closed below quorum 3"
    # The round relay-b died in (or the next) completed from relay-a's devices alone ...
    awk -v k="$killed_round" '$1 >= k && $1 <= k + 1 && $2 == 3 { found = 1 } END { exit !found }' \
      "$DIR/participation.txt" || fail "no round completed from relay-a's 3 devices after the kill"
    # ... and relay-b's devices came back through the restarted relay: the last round has 6.
    tail -n 1 "$DIR/participation.txt" | awk '$2 == 6 { ok = 1 } END { exit !ok }' ||
      fail "relay-b's devices did not rejoin: $(tail -n 1 "$DIR/participation.txt")"
    for p in "${CLIENT_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || fail "client process $p died"; done
    [ "$ids_before" = "$(client_ids)" ] || fail "client ids changed: [$ids_before] -> [$(client_ids)]"
    grep -q "part (3 devices" "$DIR/relay-a.log" || fail "relay-a sent no part"
    grep -q "took relay relay-b's part" "$DIR/root.log" || fail "the root took no part of relay-b"
    ;;
  relay-secagg)
    # Secure aggregation in two relays' groups of 3 devices (threshold 4 of 6 -> 2 per
    # group), with distributed DP noise; over real processes.
    LIVENESS=10
    ROUNDS=4
    start_root_and_two_relays
    DEVICE_TARGETS=("$RELAY_A" "$RELAY_B")
    start_clients 6
    write_job "$ROUNDS" 6 4 60 2
    echo 'privacy { clip_norm: 1.0 noise_multiplier: 0.3 secure_aggregation_threshold: 4 }' \
      >> "$DIR/job.textproto"
    start_job
    wait_finished "$ROUNDS"
    grep -q "^round *$ROUNDS  completed  clients 6/6" "$DIR/rounds.log" ||
      fail "the last round did not have all 6 devices: $(tail -n 1 "$DIR/rounds.log")"
    for r in relay-a relay-b; do
      [ "$(grep -c "part (3 devices" "$DIR/$r.log")" -ge "$ROUNDS" ] ||
        fail "$r sent fewer than $ROUNDS parts of 3 devices"
      grep -q "secure aggregation released nothing" "$DIR/$r.log" && fail "$r's group released nothing"
    done
    n=$(grep -c "took relay relay-[ab]'s part (3 clients)" "$DIR/root.log" || true)
    [ "$n" -ge $((2 * ROUNDS)) ] || fail "the root took $n parts, expected $((2 * ROUNDS))"
    for ((i = 0; i < 6; i++)); do
      grep -q "^round $ROUNDS " "$DIR/$(printf 'client-%05d' "$i").log" ||
        fail "client $i did not finish round $ROUNDS"
    done
    ;;
  relay-haproxy)
    # Six devices dial one address: HAProxy (examples/relays/haproxy.cfg, as shipped but for
    # the addresses) in front of two relays. The relay they were sent to is SIGKILLed
    # mid-round; HAProxy sends them to the other, where they register again.
    command -v haproxy > /dev/null || fail "no haproxy: install Debian's haproxy (scripts/setup.sh does)"
    LIVENESS=4
    ROUNDS=40
    start_root_and_two_relays
    LB="127.0.0.1:$((PORT + 4))"
    sed -e "s/bind :50051/bind $LB/" -e "s/10.0.0.11:50051/$RELAY_A/" -e "s/10.0.0.12:50051/$RELAY_B/" \
      -e "s/log stdout format raw local0 info/log stderr format raw local0 info/" \
      "$(dirname "$0")/../examples/relays/haproxy.cfg" > "$DIR/haproxy.cfg"
    haproxy -db -f "$DIR/haproxy.cfg" > "$DIR/haproxy.log" 2>&1 &
    RELAY_PIDS[2]=$!
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$((PORT + 4))") 2>/dev/null && break; sleep 0.1; done
    DEVICE_TARGET="$LB"
    start_clients 6
    ids_before=$(client_ids)
    write_job "$ROUNDS" 6 3 60 3
    start_job
    wait_mid_round 2 $((ROUNDS - 6))
    # Every device comes from 127.0.0.1: `balance source` sends them all to one relay.
    if grep -q "open for 6 of its devices" "$DIR/relay-a.log"; then used=0; other=relay-b; else used=1; other=relay-a; fi
    kill -KILL "${RELAY_PIDS[$used]}"
    echo "SIGKILLed the relay the load balancer chose; the devices should move to $other"
    wait_finished "$ROUNDS"
    tail -n 1 "$DIR/rounds.log" | grep -q "clients 6/6" ||
      fail "the devices did not all move to $other: $(tail -n 1 "$DIR/rounds.log")"
    grep -q "open for 6 of its devices" "$DIR/$other.log" || fail "$other never served the 6 devices"
    for p in "${CLIENT_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || fail "client process $p died"; done
    [ "$ids_before" = "$(client_ids)" ] || fail "client ids changed: [$ids_before] -> [$(client_ids)]"
    ;;
  *)
    fail "unknown case $CASE"
    ;;
esac
OK=1
echo "PASS: $CASE"

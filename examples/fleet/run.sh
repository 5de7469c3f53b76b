#!/usr/bin/env bash
# A federated fleet on one machine: fedge-coordinator (SQLite state, TLS), N fedge-client
# processes on loopback each holding a Fashion-MNIST shard, and the operator's fedgectl.
#
#   examples/fleet/run.sh                       # cnn, 10 devices, 20 rounds of 1 local epoch
#   ROUNDS=5 CLIENTS=4 MODEL=mlp examples/fleet/run.sh
#
# Knobs (environment): CLIENTS (10), ROUNDS (20), LOCAL_EPOCHS (1), MODEL (cnn | mlp),
# OUT (out/fleet), PORT (chosen from the pid), FLEET_INSECURE=1 (plaintext gRPC instead of
# mutual TLS), FEDGE_BUILD_DIR (build), JOB_TEMPLATE (examples/fleet/job.textproto),
# CLIENT_BUDGETS_MB (memory budgets of the devices in order, e.g. "512 512 128 32"; device i
# takes entry i mod the list's length; empty: no budget), MODEL="" to keep the template's
# model. The split is label-Dirichlet α=0.5, seed 0, drawn from numpy's stream: NIID-Bench's
# own split, the one Python baselines seeded with np.random.seed(0) train on (SPLIT_RNG=fedge:
# base::Rng's split, which runs before 2026-11-25 used); the job is JOB_TEMPLATE with those
# knobs written in. SIM_IDS=1: device i asks for fedge-sim's id of client i (v0000000i) and
# the coordinator grants it (--accept-requested-client-ids), so that the devices shuffle their
# batches exactly as examples/sim_fleet.textproto's clients do (compare the two curves).
# LABEL_FLIP="3" (device indices, comma-separated): those devices hold label-flipped shards,
# hostile devices training on poisoned data (docs/security.md, "Poisoning").
# HOSTILE_ATTACK=neg-model|huge|sign-flip: device HOSTILE (default 3) runs hostile_client
# (bench/hostile_client.cc: fedge-client rewriting every update as fedge-sim's attack of that
# name, with bench/poisoning.sh's settings: Δ = −1000·w claiming 60,000 examples; every value
# 1e30; Δ = −10·Δ).
#
# What it does: makes throwaway CAs (one for the server and devices, one for operators) with
# their certificates (openssl), a private enrollment token and an operator token
# (`fedge-coordinator operators add`) in a temporary directory; starts fedge-coordinator on
# 127.0.0.1 with a fresh state dir OUT/state; partitions with partition_fmnist into
# OUT/shards; starts the devices (state in OUT/devices/client-NNNNN); starts the job with
# `fedgectl job start`; follows it with `fedgectl watch`; exports the final model to
# OUT/model.fedge; prints a summary (accuracy, seconds per round, peak RSS read from
# /proc/<pid>/status VmHWM before stopping); stops everything with SIGTERM. Logs: OUT/logs/.
# Whatever way the script ends (an error, Ctrl-C), the trap stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLIENTS="${CLIENTS:-10}"
ROUNDS="${ROUNDS:-20}"
LOCAL_EPOCHS="${LOCAL_EPOCHS:-1}"
MODEL="${MODEL-cnn}"
JOB_TEMPLATE="${JOB_TEMPLATE:-examples/fleet/job.textproto}"
read -r -a BUDGETS <<< "${CLIENT_BUDGETS_MB:-}"
OUT="${OUT:-out/fleet}"
SPLIT_RNG="${SPLIT_RNG:-numpy}"
PORT="${PORT:-$((20000 + $$ % 20000))}"
BIN="${FEDGE_BUILD_DIR:-build}/bin"
ADDR="127.0.0.1:$PORT"
ADMIN_ADDR="127.0.0.1:$((PORT + 1))"

# LM_BASE=FILE (a model file from lm_pretrain): the language-model job instead, LoRA
# fine-tuning on the Brown fiction (examples/fleet/job_lm.textproto), one genre per device
# (LM_BY=document: one document each); CLIENTS follows the partition. The devices fetch the
# base from the coordinator (LM_DEVICE_BASE=1: each is given its own copy), and let training
# use 32 MB (CLIENT_BUDGETS_MB), within which they checkpoint activations.
if [ -n "${LM_BASE:-}" ]; then
  if [ -z "${CLIENT_BUDGETS_MB:-}" ]; then BUDGETS=(32); fi
  JOB_TEMPLATE="${JOB_TEMPLATE_LM:-examples/fleet/job_lm.textproto}"
  MODEL=""
  LM_BY="${LM_BY:-genre}"
  if [ ! -f "$LM_BASE" ]; then echo "fleet: LM_BASE $LM_BASE is not a file" >&2; exit 2; fi
fi
for b in fedge-coordinator fedge-client fedgectl partition_fmnist partition_brown; do
  if [ ! -x "$BIN/$b" ]; then
    echo "fleet: $BIN/$b is missing; build first (scripts/setup.sh)" >&2
    exit 1
  fi
done
if [ -n "${HOSTILE_ATTACK:-}" ] && [ ! -x "$BIN/hostile_client" ]; then
  echo "fleet: HOSTILE_ATTACK needs $BIN/hostile_client; build first (scripts/setup.sh)" >&2
  exit 1
fi
if ! [[ "$CLIENTS" =~ ^[1-9][0-9]*$ && "$ROUNDS" =~ ^[1-9][0-9]*$ && "$LOCAL_EPOCHS" =~ ^[1-9][0-9]*$ ]]; then
  echo "fleet: CLIENTS, ROUNDS and LOCAL_EPOCHS must be positive integers" >&2
  exit 2
fi

# ---- processes, and the trap that stops them ----
COORD_PID=""
WATCH_PID=""
TAIL_PID=""
CLIENT_PIDS=()
TMP="$(mktemp -d -t fedge-fleet.XXXXXX)"
cleanup() {
  local pids=()
  for p in ${WATCH_PID:+"$WATCH_PID"} ${TAIL_PID:+"$TAIL_PID"} ${COORD_PID:+"$COORD_PID"} "${CLIENT_PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then pids+=("$p"); fi
  done
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do  # up to 5 s, then SIGKILL
      local alive=0
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo; echo "fleet: interrupted"; exit 130' INT TERM

rm -rf "$OUT/state" "$OUT/devices" "$OUT/shards" "$OUT/logs" "$OUT/data"
mkdir -p "$OUT/logs" "$OUT/devices" "$OUT/data"

# ---- secrets: enrollment token and certificates ----
(umask 077; od -An -tx1 -N24 /dev/urandom | tr -d ' \n' > "$TMP/token")
# The operator: a token with the operator role, made offline in the state dir, and the
# coordinator's admin listener (operators only; devices' credentials grant nothing there).
mkdir -p "$OUT/state"
"$BIN/fedge-coordinator" operators add fleet-operator --role operator --state-dir "$OUT/state" \
  2> "$OUT/logs/operators.log" | (umask 077; cat > "$TMP/operator-token")
CTL=("$BIN/fedgectl" --coordinator "$ADMIN_ADDR" --token-file "$TMP/operator-token")
COORD_TLS=()
if [ "${FLEET_INSECURE:-0}" = "1" ]; then
  echo "fleet: FLEET_INSECURE=1: plaintext gRPC on loopback"
  COORD_TLS=(--insecure)
  CTL+=(--insecure)
else
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1)
  {
    openssl req -x509 "${ec[@]}" -subj /CN=fedge-fleet-ca -keyout "$TMP/ca.key" -out "$TMP/ca.crt"
    echo "subjectAltName=DNS:localhost,IP:127.0.0.1" > "$TMP/server.ext"
    openssl req "${ec[@]}" -subj /CN=localhost -keyout "$TMP/server.key" -out "$TMP/server.csr"
    openssl x509 -req -in "$TMP/server.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" \
      -CAcreateserial -days 1 -extfile "$TMP/server.ext" -out "$TMP/server.crt"
    # One certificate for every device, from the devices' CA ...
    openssl req "${ec[@]}" -subj "/CN=fleet-devices" -keyout "$TMP/devices.key" -out "$TMP/devices.csr"
    openssl x509 -req -in "$TMP/devices.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" \
      -CAcreateserial -days 1 -out "$TMP/devices.crt"
    # ... and the operator's, from a CA of its own: a device's certificate does not open the
    # admin listener, and an operator's does not enrol a device.
    openssl req -x509 "${ec[@]}" -subj /CN=fedge-fleet-operators-ca -keyout "$TMP/ops-ca.key" \
      -out "$TMP/ops-ca.crt"
    openssl req "${ec[@]}" -subj "/CN=fleet-operator" -keyout "$TMP/operator.key" -out "$TMP/operator.csr"
    openssl x509 -req -in "$TMP/operator.csr" -CA "$TMP/ops-ca.crt" -CAkey "$TMP/ops-ca.key" \
      -CAcreateserial -days 1 -out "$TMP/operator.crt"
  } > "$OUT/logs/openssl.log" 2>&1
  COORD_TLS=(--tls-cert "$TMP/server.crt" --tls-key "$TMP/server.key" --tls-client-ca "$TMP/ca.crt"
             --operator-ca "$TMP/ops-ca.crt")
  CTL+=(--tls-ca "$TMP/ca.crt" --tls-cert "$TMP/operator.crt" --tls-key "$TMP/operator.key")
fi

# ---- coordinator ----
echo "=== fleet: ${MODEL:-$JOB_TEMPLATE}, $CLIENTS devices, label-Dirichlet α=0.5, $ROUNDS rounds of $LOCAL_EPOCHS local epoch(s); coordinator on $ADDR ==="
COORD_IDS=()
if [ "${SIM_IDS:-0}" = "1" ]; then COORD_IDS=(--accept-requested-client-ids); fi
"$BIN/fedge-coordinator" --listen "$ADDR" --admin-listen "$ADMIN_ADDR" --state-dir "$OUT/state" \
  --enrollment-token-file "$TMP/token" "${COORD_TLS[@]}" "${COORD_IDS[@]}" \
  --data-root "$(realpath "$OUT/data")" > "$OUT/logs/coordinator.log" 2>&1 &
COORD_PID=$!
for _ in $(seq 100); do
  grep -q "serving on" "$OUT/logs/coordinator.log" && break
  if ! kill -0 "$COORD_PID" 2>/dev/null; then
    echo "fleet: fedge-coordinator exited:" >&2
    cat "$OUT/logs/coordinator.log" >&2
    exit 1
  fi
  sleep 0.1
done

# ---- data and devices ----
if [ -n "${LM_BASE:-}" ]; then
  "$BIN/partition_brown" --by "$LM_BY" --out "$OUT/shards" | tee "$OUT/logs/partition.log"
  CLIENTS=$(find "$OUT/shards" -name 'client-*.txtshard' | wc -l)
  # The coordinator's data root: the base and the held-out fiction.
  cp "$LM_BASE" "$OUT/data/base.pb"
  cp "$OUT/shards/fiction-test.txtshard" "$OUT/data/"
else
  "$BIN/partition_fmnist" --clients "$CLIENTS" --scheme dirichlet --alpha 0.5 --seed 0 --rng "$SPLIT_RNG" \
    ${LABEL_FLIP:+--label-flip "$LABEL_FLIP"} --out "$OUT/shards" | tee "$OUT/logs/partition.log"
fi
for ((i = 0; i < CLIENTS; i++)); do
  name="$(printf 'client-%05d' "$i")"
  tls=(--insecure)
  if [ "${FLEET_INSECURE:-0}" != "1" ]; then
    tls=(--tls-ca "$TMP/ca.crt" --tls-cert "$TMP/devices.crt" --tls-key "$TMP/devices.key")
  fi
  budget=()
  if ((${#BUDGETS[@]})); then budget=(--memory-budget-mb "${BUDGETS[$((i % ${#BUDGETS[@]}))]}"); fi
  ids=()
  if [ "${SIM_IDS:-0}" = "1" ]; then ids=(--client-id "$(printf 'v%08d' "$i")"); fi
  device=("$BIN/fedge-client")
  if [ -n "${HOSTILE_ATTACK:-}" ] && [ "$i" = "${HOSTILE:-3}" ]; then
    case "$HOSTILE_ATTACK" in
      neg-model) device=("$BIN/hostile_client" --attack neg-model --attack-scale 1000
                         --attack-claimed-examples 60000) ;;
      huge) device=("$BIN/hostile_client" --attack huge --attack-value 1e30) ;;
      sign-flip) device=("$BIN/hostile_client" --attack sign-flip --attack-scale 10) ;;
      *) echo "fleet: HOSTILE_ATTACK: neg-model, huge or sign-flip" >&2; exit 2 ;;
    esac
    echo "fleet: device $i is hostile ($HOSTILE_ATTACK)"
  fi
  local_data=(--shard "$OUT/shards/$name.shard")
  if [ -n "${LM_BASE:-}" ]; then
    # Devices fetch the job's base from the coordinator at their first task, by its SHA-256,
    # into their state directory; LM_DEVICE_BASE=1 gives each its own copy instead, as an
    # app that ships the base would.
    local_data=(--text-shard "$OUT/shards/$name.txtshard")
    if [ "${LM_DEVICE_BASE:-0}" = 1 ]; then local_data+=(--lm-base "$LM_BASE"); fi
  fi
  "${device[@]}" --coordinator "$ADDR" "${tls[@]}" --enrollment-token-file "$TMP/token" \
    "${local_data[@]}" --state-dir "$OUT/devices/$name" "${budget[@]}" "${ids[@]}" \
    > "$OUT/logs/$name.log" 2>&1 &
  CLIENT_PIDS+=($!)
done
registered=0
echo "fleet: $CLIENTS devices started; waiting for them to register"
for _ in $(seq 300); do
  registered=$("${CTL[@]}" clients 2>/dev/null | sed -n 's/^\([0-9]*\) client(s)$/\1/p')
  [ "${registered:-0}" -ge "$CLIENTS" ] && break
  sleep 0.2
done
if [ "${registered:-0}" -lt "$CLIENTS" ]; then
  echo "fleet: only ${registered:-0} of $CLIENTS devices registered; see $OUT/logs/" >&2
  exit 1
fi

# ---- the job ----
quorum=$(((CLIENTS * 8 + 9) / 10))
model_edit=()
if [ -n "$MODEL" ]; then model_edit=(-e "s/^architecture: .*/architecture: \"$MODEL\"/"); fi
sed "${model_edit[@]}" -e "s/^rounds: .*/rounds: $ROUNDS/" \
  -e "s/^  clients_per_round: .*/  clients_per_round: $CLIENTS/" \
  -e "s/^  quorum: [0-9]*/  quorum: $quorum/" -e "s/^  epochs: .*/  epochs: $LOCAL_EPOCHS/" \
  "$JOB_TEMPLATE" > "$OUT/job.textproto"
start_out=$("${CTL[@]}" job start "$OUT/job.textproto")
echo "$start_out"
JOB=$(echo "$start_out" | sed -n 's/^started job \([^ ]*\) .*/\1/p')
t0=$(date +%s.%N)
# fedgectl watch in the background (its lines followed with tail), so that a signal reaches
# the trap at once. The file exists before either starts, so tail never races the redirect.
: > "$OUT/logs/watch.log"
"${CTL[@]}" watch "$JOB" --replay > "$OUT/logs/watch.log" 2>&1 &
WATCH_PID=$!
tail -n +1 -f --pid="$WATCH_PID" "$OUT/logs/watch.log" &
TAIL_PID=$!
wait "$WATCH_PID" || echo "fleet: fedgectl watch ended early (exit $?); see $OUT/logs/" >&2
wait "$TAIL_PID" || true
WATCH_PID=""
TAIL_PID=""
t1=$(date +%s.%N)

# ---- summary (peak RSS first, while every process is alive) ----
vmhwm_kb() {
  local v
  v=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status" 2>/dev/null || true)
  echo "${v:-0}"
}
coord_kb=$(vmhwm_kb "$COORD_PID")
clients_kb=0
for p in "${CLIENT_PIDS[@]}"; do clients_kb=$((clients_kb + $(vmhwm_kb "$p"))); done
"${CTL[@]}" rounds "$JOB" > "$OUT/rounds.txt"
"${CTL[@]}" export "$JOB" --out "$OUT/model.fedge" > /dev/null
completed=$(grep -c " completed " "$OUT/rounds.txt" || true)
acc_at() { sed -n "s/^round *$1  completed .* acc \([0-9.]*\) .*/\1/p" "$OUT/rounds.txt" | tail -n 1; }
ppl_at() { sed -n "s/^round *$1  completed .* ppl *\([0-9.]*\) .*/\1/p" "$OUT/rounds.txt" | tail -n 1; }
final_acc=$(acc_at "$completed")
mean_round=$(sed -n 's/.* \([0-9.]*\)s  up .*/\1/p' "$OUT/rounds.txt" |
  awk '{ s += $1; n++ } END { if (n) printf "%.2f", s / n; else print "-" }')

# ---- stop ----
kill -TERM "${CLIENT_PIDS[@]}" 2>/dev/null || true
wait "${CLIENT_PIDS[@]}" 2>/dev/null || true
kill -TERM "$COORD_PID" 2>/dev/null || true
wait "$COORD_PID" 2>/dev/null || true

echo
echo "=== fleet summary ==="
printf '  job                 %s (%s, %s devices, %s local epoch(s))\n' "$JOB" "$MODEL" "$CLIENTS" "$LOCAL_EPOCHS"
printf '  rounds completed    %s of %s\n' "$completed" "$ROUNDS"
for r in 10 20; do
  if [ "$r" -le "$completed" ]; then printf '  accuracy @ round %-2s %s\n' "$r" "$(acc_at "$r")"; fi
done
printf '  final accuracy      %s (round %s)\n' "${final_acc:--}" "$completed"
if [ -n "${LM_BASE:-}" ]; then
  printf '  fiction perplexity  %s after round 1, %s after round %s\n' "$(ppl_at 1)" "$(ppl_at "$completed")" "$completed"
fi
awk -v a="$t0" -v b="$t1" -v n="$completed" -v m="$mean_round" 'BEGIN {
  printf "  seconds per round   %.2f wall clock (job %.1f s), %s mean round time\n", (b - a) / (n ? n : 1), b - a, m }'
awk -v c="$coord_kb" -v d="$clients_kb" -v n="$CLIENTS" 'BEGIN {
  printf "  peak RSS            coordinator %.1f MB, %s devices together %.1f MB (VmHWM)\n", c / 1024, n, d / 1024 }'
echo "  files               $OUT/rounds.txt, $OUT/model.fedge, state $OUT/state/coordinator.db, logs $OUT/logs/"

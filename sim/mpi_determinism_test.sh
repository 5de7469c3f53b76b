#!/usr/bin/env bash
# Determinism: the same config and seed give identical metrics files from
# fedge-sim on 1 thread, on 2 threads and under `mpirun -np 2` (rank 0 coordinates and
# trains every other update; rank 1 trains the rest). Only wall_time_s (real seconds) may
# differ, so it is stripped before the byte comparison.
#
#   sim/mpi_determinism_test.sh FEDGE_SIM MPIRUN CONFIG WORK_DIR [OTHER]
#
# OTHER: the sed expression that makes the sensitivity check's other scenario (default: the
# top-level seed becomes 4242).
#
# Checks, each of which fails the test:
#   - every run succeeds and writes one metrics line per round of the config;
#   - the mpirun run really ran as 2 MPI ranks (fedge-sim says so; two independent
#     single-process runs would also write identical files);
#   - 2 threads and mpirun -np 2 match 1 thread byte for byte (wall_time_s aside);
#   - the comparison sees training: another seed gives a different file.
# Runs as root too (--allow-run-as-root); --oversubscribe lets 2 ranks run on 1 core.
set -euo pipefail
SIM="$1"
MPIRUN="$2"
CONFIG="$3"
DIR="$4"
OTHER="${5:-s/^seed: .*/seed: 4242/}"
rm -rf "$DIR"
mkdir -p "$DIR"

fail() {
  echo "FAIL: $*"
  for f in "$DIR"/*.log; do
    echo "----- $f (last 20 lines)"
    tail -n 20 "$f"
  done
  exit 1
}

rounds=$(sed -n 's/^ *rounds: *\([0-9][0-9]*\).*/\1/p' "$CONFIG" | head -n 1)
[ -n "$rounds" ] || fail "no job.rounds in $CONFIG"

# Strips wall_time_s and checks the line count.
normalise() {
  local lines
  lines=$(wc -l <"$DIR/$1.jsonl")
  [ "$lines" -eq "$rounds" ] || fail "$1: $lines metrics lines, expected $rounds"
  sed 's/"wall_time_s":[^,]*,//' "$DIR/$1.jsonl" >"$DIR/$1.cmp"
}

"$SIM" --config "$CONFIG" --metrics-out "$DIR/t1.jsonl" --threads 1 --progress never \
  >"$DIR/t1.log" 2>&1 || fail "1 thread"
normalise t1
"$SIM" --config "$CONFIG" --metrics-out "$DIR/t2.jsonl" --threads 2 --progress never \
  >"$DIR/t2.log" 2>&1 || fail "2 threads"
normalise t2
"$MPIRUN" --allow-run-as-root --oversubscribe -np 2 \
  "$SIM" --config "$CONFIG" --metrics-out "$DIR/mpi.jsonl" --threads 1 --progress never \
  >"$DIR/mpi.log" 2>&1 || fail "mpirun -np 2"
grep -q "2 MPI ranks" "$DIR/mpi.log" || fail "mpirun -np 2 did not run as 2 MPI ranks"
normalise mpi

cmp "$DIR/t1.cmp" "$DIR/t2.cmp" || fail "1 thread and 2 threads differ"
cmp "$DIR/t1.cmp" "$DIR/mpi.cmp" || { diff "$DIR/t1.cmp" "$DIR/mpi.cmp" | head -n 6; fail "1 thread and mpirun -np 2 differ"; }

# Sensitivity: the same scenario with another seed must differ.
sed "$OTHER" "$CONFIG" >"$DIR/other_seed.textproto"
cmp -s "$CONFIG" "$DIR/other_seed.textproto" && fail "'$OTHER' changes nothing in $CONFIG"
"$SIM" --config "$DIR/other_seed.textproto" --metrics-out "$DIR/other.jsonl" --threads 2 \
  --progress never >"$DIR/other.log" 2>&1 || fail "other seed"
normalise other
if cmp -s "$DIR/t1.cmp" "$DIR/other.cmp"; then fail "another seed gave the same metrics"; fi

echo "PASS: $rounds rounds, 1 thread = 2 threads = mpirun -np 2 ($(md5sum <"$DIR/t1.cmp" | cut -c1-12))"

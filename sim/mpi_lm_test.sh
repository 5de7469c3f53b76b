#!/usr/bin/env bash
# The MPI determinism test (sim/mpi_determinism_test.sh) on a language-model job: the
# simulator's text devices (the Brown fiction, the base's tokenizer, LoRA over an int4 base)
# give the same metrics on 1 thread, 2 threads and under `mpirun -np 2`. Writes a tiny base
# with lm_pretrain first (a few seconds). Skips (77) without the Brown corpus
# (scripts/fetch-datasets.sh).
#
#   sim/mpi_lm_test.sh FEDGE_SIM MPIRUN LM_PRETRAIN CONFIG WORK_DIR
set -euo pipefail
SIM="$1"
MPIRUN="$2"
PRETRAIN="$3"
CONFIG="$4"
DIR="$5"
rm -rf "$DIR"
mkdir -p "$DIR"
# The base is read under SimConfig.data_root: this directory, for every config the
# determinism test derives.
{ cat "$CONFIG"; echo "data_root: \"$(cd "$DIR" && pwd)\""; } >"$DIR/sim.textproto"
if ! "$PRETRAIN" --out "$DIR/base.pb" --steps 3 --dim 32 --layers 2 --heads 2 --ffn 64 \
    --vocab 300 --context 32 --batch 2 --warmup 1 --eval_every 0 --threads 1 \
    >"$DIR/pretrain.log" 2>&1; then
  if grep -qi 'brown' "$DIR/pretrain.log"; then
    echo "SKIP: no Brown corpus ($(tail -n 1 "$DIR/pretrain.log"))"
    exit 77
  fi
  cat "$DIR/pretrain.log"
  echo "FAIL: lm_pretrain"
  exit 1
fi
# The other scenario of the sensitivity check: another adapters' seed (the simulator's own
# seed draws nothing in this scenario).
exec "$(dirname "$0")/mpi_determinism_test.sh" "$SIM" "$MPIRUN" "$DIR/sim.textproto" "$DIR/run" \
  's/^  init_seed: 0/  init_seed: 7/'

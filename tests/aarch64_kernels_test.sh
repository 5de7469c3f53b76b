#!/usr/bin/env bash
# The quantized kernels' tests, cross-built for aarch64 (scripts/cross-aarch64.sh), under
# qemu-user on three CPU models:
#   -cpu max          dotprod and i8mm: every variant test of neondot (SDOT) and neoni8mm
#                     (SMMLA) must run and be bit-exact with the reference (the int8 and int4
#                     GEMMs' shape sweeps, model shapes, large and extreme operands);
#   -cpu cortex-a76   dotprod, no i8mm: neondot runs, neoni8mm skips;
#   -cpu cortex-a57   ARMv8.0, neither: both skip, and the portable fallback must pass.
#
#   tests/aarch64_kernels_test.sh AARCH64_BIN_DIR
#
# Speed under qemu says nothing about real Arm hardware; this checks results only. Fails
# (never skips) when anything is missing.
set -euo pipefail
BIN="$1"
DIR="$(mktemp -d -t fedge-aarch64-kernels.XXXXXX)"
trap 'rm -rf "$DIR"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

QEMU="$(command -v qemu-aarch64-static || true)"
[ -n "$QEMU" ] || fail "qemu-aarch64-static not found (scripts/cross-aarch64.sh installs it)"
TESTS=(kernels_quantize_test kernels_qgemm_test kernels_q4_test)
for t in "${TESTS[@]}"; do
  [ -x "$BIN/$t" ] || fail "no $BIN/$t (run scripts/cross-aarch64.sh)"
  file -b "$BIN/$t" | grep -q "ARM aarch64" || fail "$BIN/$t is not an aarch64 binary"
done

# Whether variant V must run (1) or skip (0) on CPU model C.
expected() {
  case "$1:$2" in
    max:*) echo 1 ;;
    cortex-a76:neondot) echo 1 ;;
    *) echo 0 ;;
  esac
}

# As in aarch64_client_test.sh: the arm64 multiarch loader and libraries, no -L.
for cpu in max cortex-a76 cortex-a57; do
  for t in "${TESTS[@]}"; do
    log="$DIR/$t.$cpu.log"
    if ! env -u QEMU_LD_PREFIX "$QEMU" -cpu "$cpu" "$BIN/$t" > "$log" 2>&1; then
      tail -n 40 "$log"
      fail "$t under -cpu $cpu"
    fi
    passed=$(grep -c '^\[       OK \]' "$log" || true)
    line="$t -cpu $cpu: $passed passed"
    for v in neondot neoni8mm; do
      ran=$(grep -cE "^\[       OK \] .*/$v( |\$)" "$log" || true)
      skipped=$(grep -cE "^\[  SKIPPED \] .*/$v( |\$)" "$log" || true)
      line="$line; $v: $ran ran, $skipped skipped"
      [ "$t" = kernels_quantize_test ] && continue  # no per-variant suites: loops over ISAs
      if [ "$(expected "$cpu" "$v")" = 1 ]; then
        [ "$ran" -gt 0 ] && [ "$skipped" -eq 0 ] || fail "$t: $v did not run under -cpu $cpu"
      else
        [ "$ran" -eq 0 ] && [ "$skipped" -gt 0 ] ||
          fail "$t: $v ran under -cpu $cpu, which lacks it"
      fi
    done
    echo "$line"
  done
done
echo "PASS: aarch64 kernels bit-exact under qemu (-cpu max: dotprod and i8mm; cortex-a76: dotprod; cortex-a57: neither)"

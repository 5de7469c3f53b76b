#!/usr/bin/env bash
# The quantized kernels' tests, cross-built for aarch64 (scripts/cross-aarch64.sh), under
# qemu-user on two CPU models:
#   -cpu max          has the dotprod extension: BestIsa() is neondot, and every variant test
#                     of it (the int8 and int4 GEMMs' shape sweeps, model shapes, large and
#                     extreme operands) must run and be bit-exact with the reference;
#   -cpu cortex-a57   ARMv8.0, no dotprod: the neondot tests must skip, the dispatcher falls
#                     back to the portable kernels, and those must pass.
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

# As in aarch64_client_test.sh: the arm64 multiarch loader and libraries, no -L.
for cpu in max cortex-a57; do
  for t in "${TESTS[@]}"; do
    log="$DIR/$t.$cpu.log"
    if ! env -u QEMU_LD_PREFIX "$QEMU" -cpu "$cpu" "$BIN/$t" > "$log" 2>&1; then
      tail -n 40 "$log"
      fail "$t under -cpu $cpu"
    fi
    passed=$(grep -c '^\[       OK \]' "$log" || true)
    dot_ok=$(grep -c '^\[       OK \] .*/neondot' "$log" || true)
    dot_skipped=$(grep -c '^\[  SKIPPED \] .*/neondot' "$log" || true)
    echo "$t -cpu $cpu: $passed passed, neondot: $dot_ok passed, $dot_skipped skipped"
    if [ "$t" != kernels_quantize_test ]; then
      if [ "$cpu" = max ]; then
        [ "$dot_ok" -gt 0 ] && [ "$dot_skipped" -eq 0 ] ||
          fail "$t: the neondot variant did not run under -cpu max"
      else
        [ "$dot_ok" -eq 0 ] && [ "$dot_skipped" -gt 0 ] ||
          fail "$t: the neondot variant ran under -cpu cortex-a57, which lacks dotprod"
      fi
    fi
  done
done
echo "PASS: aarch64 kernels bit-exact under qemu (-cpu max with dotprod, -cpu cortex-a57 without)"

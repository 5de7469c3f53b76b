#!/usr/bin/env bash
# Installs what is missing, builds, and runs the test suites with ctest.
#   default: every test not labelled "slow" or "cross" (unit, integration), then the "slow"
#   suites (the acceptance-level training runs) unless FEDGE_SLOW_TESTS=0, then the "cross"
#   suite unless FEDGE_CROSS_TESTS=0: scripts/cross-aarch64.sh installs the cross toolchain
#   and qemu-user and cross-builds the aarch64 client (measured from cold at -j1 on 2 busy
#   cores: 1 min installing, 5.5 min building; seconds when nothing changed), then the aarch64
#   client joins a round under qemu (about 1 min), then the "fuzz" suite unless
#   FEDGE_FUZZ_TESTS=0: scripts/fuzz.sh installs clang and builds the libFuzzer harnesses
#   with sanitizers in build-fuzz/, then each runs for FEDGE_FUZZ_SECONDS (10) from its
#   seed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${FEDGE_BUILD_DIR:-build}"
JOBS="${FEDGE_JOBS:-$(nproc)}"

start=$SECONDS
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -LE 'slow|cross|fuzz'
echo "test: default suites took $((SECONDS - start)) s"

if [ "${FEDGE_SLOW_TESTS:-1}" != "0" ]; then
  start=$SECONDS
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -L slow
  echo "test: slow suites took $((SECONDS - start)) s"
fi

if [ "${FEDGE_CROSS_TESTS:-1}" != "0" ]; then
  start=$SECONDS
  FEDGE_AARCH64_BUILD_DIR="$(grep -s '^FEDGE_AARCH64_BUILD_DIR:' "$BUILD_DIR/CMakeCache.txt" |
    cut -d= -f2-)" scripts/cross-aarch64.sh
  ctest --test-dir "$BUILD_DIR" --output-on-failure -L cross
  echo "test: cross suite (aarch64 build and test) took $((SECONDS - start)) s"
fi

if [ "${FEDGE_FUZZ_TESTS:-1}" != "0" ]; then
  start=$SECONDS
  FEDGE_FUZZ_BUILD_DIR="$(grep -s '^FEDGE_FUZZ_BUILD_DIR:' "$BUILD_DIR/CMakeCache.txt" |
    cut -d= -f2-)" scripts/fuzz.sh build
  ctest --test-dir "$BUILD_DIR" --output-on-failure -L fuzz
  echo "test: fuzz suite (clang build and brief runs) took $((SECONDS - start)) s"
fi

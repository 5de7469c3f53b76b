#!/usr/bin/env bash
# Installs what is missing, builds, and runs the test suites with ctest.
#   default: every test not labelled "slow" (unit, integration), then the "slow" suites
#   (the acceptance-level training runs) unless FEDGE_SLOW_TESTS=0.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${FEDGE_BUILD_DIR:-build}"
JOBS="${FEDGE_JOBS:-$(nproc)}"

start=$SECONDS
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -LE slow
echo "test: default suites took $((SECONDS - start)) s"

if [ "${FEDGE_SLOW_TESTS:-1}" != "0" ]; then
  start=$SECONDS
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -L slow
  echo "test: slow suites took $((SECONDS - start)) s"
fi

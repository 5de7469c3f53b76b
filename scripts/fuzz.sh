#!/usr/bin/env bash
# The libFuzzer harnesses (tests/fuzz/): build them with clang, run them.
#
#   scripts/fuzz.sh build               install clang-14 and libclang-rt-14-dev if missing,
#                                       configure build-fuzz/ (FEDGE_FUZZ=ON) and build them
#   scripts/fuzz.sh run NAME [SECONDS]  run one harness (default 10 s) from its seed corpus
#   scripts/fuzz.sh all [SECONDS]       run each harness in turn
#   scripts/fuzz.sh list                the harnesses' names
#
# A run starts from tests/fuzz/corpus/NAME/ (read only: new inputs go to a temporary copy,
# which FEDGE_FUZZ_KEEP=DIR keeps in DIR/NAME instead) and fails on any crash, sanitizer
# report, input slower than 25 s, or allocation over 2 GiB. It prints libFuzzer's final
# figures (executions, coverage). `run` exits 77 when the harness is not built (the `fuzz`
# ctest label skips then). Environment: FEDGE_FUZZ_BUILD_DIR (build-fuzz), FEDGE_JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${FEDGE_FUZZ_BUILD_DIR:-build-fuzz}"
HARNESSES=$(sed -n 's/^  *\(payload .*\))$/\1/p' tests/fuzz/harnesses.cmake)

build() {
  local missing=()
  for pkg in clang-14 libclang-rt-14-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "fuzz: installing ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD" -DFEDGE_FUZZ=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" > /dev/null
  echo "fuzz: building the harnesses in $BUILD"
  cmake --build "$BUILD" --target fuzzers -j "${FEDGE_JOBS:-$(nproc)}"
}

run() {
  local name="$1" seconds="${2:-10}"
  local bin="$BUILD/bin/${name}_fuzz"
  if [ ! -x "$bin" ]; then
    echo "fuzz: $bin is not built (scripts/fuzz.sh build); skipped"
    return 77
  fi
  local work
  if [ -n "${FEDGE_FUZZ_KEEP:-}" ]; then
    work="$FEDGE_FUZZ_KEEP/$name"
    mkdir -p "$work"
  else
    work="$(mktemp -d -t "fedge-fuzz-$name.XXXXXX")"
    trap 'rm -rf "$work"' RETURN
  fi
  local artifacts="$work/artifacts"
  mkdir -p "$work/corpus" "$artifacts"
  "$bin" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$work/corpus" "tests/fuzz/corpus/$name" \
    > "$work/log" 2>&1 || {
    tail -n 60 "$work/log"
    echo "fuzz: $name FAILED; the input is in $artifacts (kept: $work)"
    trap - RETURN
    return 1
  }
  local execs cov
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
  cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1 | cut -d' ' -f2)
  echo "fuzz: $name: ${seconds} s, ${execs:-?} executions, coverage ${cov:-?} edges, no finding"
}

case "${1:-}" in
  build) build ;;
  run) run "${2:?harness name}" "${3:-10}" ;;
  all) for h in $HARNESSES; do run "$h" "${2:-10}"; done ;;
  list) echo "$HARNESSES" ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac

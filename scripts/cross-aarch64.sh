#!/usr/bin/env bash
# Cross-builds the device side of fedge (fedge-client and libfedge_client.so) for aarch64
# with Debian's cross toolchain and arm64 multiarch -dev packages, into build-aarch64/, and
# the quantized kernels' tests (build-aarch64/bin/kernels_*_test). Installs what is missing
# first (only that): the arm64 foreign architecture, the cross compiler, qemu-user-static (to
# run the results: tests/aarch64_client_test.sh, tests/aarch64_kernels_test.sh) and the arm64
# libraries the client and the tests link. protoc and grpc_cpp_plugin stay the host's (amd64) programs.
# Safe to run again: a second run installs nothing and rebuilds only what changed.
#
#   scripts/cross-aarch64.sh                       # install + configure + build
#   FEDGE_AARCH64_BUILD_DIR=out/arm scripts/cross-aarch64.sh
#   FEDGE_JOBS=1 scripts/cross-aarch64.sh           # default: nproc
#
# Only the client and the kernels' tests are built (-DFEDGE_CLIENT_ONLY=ON
# -DFEDGE_CROSS_KERNEL_TESTS=ON: no coordinator, simulator, benchmarks or other tests, so
# SQLite and Google Benchmark are not needed for arm64).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Host (amd64) packages: the cross compiler, qemu, the build tools, protoc and its gRPC plugin,
# and Eigen (headers only, Multi-Arch: foreign). arm64 packages: the libraries the client
# links; all are Multi-Arch: same, so they install beside the amd64 ones.
HOST_PACKAGES=(
  g++-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user-static
  cmake make pkg-config ccache file
  protobuf-compiler protobuf-compiler-grpc libeigen3-dev
)
ARM64_PACKAGES=(
  libgrpc++-dev:arm64 libprotobuf-dev:arm64 libabsl-dev:arm64 libsodium-dev:arm64
  zlib1g-dev:arm64
  libgtest-dev:arm64 libgmock-dev:arm64  # the kernels' tests (tests/aarch64_kernels_test.sh)
)

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "cross-aarch64: adding the arm64 architecture to dpkg"
  $SUDO dpkg --add-architecture arm64
  need_update=1
fi
missing=()
for pkg in "${HOST_PACKAGES[@]}" "${ARM64_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  echo "cross-aarch64: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
elif [ -n "${need_update:-}" ]; then
  $SUDO apt-get update -qq
else
  echo "cross-aarch64: all $((${#HOST_PACKAGES[@]} + ${#ARM64_PACKAGES[@]})) packages present"
fi
if [ -n "${FEDGE_CROSS_INSTALL_ONLY:-}" ]; then exit 0; fi

BUILD_DIR="${FEDGE_AARCH64_BUILD_DIR:-build-aarch64}"
JOBS="${FEDGE_JOBS:-$(nproc)}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/toolchain-aarch64.cmake" -DFEDGE_CLIENT_ONLY=ON \
  -DFEDGE_CROSS_KERNEL_TESTS=ON >/dev/null
echo "cross-aarch64: building fedge-client, libfedge_client and the kernels' tests in $BUILD_DIR with -j$JOBS"
start=$SECONDS
cmake --build "$BUILD_DIR" -j "$JOBS" --target fedge-client fedge_client \
  kernels_quantize_test kernels_qgemm_test kernels_q4_test
aarch64-linux-gnu-strip -o "$BUILD_DIR/bin/fedge-client.stripped" "$BUILD_DIR/bin/fedge-client"
echo "cross-aarch64: built in $((SECONDS - start)) s;" \
  "$(file -b "$BUILD_DIR/bin/fedge-client" | cut -d, -f1-2);" \
  "stripped fedge-client $(stat -c %s "$BUILD_DIR/bin/fedge-client.stripped") bytes"

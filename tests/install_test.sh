#!/usr/bin/env bash
# The packaged client: `cmake --install --component client` into a temporary
# prefix, then examples/embedded_client.cc (an app that includes only <fedge/client.h>)
# built against the installed package twice — with pkg-config and with
# find_package(fedge-client) — and run (no arguments: it prints its usage and exits 2,
# which proves the installed libfedge_client.so loads and resolves).
#
#   tests/install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build="$1"
src="$2"
tmp="$(mktemp -d -t fedge-install.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"

fail() { echo "install_test: $*" >&2; exit 1; }

cmake --install "$build" --component client --prefix "$prefix" > "$tmp/install.log"
for f in bin/fedge-client include/fedge/client.h lib/pkgconfig/fedge-client.pc \
         lib/cmake/fedge-client/fedge-clientConfig.cmake; do
  [ -e "$prefix/$f" ] || fail "missing $f after cmake --install"
done
ls "$prefix"/lib/libfedge_client.so* > /dev/null || fail "missing lib/libfedge_client.so"
# The header stands alone: no gRPC, protobuf or Abseil headers needed.
if grep -E '#include ["<](grpc|google/protobuf|absl)' "$prefix/include/fedge/client.h"; then
  fail "fedge/client.h includes a dependency's header"
fi

# 1. pkg-config
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
flags="$(pkg-config --cflags --libs fedge-client)"
# shellcheck disable=SC2086
g++ -std=c++17 -O1 "$src/examples/embedded_client.cc" $flags -Wl,-rpath,"$prefix/lib" \
  -o "$tmp/app-pkgconfig" 2> "$tmp/pkgconfig.log" || { cat "$tmp/pkgconfig.log"; fail "pkg-config build"; }

# 2. find_package
mkdir -p "$tmp/app"
cp "$src/examples/embedded_client.cc" "$tmp/app/"
cat > "$tmp/app/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.22)
project(embedded_app CXX)
find_package(fedge-client 0.1 REQUIRED)
add_executable(embedded_app embedded_client.cc)
target_link_libraries(embedded_app PRIVATE fedge::client)
CMAKE
cmake -S "$tmp/app" -B "$tmp/app-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_RPATH="$prefix/lib" > "$tmp/find_package.log" 2>&1 || { cat "$tmp/find_package.log"; fail "find_package configure"; }
cmake --build "$tmp/app-build" >> "$tmp/find_package.log" 2>&1 || { cat "$tmp/find_package.log"; fail "find_package build"; }

for app in "$tmp/app-pkgconfig" "$tmp/app-build/embedded_app"; do
  set +e
  "$app" > "$tmp/run.out" 2>&1
  rc=$?
  set -e
  [ "$rc" -eq 2 ] || { cat "$tmp/run.out"; fail "$app exited $rc, expected 2 (usage)"; }
  grep -q "usage: embedded_client" "$tmp/run.out" || fail "$app printed no usage"
done
"$prefix/bin/fedge-client" --help > /dev/null 2>&1 || true
size=$(stat -c %s "$prefix/bin/fedge-client")
lib=$(stat -c %s "$(readlink -f "$prefix/lib/libfedge_client.so")")
echo "install_test: installed fedge-client ($size bytes) and libfedge_client.so ($lib bytes);" \
     "embedded_client built with pkg-config and find_package and runs"

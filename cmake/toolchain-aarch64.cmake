# Cross-compiling for aarch64 (arm64) Linux with Debian's cross toolchain
# (g++-aarch64-linux-gnu) and arm64 multiarch libraries (libfoo-dev:arm64 in
# /usr/lib/aarch64-linux-gnu): scripts/cross-aarch64.sh installs both and uses this file.
# There is no sysroot: the multiarch layout keeps arm64 headers and libraries apart from the
# host's. Programs run at build time (protoc, grpc_cpp_plugin) are the host's, from /usr/bin.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Libraries and CMake package files: the arm64 ones only (lib/aarch64-linux-gnu, and
# architecture-independent /usr/share such as Eigen's); programs: the host's.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# pkg-config (libsodium): the arm64 .pc files, never the host's.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# Run the result through qemu-user (Debian's qemu-user-static). No -L: the arm64 multiarch
# libc6 provides /lib/ld-linux-aarch64.so.1 and the libraries; the cross toolchain's own
# loader under /usr/aarch64-linux-gnu is an older glibc build that must not be mixed with them.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static)

#include "base/memory.h"

#include <cstdlib>  // defines __GLIBC__ on glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fedge::base {

bool KeepFreedMemoryForReuse() {
#if defined(__GLIBC__)
  // Allocations below 1 GiB come from the heap (not mmap), and the heap's free top is
  // returned to the system only beyond 1 GiB.
  constexpr int kOneGiB = 1 << 30;
  return mallopt(M_MMAP_THRESHOLD, kOneGiB) == 1 && mallopt(M_TRIM_THRESHOLD, kOneGiB) == 1;
#else
  return false;
#endif
}

bool ReturnFreedMemory() {
#if defined(__GLIBC__)
  constexpr int k64KiB = 64 * 1024;
  return mallopt(M_MMAP_THRESHOLD, k64KiB) == 1 && mallopt(M_TRIM_THRESHOLD, k64KiB) == 1;
#else
  return false;
#endif
}

bool SizeFreedMemoryPolicy(long long model_bytes) {
  if (model_bytes >= kKeepFreedMemoryFromModelBytes) return KeepFreedMemoryForReuse();
#if defined(__GLIBC__)
  constexpr int k128KiB = 128 * 1024;  // glibc's defaults
  mallopt(M_MMAP_THRESHOLD, k128KiB);
  mallopt(M_TRIM_THRESHOLD, k128KiB);
  malloc_trim(0);
#endif
  return false;
}

}  // namespace fedge::base

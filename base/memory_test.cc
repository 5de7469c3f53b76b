// The heap policies of base/memory.h, observed through glibc's own accounting: a large block
// is mapped on its own (mallinfo2().hblkhd) under glibc's defaults, and comes from the heap
// when freed memory is kept.
#include "base/memory.h"

#include <cstdlib>

#include "gtest/gtest.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace fedge::base {
namespace {

#if defined(__GLIBC__)
// Bytes held in separately mapped blocks while a block of `bytes` is allocated.
size_t MappedWhileHolding(size_t bytes) {
  void* volatile p = std::malloc(bytes);
  const size_t mapped = mallinfo2().hblkhd;
  std::free(p);
  return mapped;
}
#endif

TEST(MemoryTest, FreedMemoryIsKeptForLargeModelsOnly) {
#if !defined(__GLIBC__)
  GTEST_SKIP() << "the heap policies are glibc's";
#else
  constexpr size_t kBlock = 48 << 20;
  EXPECT_FALSE(SizeFreedMemoryPolicy(4 << 20));  // a small model: glibc's defaults
  EXPECT_GE(MappedWhileHolding(kBlock), kBlock);
  EXPECT_TRUE(SizeFreedMemoryPolicy(kKeepFreedMemoryFromModelBytes));  // a large one: kept
  EXPECT_LT(MappedWhileHolding(kBlock), kBlock);
  EXPECT_FALSE(SizeFreedMemoryPolicy(0));  // and back
  EXPECT_GE(MappedWhileHolding(kBlock), kBlock);
#endif
}

// A device's policy: blocks from 64 KiB up stay mapped on their own even after a larger
// mapped block was freed (glibc's default would then raise its threshold past them).
TEST(MemoryTest, ADeviceReturnsFreedBlocksWhateverWasFreedBefore) {
#if !defined(__GLIBC__)
  GTEST_SKIP() << "the heap policies are glibc's";
#else
  constexpr size_t kBlock = 1 << 20;
  EXPECT_TRUE(ReturnFreedMemory());
  MappedWhileHolding(8 << 20);  // would raise glibc's dynamic threshold to 8 MiB
  EXPECT_GE(MappedWhileHolding(kBlock), kBlock);
  EXPECT_GE(MappedWhileHolding(96 << 10), size_t{96} << 10);
  EXPECT_FALSE(SizeFreedMemoryPolicy(0));  // back to the defaults for the next test
#endif
}

}  // namespace
}  // namespace fedge::base

#include "common/allocator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace posttrain {
namespace {

// Sanitizers bring their own allocator; glibc's malloc then holds nothing.
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
// glibc's mallinfo2().keepcost: the free space at the top of the heap that
// a trim could give back. After KeepFreedMemory a freed 64 MiB block stays
// there (glibc's default would unmap it or trim the heap).
TEST(KeepFreedMemory, FreedBlocksStayMappedForReuse) {
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") || std::getenv("GLIBC_TUNABLES") ||
      std::getenv("MALLOC_MMAP_THRESHOLD_") ||
      std::getenv("POSTTRAIN_KEEP_FREED_MEMORY")) {
    GTEST_SKIP() << "malloc settings come from the environment";
  }
  ASSERT_TRUE(KeepFreedMemory());
  EXPECT_TRUE(KeepFreedMemory());  // once per process; later calls agree
  const size_t size = size_t{64} << 20;
  char* block = static_cast<char*>(std::malloc(size));
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, size);  // touch the pages
  std::free(block);
  EXPECT_GE(mallinfo2().keepcost, size);
}
#endif

}  // namespace
}  // namespace posttrain

#include "common/allocator.h"

#include <cstdlib>
#include <mutex>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace posttrain {

bool KeepFreedMemory(size_t trim_bytes, size_t mmap_bytes) {
  static std::once_flag once;
  static bool changed = false;
  std::call_once(once, [&] {
#if defined(__GLIBC__)
    if (std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr ||
        std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr ||
        std::getenv("GLIBC_TUNABLES") != nullptr) {
      return;  // the user chose
    }
    const char* opt = std::getenv("POSTTRAIN_KEEP_FREED_MEMORY");
    if (opt != nullptr && std::string(opt) == "0") return;
    changed = mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_bytes)) == 1 &&
              mallopt(M_TRIM_THRESHOLD, static_cast<int>(trim_bytes)) == 1;
#else
    (void)trim_bytes;
    (void)mmap_bytes;
#endif
  });
  return changed;
}

}  // namespace posttrain

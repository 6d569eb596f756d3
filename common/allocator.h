// KeepFreedMemory: stops glibc's malloc from handing freed heap memory back
// to the kernel after every large free, for the rest of the process.
//
// Why: the post-training phase and the attack loops allocate and free the
// same few megabyte-sized activation tensors at every step. With glibc's
// defaults, each free that leaves more than M_TRIM_THRESHOLD (dynamically
// about twice the largest freed block, at most 64 MiB) at the top of the
// heap shrinks it with brk, and the next step faults the pages back in and
// the kernel zeroes them. `perf record` of the phase of bench/dare_bench (1
// LibTorch thread) put 33% of its samples in the kernel (clear_page_erms,
// exc_page_fault, brk's unmap_page_range), and with this call the phase
// took 60.0 s instead of 85.3 s with every figure unchanged
// (docs/BENCHMARKS.md, issue 13). Training in the same process was not
// affected (148.9 s against 149.1 s).
//
// What: mallopt(M_TRIM_THRESHOLD, trim_bytes) and
// mallopt(M_MMAP_THRESHOLD, mmap_bytes), once per process (later calls do
// nothing). Freed memory up to trim_bytes then stays mapped and is reused;
// the process's resident size may stay up to that much above its live
// data. Blocks above mmap_bytes are still mmapped and unmapped on free.
// Does nothing where the C library is not glibc, when the environment sets
// MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES (the
// user has chosen), or POSTTRAIN_KEEP_FREED_MEMORY=0 (the opt-out).
//
// The phase (RunPipeline) and the attacks (robustness/attacks.h) call it.
//
// Example:
//   posttrain::KeepFreedMemory();  // before a long inference loop
//
// Thread safety: thread-safe.
#ifndef POSTTRAIN_COMMON_ALLOCATOR_H_
#define POSTTRAIN_COMMON_ALLOCATOR_H_

#include <cstddef>

namespace posttrain {

inline constexpr size_t kDefaultTrimBytes = size_t{512} << 20;  // 512 MiB
inline constexpr size_t kDefaultMmapBytes = size_t{256} << 20;  // 256 MiB

// True when this call (or an earlier one) changed malloc's settings.
bool KeepFreedMemory(size_t trim_bytes = kDefaultTrimBytes,
                     size_t mmap_bytes = kDefaultMmapBytes);

}  // namespace posttrain

#endif  // POSTTRAIN_COMMON_ALLOCATOR_H_

// Counts the bytes of live CPU tensor storage, for benchmarks that check a
// memory bound: VmHWM counts pages the process touched before (a phase
// that reuses the heap the training freed adds nothing), so it moves by
// tens of MiB between runs of the same binary; this counter does not.
//
// Install() replaces LibTorch's CPU allocator with one that allocates as it
// does (c10::alloc_cpu, 64-byte aligned) and keeps the live total and its
// peak. Storage allocated before Install() is freed by its own deleter and
// never counted. Memory outside tensors (BLAS workspaces, the heap of
// std::vector) is not counted either.
//
// Example:
//   posttrain::bench::TensorMemory::Install();
//   posttrain::bench::TensorMemory::ResetPeak();
//   RunPhase();
//   const int64_t grew = posttrain::bench::TensorMemory::Peak() -
//                        posttrain::bench::TensorMemory::AtReset();
#ifndef POSTTRAIN_BENCH_TENSOR_MEMORY_H_
#define POSTTRAIN_BENCH_TENSOR_MEMORY_H_

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <atomic>
#include <cstdint>
#include <cstring>

namespace posttrain::bench {

class TensorMemory final : public c10::Allocator {
 public:
  // Idempotent. LibTorch owns the allocator afterwards.
  static void Install() {
    static TensorMemory* installed = [] {
      auto* a = new TensorMemory();
      c10::SetCPUAllocator(a, /*priority=*/100);
      return a;
    }();
    (void)installed;
  }
  static int64_t Live() { return live_.load(); }
  static int64_t Peak() { return peak_.load(); }
  static int64_t AtReset() { return at_reset_.load(); }
  static void ResetPeak() {
    at_reset_ = live_.load();
    peak_ = live_.load();
  }

  c10::DataPtr allocate(size_t n) const override {
    // A 64-byte header before the data keeps the size and the alignment;
    // the context is the data pointer, as raw_allocate requires.
    auto* base = static_cast<char*>(c10::alloc_cpu(n + kHeader));
    std::memcpy(base, &n, sizeof(n));
    Add(static_cast<int64_t>(n));
    void* data = base + kHeader;
    return {data, data, &Delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }

 private:
  static constexpr size_t kHeader = 64;
  static void Delete(void* data) {
    if (data == nullptr) return;
    char* base = static_cast<char*>(data) - kHeader;
    size_t n;
    std::memcpy(&n, base, sizeof(n));
    live_ -= static_cast<int64_t>(n);
    c10::free_cpu(base);
  }
  static void Add(int64_t n) {
    const int64_t now = live_ += n;
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
  }
  static inline std::atomic<int64_t> live_{0};
  static inline std::atomic<int64_t> peak_{0};
  static inline std::atomic<int64_t> at_reset_{0};
};

}  // namespace posttrain::bench

#endif  // POSTTRAIN_BENCH_TENSOR_MEMORY_H_

// libFuzzer target: the IDX reader (robustness/idx.h), which reads
// Fashion-MNIST, any user's IDX set and the stored float32 adversarial
// sets. Input: the image file's bytes, the separator "LBL!", then the
// label file's bytes (either may be gzip: zlib reads both forms). The
// reader must not crash, hang, read out of bounds, or allocate what a
// header declares before the data is there; bad input must be a status.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "robustness/idx.h"

namespace {

std::string Path(const char* what) {
  return "/tmp/posttrain_idx_fuzz_" + std::to_string(getpid()) + "_" + what;
}

void Write(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) __builtin_trap();
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find("LBL!");
  const std::string images = Path("images"), labels = Path("labels");
  Write(images, split == std::string::npos ? input : input.substr(0, split));
  Write(labels, split == std::string::npos ? "" : input.substr(split + 4));
  for (int64_t limit : {int64_t{-1}, int64_t{1}}) {
    auto idx = posttrain::ReadIdxFiles(images, labels, limit);
    if (!idx.ok()) continue;
    // Invariants of a successful read.
    const size_t values =
        static_cast<size_t>(idx->count * idx->rows * idx->cols);
    if (idx->labels.size() != static_cast<size_t>(idx->count)) __builtin_trap();
    if (idx->float32 ? idx->floats.size() != values
                     : idx->bytes.size() != values) {
      __builtin_trap();
    }
    for (uint8_t l : idx->labels) {
      if (l > 9) __builtin_trap();
    }
  }
  return 0;
}

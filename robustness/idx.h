// The IDX file reader without torch (so that it can be fuzzed alone): an
// image file, uint8 (magic 0x803) or float32 (magic 0xD03), and its label
// file (magic 0x801), gzip or plain. Sizes in a header are checked against
// fixed limits (10M items, 4096 per side) and never trusted for an
// allocation: the data is read a chunk at a time, so a short file is an
// error before its declared size is allocated. robustness/fashion_mnist.h
// turns the result into tensors (ReadIdxDataset).
//
// Example:
//   absl::StatusOr<posttrain::IdxImages> idx =
//       posttrain::ReadIdxFiles("t10k-images-idx3-ubyte.gz",
//                               "t10k-labels-idx1-ubyte.gz");
//   if (idx.ok()) std::printf("%lld images\n", (long long)idx->count);
//
// Thread safety: a free function.
#ifndef POSTTRAIN_ROBUSTNESS_IDX_H_
#define POSTTRAIN_ROBUSTNESS_IDX_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace posttrain {

struct IdxImages {
  int64_t count = 0, rows = 0, cols = 0;
  bool float32 = false;
  std::vector<uint8_t> bytes;   // uint8 files: count·rows·cols pixels
  std::vector<float> floats;    // float32 files: the values, decoded
  std::vector<uint8_t> labels;  // count labels in 0..9
};

// At most `limit` items when limit >= 0. Errors name the file and what is
// wrong: magic, dimensions, truncation, count mismatch, a label above 9, a
// non-finite value and its item.
absl::StatusOr<IdxImages> ReadIdxFiles(const std::string& images_path,
                                       const std::string& labels_path,
                                       int64_t limit = -1);

}  // namespace posttrain

#endif  // POSTTRAIN_ROBUSTNESS_IDX_H_

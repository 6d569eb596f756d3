#include "robustness/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace posttrain {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;       // uint8, 3 dimensions
constexpr uint32_t kFloatImagesMagic = 0x00000D03;  // float32, 3 dimensions
constexpr uint32_t kLabelsMagic = 0x00000801;
constexpr uint32_t kMaxItems = 10'000'000;
constexpr uint32_t kMaxSide = 4096;
// Bytes read (and allocated) at a time: a header's sizes are never trusted
// for an allocation; the buffer grows only with data actually present.
constexpr size_t kChunk = size_t{1} << 20;

class GzReader {
 public:
  explicit GzReader(std::string path) : path_(std::move(path)) {
    file_ = gzopen(path_.c_str(), "rb");
  }
  ~GzReader() {
    if (file_) gzclose(file_);
  }
  absl::Status status() const {
    if (file_ == nullptr) {
      return absl::NotFoundError(absl::StrCat("cannot open '", path_,
                                              "' (is dataset-fashion-mnist "
                                              "installed?)"));
    }
    return absl::OkStatus();
  }
  absl::Status Read(void* dst, size_t n) {
    auto* p = static_cast<char*>(dst);
    while (n > 0) {
      const unsigned chunk =
          static_cast<unsigned>(std::min<size_t>(n, 1u << 30));
      int got = gzread(file_, p, chunk);
      if (got <= 0) {
        return absl::DataLossError(
            absl::StrCat("'", path_, "' is truncated or not valid gzip/IDX"));
      }
      p += got;
      n -= static_cast<size_t>(got);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<uint32_t> ReadU32() {
    unsigned char b[4];
    PT_RETURN_IF_ERROR(Read(b, 4));
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) |
           (uint32_t{b[2]} << 8) | uint32_t{b[3]};
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

// Appends `n` bytes of `r` to `out`, a chunk at a time.
absl::Status ReadBytes(GzReader& r, uint64_t n, std::vector<uint8_t>* out) {
  while (n > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, kChunk));
    const size_t at = out->size();
    out->resize(at + chunk);
    PT_RETURN_IF_ERROR(r.Read(out->data() + at, chunk));
    n -= chunk;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<IdxImages> ReadIdxFiles(const std::string& images_path,
                                       const std::string& labels_path,
                                       int64_t limit) {
  GzReader images(images_path);
  PT_RETURN_IF_ERROR(images.status());
  PT_ASSIGN_OR_RETURN(uint32_t magic, images.ReadU32());
  if (magic != kImagesMagic && magic != kFloatImagesMagic) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", images_path,
                     "' is not an IDX image file of uint8 or float32 "
                     "(magic ",
                     magic, ")"));
  }
  IdxImages out;
  out.float32 = magic == kFloatImagesMagic;
  PT_ASSIGN_OR_RETURN(uint32_t count, images.ReadU32());
  PT_ASSIGN_OR_RETURN(uint32_t rows, images.ReadU32());
  PT_ASSIGN_OR_RETURN(uint32_t cols, images.ReadU32());
  if (count > kMaxItems || rows == 0 || cols == 0 || rows > kMaxSide ||
      cols > kMaxSide) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", images_path, "' declares implausible sizes ", count,
                     "x", rows, "x", cols));
  }
  GzReader labels(labels_path);
  PT_RETURN_IF_ERROR(labels.status());
  PT_ASSIGN_OR_RETURN(uint32_t lmagic, labels.ReadU32());
  if (lmagic != kLabelsMagic) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", labels_path, "' is not an IDX label file (magic ", lmagic, ")"));
  }
  PT_ASSIGN_OR_RETURN(uint32_t lcount, labels.ReadU32());
  if (lcount != count) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", labels_path, "' has ", lcount, " labels but '",
                     images_path, "' has ", count, " images"));
  }
  const int64_t n = limit >= 0 ? std::min<int64_t>(limit, count) : count;
  out.count = n;
  out.rows = rows;
  out.cols = cols;
  const uint64_t values = static_cast<uint64_t>(n) * rows * cols;
  PT_RETURN_IF_ERROR(
      ReadBytes(images, values * (out.float32 ? 4 : 1), &out.bytes));
  PT_RETURN_IF_ERROR(ReadBytes(labels, static_cast<uint64_t>(n), &out.labels));
  for (size_t i = 0; i < out.labels.size(); ++i) {
    if (out.labels[i] > 9) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", labels_path, "': label ", int{out.labels[i]},
                       " of item ", i, " is not in 0..9"));
    }
  }
  if (out.float32) {  // big-endian IEEE 754, as IDX stores every type
    out.floats.resize(static_cast<size_t>(values));
    for (size_t i = 0; i < out.floats.size(); ++i) {
      const uint8_t* b = &out.bytes[4 * i];
      const uint32_t bits = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) |
                            (uint32_t{b[2]} << 8) | uint32_t{b[3]};
      std::memcpy(&out.floats[i], &bits, 4);
      if (!std::isfinite(out.floats[i])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'", images_path, "': value ", i % (uint64_t{rows} * cols),
            " of item ", i / (uint64_t{rows} * cols), " is not finite"));
      }
    }
    out.bytes.clear();
    out.bytes.shrink_to_fit();
  }
  return out;
}

}  // namespace posttrain

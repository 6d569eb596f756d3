#include "robustness/fashion_mnist.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/tensor.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "history/env.h"
#include "robustness/idx.h"

namespace posttrain {
namespace {

// The IDX magics the writer uses (robustness/idx.h reads them).
constexpr uint32_t kFloatImagesMagic = 0x00000D03;  // float32, 3 dimensions
constexpr uint32_t kLabelsMagic = 0x00000801;

}  // namespace

absl::StatusOr<ImageDataset> ReadIdxDataset(const std::string& images_path,
                                            const std::string& labels_path,
                                            int64_t limit) {
  PT_ASSIGN_OR_RETURN(IdxImages idx,
                      ReadIdxFiles(images_path, labels_path, limit));
  const int64_t n = idx.count, rows = idx.rows, cols = idx.cols;
  const bool float32 = idx.float32;
  std::vector<float>& floats = idx.floats;
  std::vector<uint8_t>& pixels = idx.bytes;
  std::vector<uint8_t>& label_bytes = idx.labels;
  ImageDataset d;
  PT_RETURN_IF_ERROR(CallTorch("converting IDX data", [&] {
    const std::vector<int64_t> shape = {n, 1, static_cast<int64_t>(rows),
                                        static_cast<int64_t>(cols)};
    d.images = float32 ? at::from_blob(floats.data(), shape,
                                       at::TensorOptions().dtype(at::kFloat))
                             .clone()
                       : at::from_blob(pixels.data(), shape,
                                       at::TensorOptions().dtype(at::kByte))
                             .to(at::kFloat)
                             .div_(255.0);
    d.labels = at::from_blob(label_bytes.data(), {n},
                             at::TensorOptions().dtype(at::kByte))
                   .to(at::kLong);
  }));
  return d;
}

absl::Status WriteIdxDataset(const ImageDataset& d,
                             const std::string& images_path,
                             const std::string& labels_path) {
  if (!d.images.defined() || !d.labels.defined() ||
      (d.images.dim() != 4 && d.images.dim() != 3) ||
      (d.images.dim() == 4 && d.images.size(1) != 1) ||
      d.images.size(0) != d.labels.size(0) || d.labels.dim() != 1) {
    return absl::InvalidArgumentError(
        "WriteIdxDataset: needs images [N, 1, H, W] or [N, H, W] and N labels");
  }
  std::vector<float> values;
  std::vector<int64_t> labels;
  PT_RETURN_IF_ERROR(CallTorch("writing IDX data", [&] {
    const at::Tensor x = d.images.to(at::kCPU, at::kFloat).contiguous();
    values.assign(x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
    const at::Tensor y = d.labels.to(at::kCPU, at::kLong).contiguous();
    labels.assign(y.data_ptr<int64_t>(), y.data_ptr<int64_t>() + y.numel());
  }));
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] > 9) {
      return absl::InvalidArgumentError(
          absl::StrCat("WriteIdxDataset: label ", labels[i], " of item ", i,
                       " is not in 0..9 (what ReadIdxDataset accepts)"));
    }
  }
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WriteIdxDataset: value ", i, " of the images is not finite"));
    }
  }
  const int64_t h = d.images.size(d.images.dim() - 2);
  const int64_t w = d.images.size(d.images.dim() - 1);
  auto be32 = [](std::string* out, uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out->push_back(static_cast<char>(v >> s));
  };
  std::string img, lab;
  be32(&img, kFloatImagesMagic);
  be32(&img, static_cast<uint32_t>(d.images.size(0)));
  be32(&img, static_cast<uint32_t>(h));
  be32(&img, static_cast<uint32_t>(w));
  for (float f : values) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    be32(&img, bits);
  }
  be32(&lab, kLabelsMagic);
  be32(&lab, static_cast<uint32_t>(labels.size()));
  for (int64_t l : labels) lab.push_back(static_cast<char>(l));
  Env* env = Env::Default();
  PT_RETURN_IF_ERROR(WriteFileAtomically(env, images_path, {img},
                                         /*sync_file=*/true,
                                         /*sync_dir=*/true));
  return WriteFileAtomically(env, labels_path, {lab}, true, true);
}

ImageDataset Head(const ImageDataset& d, int64_t n) {
  if (n < 0 || n >= d.size()) return d;
  return {d.images.slice(0, 0, n), d.labels.slice(0, 0, n)};
}

absl::StatusOr<FashionMnist> LoadFashionMnist(
    const FashionMnistOptions& options) {
  PT_ASSIGN_OR_RETURN(
      ImageDataset full,
      ReadIdxDataset(JoinPath(options.dir, "train-images-idx3-ubyte.gz"),
                     JoinPath(options.dir, "train-labels-idx1-ubyte.gz")));
  PT_ASSIGN_OR_RETURN(
      ImageDataset test,
      ReadIdxDataset(JoinPath(options.dir, "t10k-images-idx3-ubyte.gz"),
                     JoinPath(options.dir, "t10k-labels-idx1-ubyte.gz"),
                     options.test_limit));
  // Seeded Fisher-Yates (spelled out: std::shuffle's algorithm is not fixed
  // by the standard, and the split must be the same everywhere).
  const int64_t n = full.size();
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  std::mt19937_64 rng(options.seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j =
        static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(perm[i], perm[j]);
  }
  const int64_t half = n / 2;
  auto take = [&](int64_t begin, int64_t end, int64_t limit) {
    if (limit >= 0) end = std::min(end, begin + limit);
    std::vector<int64_t> idx(perm.begin() + begin, perm.begin() + end);
    at::Tensor index = at::tensor(idx, at::TensorOptions().dtype(at::kLong));
    return ImageDataset{at::index_select(full.images, 0, index),
                        at::index_select(full.labels, 0, index)};
  };
  FashionMnist out;
  PT_RETURN_IF_ERROR(CallTorch("splitting Fashion-MNIST", [&] {
    out.train = take(0, half, options.train_limit);
    out.validation = take(half, n, options.validation_limit);
    out.test = std::move(test);
  }));
  return out;
}

}  // namespace posttrain

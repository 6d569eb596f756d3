// Fashion-MNIST (Xiao et al. 2017) from the IDX files of the Debian package
// dataset-fashion-mnist, split as in the paper: the 60k training images into
// a training half and a validation half (seeded), and the 10k test images.
//
// Example:
//   FashionMnistOptions options;
//   options.seed = 1;
//   PT_ASSIGN_OR_RETURN(FashionMnist data, LoadFashionMnist(options));
//   model->forward(data.train.images.slice(0, 0, 128));
//
// Thread safety: free functions without shared state.
#ifndef POSTTRAIN_ROBUSTNESS_FASHION_MNIST_H_
#define POSTTRAIN_ROBUSTNESS_FASHION_MNIST_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace posttrain {

// Where Debian's dataset-fashion-mnist installs the files.
inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

// Images as float32 [N, 1, H, W] scaled to [0, 1], labels as int64 [N].
struct ImageDataset {
  at::Tensor images;
  at::Tensor labels;
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

// Reads an IDX image file, uint8 (magic 0x803, scaled to [0, 1]) or
// float32 (magic 0xD03, values as stored, which must be finite), and a label
// file (magic 0x801), gzip or plain; at most `limit` items when limit >= 0.
// Errors name the file and what is wrong (magic, dimensions, truncation,
// count mismatch, label range, a non-finite value and its item).
absl::StatusOr<ImageDataset> ReadIdxDataset(const std::string& images_path,
                                            const std::string& labels_path,
                                            int64_t limit = -1);

// Writes `d` as uncompressed IDX: the images [N, 1, H, W] or [N, H, W] as
// float32 (magic 0xD03, big-endian: a uint8 file would change the values),
// the labels as uint8 (0x801); each file through a temporary and a rename,
// so a reader sees the old file or the new one. ReadIdxDataset reads them
// back bit for bit (stored adversarial sets).
absl::Status WriteIdxDataset(const ImageDataset& d,
                             const std::string& images_path,
                             const std::string& labels_path);

struct FashionMnistOptions {
  std::string dir = kFashionMnistDir;
  // Seed of the train/validation split.
  uint64_t seed = 1;
  // Caps on the sizes of the splits (-1: all). The training half and the
  // validation half hold 30000 images each.
  int64_t train_limit = -1;
  int64_t validation_limit = -1;
  int64_t test_limit = -1;
};

struct FashionMnist {
  ImageDataset train;       // half of the 60k training images
  ImageDataset validation;  // the other half
  ImageDataset test;        // the 10k test images
};

absl::StatusOr<FashionMnist> LoadFashionMnist(
    const FashionMnistOptions& options = {});

// The first `n` items of `d` (all when n < 0 or n > size).
ImageDataset Head(const ImageDataset& d, int64_t n);

}  // namespace posttrain

#endif  // POSTTRAIN_ROBUSTNESS_FASHION_MNIST_H_

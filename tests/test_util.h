// Shared helpers of the tests: temporary directories, small models, and
// deterministic model states.
#ifndef POSTTRAIN_TESTS_TEST_UTIL_H_
#define POSTTRAIN_TESTS_TEST_UTIL_H_

#include <torch/nn/modules/container/sequential.h>

#include <cstdint>
#include <string>

#include "common/module_state.h"

namespace posttrain::testing {

// A fresh, empty directory under the test temp dir, unique per call.
std::string MakeTempDir(const std::string& prefix);

// Conv2d + BatchNorm2d + ReLU + MaxPool + Flatten + Linear + BatchNorm1d +
// ReLU + Linear, for 1x8x8 inputs and 3 classes; BatchNorm buffers included.
torch::nn::Sequential SmallCnn(uint64_t seed = 0);

// Four overlapping Gaussian blobs in 6-D (centers 1.5 apart on the first
// four axes, unit noise): n inputs (float [n, 6]) and labels (int64 [n]),
// hard enough that a short training history disagrees with its final
// model on some samples.
struct Blobs {
  at::Tensor x, y;
};
Blobs GaussianBlobs(int64_t n, uint64_t seed);
// The MLP 6→32→16→4 (ReLU) the blob tests train, seeded.
torch::nn::Sequential BlobsMlp(uint64_t seed = 7);

// Changes every parameter and buffer of `model` as a training epoch would:
// small seeded steps on the weights, new running statistics, one more
// num_batches_tracked.
void SimulateEpoch(torch::nn::Sequential& model, uint64_t seed);

// A deterministic model state for `epoch`: one Conv-like, one Linear-like
// and one int64 tensor; consecutive epochs differ by small steps, as
// training does.
NamedTensors SyntheticState(int64_t epoch, int64_t scale = 1);

// Empty when equal bit for bit (names, order, dtypes, shapes, bytes);
// otherwise a description of the first difference.
std::string DiffStates(const NamedTensors& a, const NamedTensors& b);

// Reads or overwrites one byte of a file.
uint8_t ReadByteAt(const std::string& path, uint64_t offset);
void FlipByteAt(const std::string& path, uint64_t offset);
uint64_t FileSize(const std::string& path);
void WriteFileBytes(const std::string& path, const std::string& bytes);
std::string ReadFileBytes(const std::string& path);

}  // namespace posttrain::testing

#endif  // POSTTRAIN_TESTS_TEST_UTIL_H_

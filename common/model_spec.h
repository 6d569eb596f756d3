// Model spec: describes a torch::nn::Sequential of supported layers as a
// protobuf message, and rebuilds the Sequential from it.
//
// Supported layers (ALGORITHMS.md §0): Linear, Conv2d, BatchNorm1d/2d, ReLU,
// LeakyReLU, Sigmoid, Tanh, GELU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d,
// Flatten, Dropout, and nested Sequentials of these. Anything else is an
// InvalidArgument error naming the layer.
//
// Example:
//   torch::nn::Sequential net(torch::nn::Linear(4, 2), torch::nn::ReLU());
//   PT_ASSIGN_OR_RETURN(pb::ModelSpec spec, DescribeSequential(net));
//   PT_ASSIGN_OR_RETURN(torch::nn::Sequential copy, BuildSequential(spec));
//
// Thread safety: free functions without shared state.
#ifndef POSTTRAIN_COMMON_MODEL_SPEC_H_
#define POSTTRAIN_COMMON_MODEL_SPEC_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_spec.pb.h"

namespace torch::nn {
class SequentialImpl;
class Sequential;
}  // namespace torch::nn

namespace posttrain {

// The ModelSpec.version this library writes and reads.
inline constexpr uint32_t kModelSpecVersion = 1;

// Describes `model`. Errors name the first unsupported layer by its path.
absl::StatusOr<pb::ModelSpec> DescribeSequential(
    const torch::nn::SequentialImpl& model);
absl::StatusOr<pb::ModelSpec> DescribeSequential(
    const torch::nn::Sequential& model);

// Largest number of parameter and buffer elements BuildSequential accepts
// by default: 2^32 (16 GiB of float32). A spec read from disk is never
// trusted for an allocation.
inline constexpr int64_t kMaxModelSpecElements = int64_t{1} << 32;

// The parameter and buffer elements `spec` declares (weights, biases,
// BatchNorm statistics), computed without overflow; InvalidArgument naming
// the layer once the count passes `max_elements`.
absl::StatusOr<int64_t> DeclaredElements(
    const pb::ModelSpec& spec, int64_t max_elements = kMaxModelSpecElements);

// Builds a freshly initialised Sequential from `spec`; its parameter and
// buffer names equal those of the described model. Errors name the layer with
// invalid options, or the first layer past `max_elements` elements.
absl::StatusOr<torch::nn::Sequential> BuildSequential(
    const pb::ModelSpec& spec, int64_t max_elements = kMaxModelSpecElements);

// One-line human description of a layer, e.g. "Conv2d(1, 8, k=3x3)".
std::string LayerSummary(const pb::LayerSpec& layer);

// OK if `expected` and `actual` describe the same architecture; otherwise
// FailedPrecondition naming the first layer that differs and both summaries.
absl::Status CheckSameArchitecture(const pb::ModelSpec& expected,
                                   const pb::ModelSpec& actual);

}  // namespace posttrain

#endif  // POSTTRAIN_COMMON_MODEL_SPEC_H_

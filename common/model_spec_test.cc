#include "common/model_spec.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "common/module_state.h"
#include "common/sequential_block.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

nn::Sequential EveryLayer() {
  return nn::Sequential(
      SequentialBlock(
          nn::Conv2d(nn::Conv2dOptions(1, 4, 3).padding(1).bias(false)),
          nn::BatchNorm2d(nn::BatchNorm2dOptions(4).momentum(0.2))),
      nn::ReLU(), nn::MaxPool2d(nn::MaxPool2dOptions(2).stride(2)),
      nn::Conv2d(nn::Conv2dOptions(4, 4, 3).padding(torch::kSame).groups(2)),
      nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.05)),
      nn::AvgPool2d(nn::AvgPool2dOptions(2).count_include_pad(false)),
      nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions({2, 2})),
      nn::Flatten(), nn::Dropout(0.25), nn::Linear(16, 8), nn::Tanh(),
      nn::BatchNorm1d(8), nn::GELU(nn::GELUOptions().approximate("tanh")),
      nn::Linear(8, 4), nn::Sigmoid(), nn::Linear(4, 3));
}

TEST(ModelSpec, DescribeBuildRoundTripKeepsNamesShapesAndOutputs) {
  torch::manual_seed(0);
  nn::Sequential model = EveryLayer();
  auto spec = DescribeSequential(model);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->layers_size(), 16);
  EXPECT_EQ(spec->layers(0).kind(), pb::LayerSpec::SEQUENTIAL);
  EXPECT_EQ(spec->layers(0).children(1).name(), "0.1");
  EXPECT_DOUBLE_EQ(spec->layers(0).children(1).momentum(), 0.2);
  EXPECT_TRUE(spec->layers(3).padding_same());
  EXPECT_EQ(spec->layers(3).groups(), 2);
  EXPECT_EQ(LayerSummary(spec->layers(9)), "Linear(16, 8)");

  auto rebuilt = BuildSequential(*spec);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  auto again = DescribeSequential(*rebuilt);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->SerializeAsString(), spec->SerializeAsString());
  EXPECT_TRUE(CheckSameArchitecture(*spec, *again).ok());

  // Same state names: the state of one loads into the other, and then both
  // compute the same function.
  auto state = CopyModuleState(*model);
  ASSERT_TRUE(state.ok());
  ASSERT_TRUE(LoadModuleState(*state, **rebuilt).ok());
  model->eval();
  (*rebuilt)->eval();
  torch::Tensor x = torch::rand({2, 1, 8, 8});
  EXPECT_TRUE(torch::equal(model->forward(x), (*rebuilt)->forward(x)));
}

struct Custom : nn::Module {
  torch::Tensor forward(torch::Tensor x) { return x; }
};

TEST(ModelSpec, UnsupportedLayerIsNamed) {
  nn::Sequential model(nn::Linear(4, 4), nn::ReLU(),
                       SequentialBlock(nn::Linear(4, 4), nn::Softmax(1)));
  auto spec = DescribeSequential(model);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "layer '2.1'"))
      << spec.status();
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "Softmax"))
      << spec.status();
}

TEST(ModelSpec, InvalidSpecsAreRejectedWithTheLayerName) {
  pb::ModelSpec spec;
  spec.set_version(kModelSpecVersion);
  auto* l = spec.add_layers();
  l->set_name("0");
  l->set_kind(pb::LayerSpec::CONV2D);
  l->set_in_channels(3);
  l->set_out_channels(4);
  l->set_groups(1);
  l->add_kernel_size(3);  // one value only
  auto m = BuildSequential(spec);
  EXPECT_FALSE(m.ok());
  EXPECT_TRUE(absl::StrContains(m.status().message(), "layer '0'"))
      << m.status();
  l->set_kind(static_cast<pb::LayerSpec::Kind>(77));
  EXPECT_FALSE(BuildSequential(spec).ok());
  spec.set_version(9);
  EXPECT_TRUE(
      absl::StrContains(BuildSequential(spec).status().message(), "version 9"));
}

// Found by fuzz/model_spec_fuzzer: sizes are checked before anything is
// allocated, and a field the layer's kind does not use is a malformed spec
// (it built, then failed the architecture check with two equal summaries).
TEST(ModelSpec, SpecsFromDiskAreNotTrusted) {
  pb::ModelSpec spec;
  spec.set_version(kModelSpecVersion);
  auto* l = spec.add_layers();
  l->set_name("big");
  l->set_kind(pb::LayerSpec::LINEAR);
  l->set_in_features(int64_t{1} << 40);
  l->set_out_features(int64_t{1} << 40);  // 2^80 weights: overflows int64
  l->set_bias(true);
  auto m = BuildSequential(spec);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(m.status().message(), "layer 'big'"))
      << m.status();
  EXPECT_TRUE(absl::StrContains(m.status().message(), "not trusted"));
  l->set_in_features(1000);
  l->set_out_features(1000);
  auto n = DeclaredElements(spec);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1000 * 1000 + 1000);
  EXPECT_FALSE(BuildSequential(spec, /*max_elements=*/1000 * 1000).ok());
  EXPECT_TRUE(BuildSequential(spec, /*max_elements=*/1001000).ok());
  // The fuzzer's finding: a BatchNorm2d carrying a kernel_size.
  auto good = DescribeSequential(nn::Sequential(nn::BatchNorm2d(2)));
  ASSERT_TRUE(good.ok());
  EXPECT_TRUE(BuildSequential(*good).ok());
  pb::ModelSpec stray = *good;
  stray.mutable_layers(0)->add_kernel_size(2);
  stray.mutable_layers(0)->add_kernel_size(2);
  auto built = BuildSequential(stray);
  EXPECT_EQ(built.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(built.status().message(), "layer '0'"))
      << built.status();
  EXPECT_TRUE(absl::StrContains(built.status().message(), "kernel_size"))
      << built.status();
}

TEST(ModelSpec, ArchitectureDifferenceNamesTheLayer) {
  auto a = DescribeSequential(
      nn::Sequential(nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 2)));
  auto b = DescribeSequential(
      nn::Sequential(nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 3)));
  ASSERT_TRUE(a.ok() && b.ok());
  absl::Status s = CheckSameArchitecture(*a, *b);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "layer '2'")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "Linear(8, 3)")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "out_features")) << s;
}

TEST(ModuleState, CopyIsIndependentOfLaterTraining) {
  nn::Sequential model(nn::Linear(3, 2), nn::BatchNorm1d(2));
  auto state = CopyModuleState(*model);
  ASSERT_TRUE(state.ok());
  ASSERT_EQ(state->size(), 7u);  // 2 + 2 params, 3 buffers
  EXPECT_EQ((*state)[0].name, "0.weight");
  EXPECT_EQ((*state)[6].name, "1.num_batches_tracked");
  torch::Tensor before = (*state)[0].tensor.clone();
  {
    torch::NoGradGuard g;
    model->parameters()[0].add_(1.0);
  }
  EXPECT_TRUE(torch::equal((*state)[0].tensor, before));
}

}  // namespace
}  // namespace posttrain

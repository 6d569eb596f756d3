#include "common/model_view.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "common/sequential_block.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

nn::Sequential NestedCnn() {
  torch::manual_seed(3);
  return nn::Sequential(
      SequentialBlock(nn::Conv2d(nn::Conv2dOptions(1, 4, 3).padding(1)),
                      nn::BatchNorm2d(4), nn::ReLU()),
      nn::MaxPool2d(2), nn::Flatten(), nn::Linear(4 * 4 * 4, 8), nn::ReLU(),
      nn::Dropout(0.5), nn::Linear(8, 3));
}

TEST(ModelView, FlattensNestedLayersWithStateDictNames) {
  nn::Sequential model = NestedCnn();
  auto view = ModelView::Create(model);
  ASSERT_TRUE(view.ok()) << view.status();
  std::vector<std::string> names;
  for (const auto& l : view->layers()) names.push_back(l.name);
  EXPECT_EQ(names, (std::vector<std::string>{"0.0", "0.1", "0.2", "1", "2", "3",
                                             "4", "5", "6"}));
  EXPECT_EQ(view->weighted_layers(), (std::vector<int>{0, 5, 8}));
  // Names of weighted layers are the prefixes of their parameters.
  auto params = model->named_parameters();
  for (int i : view->weighted_layers()) {
    EXPECT_TRUE(params.contains(view->layers()[i].name + ".weight"))
        << view->layers()[i].name;
  }
  EXPECT_EQ(*view->IndexOf("3"), 5);
  EXPECT_EQ(view->IndexOf("9").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(view->spec().layers(0).kind(), pb::LayerSpec::SEQUENTIAL);
}

TEST(ModelView, ForwardMatchesTheModelAndTapsLayers) {
  nn::Sequential model = NestedCnn();
  model->eval();
  auto view = ModelView::Create(model);
  ASSERT_TRUE(view.ok());
  torch::NoGradGuard g;
  torch::Tensor x = torch::rand({5, 1, 8, 8});
  std::vector<at::Tensor> taps;
  auto out = view->Forward(x, view->size(), {2, 6}, &taps);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(torch::equal(*out, model->forward(x)));
  ASSERT_EQ(taps.size(), 2u);
  // Layer 2: the ReLU inside the block; layer 6: the ReLU after Linear "3".
  torch::Tensor block = model[0]->as<SequentialBlock>()->forward(x);
  EXPECT_TRUE(torch::equal(taps[0], block));
  EXPECT_EQ(taps[1].sizes(), (std::vector<int64_t>{5, 8}));
  EXPECT_GE(taps[1].min().item<float>(), 0.0f);
  // Truncation: running up to layer 6 gives the same tensor as the tap.
  auto truncated = view->Forward(x, 7);
  ASSERT_TRUE(truncated.ok());
  EXPECT_TRUE(torch::equal(*truncated, taps[1]));
  // The view shares the user's modules: changing a weight changes it.
  model->named_parameters()["6.bias"].add_(1.0);
  auto shifted = view->Forward(x, view->size());
  EXPECT_TRUE(torch::allclose(*shifted, *out + 1.0));
}

// No-grad CPU forwards run in channels-last memory (ChannelsLastInference):
// the same values as the NCHW forward, and the output and 4-D taps come back
// contiguous, as callers that view() them expect.
TEST(ModelView, ChannelsLastInferenceGivesTheSameContiguousTensors) {
  nn::Sequential model = NestedCnn();
  model->eval();
  auto view = ModelView::Create(model);
  ASSERT_TRUE(view.ok());
  ASSERT_TRUE(ChannelsLastInference());  // the default
  torch::NoGradGuard g;
  torch::Tensor x = torch::rand({7, 1, 8, 8});
  std::vector<at::Tensor> taps;
  auto out = view->Forward(x, 4, {2, 3}, &taps);  // up to the max pooling
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(taps.size(), 2u);
  EXPECT_TRUE(out->is_contiguous());
  EXPECT_TRUE(taps[0].is_contiguous());  // [7, 4, 8, 8]
  EXPECT_TRUE(taps[1].is_contiguous());
  EXPECT_EQ(taps[0].view({7, -1}).size(1), 4 * 8 * 8);
  SetChannelsLastInference(false);
  std::vector<at::Tensor> nchw_taps;
  auto nchw = view->Forward(x, 4, {2, 3}, &nchw_taps);
  SetChannelsLastInference(true);
  ASSERT_TRUE(nchw.ok());
  EXPECT_TRUE(torch::allclose(*out, *nchw, 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(taps[0], nchw_taps[0], 1e-6, 1e-7));
}

TEST(ModelView, ErrorsNameTheProblem) {
  nn::Sequential bad(nn::Linear(4, 4), nn::Softmax(1));
  auto view = ModelView::Create(bad);
  EXPECT_TRUE(absl::StrContains(view.status().message(), "layer '1'"))
      << view.status();
  nn::Sequential model = NestedCnn();
  auto ok = ModelView::Create(model);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->Forward(torch::rand({1, 1, 8, 8}), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<at::Tensor> taps;
  EXPECT_FALSE(ok->Forward(torch::rand({1, 1, 8, 8}), 3, {5}, &taps).ok());
  // A wrong input shape: the torch error names the failing layer.
  auto wrong = ok->Forward(torch::rand({1, 3, 8, 8}), ok->size());
  EXPECT_FALSE(wrong.ok());
  EXPECT_TRUE(absl::StrContains(wrong.status().message(), "layer '0.0'"))
      << wrong.status();
}

}  // namespace
}  // namespace posttrain

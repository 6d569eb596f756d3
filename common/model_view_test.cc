#include "common/model_view.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "common/batch_norm_eval.h"
#include "common/max_pool.h"
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

// MaxPool2x2 against at::max_pool2d: equal outputs and input gradients, bit
// for bit, where windows hold ties (ReLU zeros, repeated values), NaNs and
// -inf, and on odd maps whose last row and column the pooling drops.
void ExpectSameAsMaxPool2d(const at::Tensor& input) {
  at::Tensor a = input.clone().requires_grad_();
  at::Tensor b = input.clone().requires_grad_();
  at::Tensor ya = MaxPool2x2(a);
  at::Tensor yb = at::max_pool2d(b, {2, 2});
  ASSERT_EQ(ya.sizes(), yb.sizes());
  EXPECT_TRUE(at::equal(at::nan_to_num(ya, 7), at::nan_to_num(yb, 7)));
  EXPECT_TRUE(at::equal(at::isnan(ya), at::isnan(yb)));
  // Distinct per output, with some -0.0: max_pool2d's scatter-add into
  // zeros makes them +0.0, which the bitwise comparison below sees.
  at::Tensor g = at::randn(ya.sizes()) + 2;
  g = at::where(at::rand(g.sizes()) < 0.2, at::full({}, -0.0f), g);
  ya.backward(g);
  yb.backward(g);
  EXPECT_TRUE(at::equal(a.grad().view(at::kInt), b.grad().view(at::kInt)))
      << (a.grad() - b.grad()).abs().max();
}

TEST(MaxPool2x2, SameValuesAndGradientsAsMaxPool2d) {
  torch::manual_seed(5);
  ExpectSameAsMaxPool2d(at::randn({3, 4, 8, 10}));
  ExpectSameAsMaxPool2d(at::randn({2, 3, 7, 9}));  // odd: last row/col unused
  // Ties: ReLU zeros and values from a small set.
  ExpectSameAsMaxPool2d(at::relu(at::randn({4, 2, 6, 6})));
  ExpectSameAsMaxPool2d(at::randint(0, 3, {4, 2, 6, 6}).to(at::kFloat));
  ExpectSameAsMaxPool2d(at::full({1, 1, 4, 4}, -INFINITY));
  // Enough planes for two threads' tasks (PlanesPerTask: 41 of 28x28).
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  ExpectSameAsMaxPool2d(at::relu(at::randn({64, 16, 28, 28})));
  at::set_num_threads(threads);
  // NaNs: the kernel routes to the last NaN of the window.
  at::Tensor x = at::randn({2, 2, 6, 6});
  x.index_put_({0, 0, 0, 0}, NAN);
  x.index_put_({0, 0, 1, 0}, NAN);
  x.index_put_({1, 1, 3, 3}, NAN);
  x.index_put_({1, 1, 2, 4}, NAN);
  ExpectSameAsMaxPool2d(x);
}

// A non-contiguous incoming gradient (sum's expanded ones), and the errors.
TEST(MaxPool2x2, ExpandedGradientAndBadInputs) {
  at::Tensor a = at::randn({2, 3, 6, 8}).requires_grad_();
  at::Tensor b = a.detach().clone().requires_grad_();
  MaxPool2x2(a).sum().backward();
  at::max_pool2d(b, {2, 2}).sum().backward();
  EXPECT_TRUE(at::equal(a.grad(), b.grad()));
  EXPECT_THROW(MaxPool2x2(at::rand({2, 3, 1, 8})), c10::Error);
  EXPECT_THROW(MaxPool2x2(at::rand({3, 6, 8})), c10::Error);
  EXPECT_THROW(MaxPool2x2(at::rand({1, 3, 6, 8}, at::kDouble)), c10::Error);
  // A double backward is an error, not a silent zero.
  at::Tensor c = at::randn({1, 1, 4, 4}).requires_grad_();
  EXPECT_THROW(torch::autograd::grad({MaxPool2x2(c).pow(2).sum()}, {c}, {},
                                     /*retain_graph=*/true,
                                     /*create_graph=*/true),
               c10::Error);
}

TEST(MaxPool2x2, AppliesOnlyToTheConfigurationItComputes) {
  auto options = [](nn::MaxPool2dOptions o) { return o; };
  const at::Tensor x = at::rand({1, 1, 4, 4});
  EXPECT_TRUE(MaxPool2x2Applies(options(nn::MaxPool2dOptions(2)), x));
  EXPECT_FALSE(MaxPool2x2Applies(options(nn::MaxPool2dOptions(3)), x));
  EXPECT_FALSE(
      MaxPool2x2Applies(options(nn::MaxPool2dOptions(2).stride(1)), x));
  EXPECT_FALSE(
      MaxPool2x2Applies(options(nn::MaxPool2dOptions(2).padding(1)), x));
  EXPECT_FALSE(
      MaxPool2x2Applies(options(nn::MaxPool2dOptions(2).dilation(2)), x));
  EXPECT_FALSE(
      MaxPool2x2Applies(options(nn::MaxPool2dOptions(2).ceil_mode(true)), x));
  EXPECT_FALSE(
      MaxPool2x2Applies(options(nn::MaxPool2dOptions(2)), x.to(at::kDouble)));
  EXPECT_FALSE(MaxPool2x2Applies(
      options(nn::MaxPool2dOptions(2)),
      x.contiguous(at::MemoryFormat::ChannelsLast).expand({1, 3, 4, 4})));
  EXPECT_FALSE(MaxPool2x2Applies(options(nn::MaxPool2dOptions(2)),
                                 at::rand({1, 1, 1, 4})));
  EXPECT_FALSE(MaxPool2x2Applies(options(nn::MaxPool2dOptions(2)),
                                 at::rand({1, 0, 4, 4})));
}

// In grad mode ModelView::Forward takes MaxPool2x2 for the user's plain
// MaxPool2d: the same loss gives the same parameter gradients as the
// module's own forward (the fast path turned off).
TEST(ModelView, FastMaxPoolGivesTheModulesGradients) {
  nn::Sequential model = NestedCnn();
  auto view = ModelView::Create(model);
  ASSERT_TRUE(view.ok());
  ASSERT_TRUE(FastMaxPool());  // the default
  torch::manual_seed(9);
  const torch::Tensor x = torch::rand({6, 1, 8, 8});
  auto grads = [&] {
    torch::manual_seed(10);  // the same Dropout mask
    model->zero_grad();
    auto out = view->Forward(x, view->size());
    EXPECT_TRUE(out.ok());
    out->pow(2).sum().backward();
    return model[0]->parameters()[0].grad().clone();  // the conv's weight
  };
  // The forward up to the pooling layer ends in MaxPool2x2's node.
  auto pooled = [&] { return view->Forward(x, 4)->grad_fn()->name(); };
  EXPECT_TRUE(absl::StrContains(pooled(), "MaxPool2x2")) << pooled();
  const torch::Tensor fast = grads();
  SetFastMaxPool(false);
  EXPECT_FALSE(absl::StrContains(pooled(), "MaxPool2x2")) << pooled();
  const torch::Tensor plain = grads();
  SetFastMaxPool(true);
  EXPECT_TRUE(torch::equal(fast, plain));
  EXPECT_GT(plain.abs().sum().item<double>(), 0);
  // Options changed after Create are seen: a 3x3 pool runs the module's.
  model[1]->as<nn::MaxPool2d>()->options.kernel_size(3);
  EXPECT_FALSE(absl::StrContains(pooled(), "MaxPool2x2")) << pooled();
}

// An eval-mode BatchNorm2d with statistics and parameters far from the
// defaults: negative weights (so -0.0 gradients occur), small variances.
nn::BatchNorm2d EvalBatchNorm(int64_t channels) {
  nn::BatchNorm2d bn(nn::BatchNorm2dOptions(channels).eps(1e-3));
  torch::NoGradGuard no_grad;
  bn->weight.uniform_(-2, 2);
  bn->bias.uniform_(-1, 1);
  bn->running_mean.uniform_(-1, 1);
  bn->running_var.uniform_(0.01, 3);
  bn->eval();
  return bn;
}

bool BitEqual(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && at::equal(a.contiguous().view(at::kInt),
                                             b.contiguous().view(at::kInt));
}

TEST(BatchNormEval, SameValuesAndGradientsAsTheModule) {
  torch::manual_seed(21);
  for (int64_t channels : {3, 16}) {
    nn::BatchNorm2d bn = EvalBatchNorm(channels);
    at::Tensor x = at::randn({5, channels, 7, 9});
    x = at::where(at::rand(x.sizes()) < 0.2, at::zeros({}), x);  // ReLU zeros
    at::Tensor g = at::randn(x.sizes());
    g = at::where(at::rand(g.sizes()) < 0.2, at::full({}, -0.0f), g);
    at::Tensor a = x.clone().requires_grad_();
    at::Tensor b = x.clone().requires_grad_();
    at::Tensor ya = BatchNormEval(*bn, a);
    at::Tensor yb = bn->forward(b);
    EXPECT_TRUE(BitEqual(ya, yb)) << channels;
    // Only the input's gradient wanted (tuning): the hand-written backward.
    auto ga = torch::autograd::grad({ya}, {a}, {g});
    auto gb = torch::autograd::grad({yb}, {b}, {g});
    EXPECT_TRUE(BitEqual(ga[0], gb[0]))
        << channels << " " << (ga[0] - gb[0]).abs().max();
    // The weight's and bias's too: LibTorch's backward, the same three.
    ya = BatchNormEval(*bn, a);
    yb = bn->forward(b);
    auto wa = torch::autograd::grad({ya}, {a, bn->weight, bn->bias}, {g});
    auto wb = torch::autograd::grad({yb}, {b, bn->weight, bn->bias}, {g});
    for (int k = 0; k < 3; ++k) EXPECT_TRUE(BitEqual(wa[k], wb[k])) << k;
    EXPECT_GT(wa[1].abs().sum().item<double>(), 0);
    // A double backward is an error, not a silent zero.
    EXPECT_THROW(torch::autograd::grad({BatchNormEval(*bn, a)}, {a}, {g},
                                       /*retain_graph=*/true,
                                       /*create_graph=*/true),
                 c10::Error);
  }
}

TEST(BatchNormEval, AppliesOnlyToAnEvalModeAffineTrackingModule) {
  nn::BatchNorm2d bn = EvalBatchNorm(4);
  const at::Tensor x = at::randn({2, 4, 5, 5});
  EXPECT_TRUE(BatchNormEvalApplies(*bn, x));
  EXPECT_FALSE(BatchNormEvalApplies(*bn, at::randn({2, 3, 5, 5})));
  EXPECT_FALSE(BatchNormEvalApplies(*bn, x.transpose(2, 3)));
  EXPECT_FALSE(BatchNormEvalApplies(*bn, x.to(at::kDouble)));
  EXPECT_FALSE(
      BatchNormEvalApplies(*bn, x.contiguous(at::MemoryFormat::ChannelsLast)));
  bn->train();
  EXPECT_FALSE(BatchNormEvalApplies(*bn, x));  // batch statistics
  EXPECT_THROW(BatchNormEval(*bn, x), c10::Error);
  nn::BatchNorm2d plain(nn::BatchNorm2dOptions(4).affine(false));
  plain->eval();
  EXPECT_FALSE(BatchNormEvalApplies(*plain, x));
  nn::BatchNorm2d untracked(
      nn::BatchNorm2dOptions(4).track_running_stats(false));
  untracked->eval();
  EXPECT_FALSE(BatchNormEvalApplies(*untracked, x));
}

TEST(ModelView, FastBatchNormGivesTheModulesGradients) {
  torch::manual_seed(5);
  nn::Sequential model(
      nn::Conv2d(nn::Conv2dOptions(1, 6, 3).padding(1)), EvalBatchNorm(6),
      nn::ReLU(), nn::Conv2d(nn::Conv2dOptions(6, 4, 3).padding(1)),
      EvalBatchNorm(4), nn::ReLU(), nn::Flatten(), nn::Linear(4 * 8 * 8, 3));
  for (auto& m : model->modules(false)) {
    if (dynamic_cast<nn::BatchNorm2dImpl*>(m.get())) m->eval();
  }
  auto view = ModelView::Create(model);
  ASSERT_TRUE(view.ok());
  ASSERT_TRUE(FastBatchNorm());  // the default
  const torch::Tensor x = torch::rand({6, 1, 8, 8});
  // Gradients of the convolutions only, as tuning asks for them.
  auto grads = [&] {
    auto out = view->Forward(x, view->size());
    EXPECT_TRUE(out.ok());
    return torch::autograd::grad(
        {out->pow(2).sum()},
        {model[0]->parameters()[0], model[0]->parameters()[1],
         model[3]->parameters()[0], model[3]->parameters()[1]});
  };
  auto normed = [&] { return view->Forward(x, 2)->grad_fn()->name(); };
  EXPECT_TRUE(absl::StrContains(normed(), "BatchNormEval")) << normed();
  const auto fast = grads();
  SetFastBatchNorm(false);
  EXPECT_FALSE(absl::StrContains(normed(), "BatchNormEval")) << normed();
  const auto plain = grads();
  SetFastBatchNorm(true);
  for (size_t k = 0; k < fast.size(); ++k) {
    EXPECT_TRUE(BitEqual(fast[k], plain[k])) << k;
  }
  EXPECT_GT(plain[0].abs().sum().item<double>(), 0);
  // Without grad, and in training mode, the module runs as it is.
  {
    torch::NoGradGuard no_grad;
    EXPECT_EQ(view->Forward(x, 2)->grad_fn(), nullptr);
  }
  model[1]->train();
  EXPECT_FALSE(absl::StrContains(normed(), "BatchNormEval")) << normed();
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

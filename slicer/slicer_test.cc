#include "slicer/slicer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

double Sgn(double v) { return (v > 0) - (v < 0); }

// Plain-loop reference of Eq. 7 (ALGORITHMS.md §1.3): for every input, every
// weighted layer from the output down, every output neuron with CONTRIB != 0
// and every input neuron. Shares only the forward values (Δy) with the code
// under test.
std::vector<at::Tensor> ReferenceCounts(const ModelView& view,
                                        const Profile& profile,
                                        const at::Tensor& inputs,
                                        int64_t target) {
  auto values = *profile.NeuronValues(view, inputs);
  std::vector<at::Tensor> delta;
  for (int p = 0; p < profile.num_points(); ++p) {
    delta.push_back(values[p] - *profile.Mean(p));
  }
  const auto& weighted = view.weighted_layers();
  std::vector<at::Tensor> counts(weighted.size());
  for (int64_t b = 0; b < inputs.size(0); ++b) {
    std::vector<double> contrib(delta.back().size(1), 0.0);
    contrib[target] = 1.0;
    for (int k = static_cast<int>(weighted.size()) - 1; k >= 0; --k) {
      const auto& spec = view.layers()[weighted[k]].spec;
      at::Tensor w = view.Weight(weighted[k]).to(torch::kDouble);
      const bool conv = spec.kind() == pb::LayerSpec::CONV2D;
      const int64_t n_out = conv ? spec.out_channels() : spec.out_features();
      const int64_t n_in = conv ? spec.in_channels() : spec.in_features();
      const int64_t groups = conv ? spec.groups() : 1;
      if (!counts[k].defined()) {
        counts[k] = torch::zeros({n_out, n_in}, torch::kLong);
      }
      // Δy and CONTRIB of the output neurons (channels after a Flatten).
      const int64_t per = delta[k + 1].size(1) / n_out;
      at::Tensor dy_out =
          delta[k + 1][b].reshape({n_out, per}).mean(1);  // same rounding
      std::vector<double> c_out(n_out, 0.0);
      for (int64_t n = 0; n < n_out; ++n) {
        for (int64_t e = 0; e < per; ++e) c_out[n] += contrib[n * per + e];
      }
      std::vector<double> c_in(n_in, 0.0);
      auto cnt = counts[k].accessor<int64_t, 2>();
      for (int64_t n = 0; n < n_out; ++n) {
        if (c_out[n] == 0) continue;
        for (int64_t h = 0; h < n_in; ++h) {
          double w_hn = 0;
          if (!conv) {
            w_hn = w[n][h].item<double>();
          } else {
            const int64_t in_g = n_in / groups, out_g = n_out / groups;
            if (h / in_g == n / out_g) {
              w_hn = w[n][h % in_g].sum().item<double>();
            }
          }
          const double c = Sgn(c_out[n]) * Sgn(dy_out[n].item<double>()) *
                           Sgn(w_hn) * Sgn(delta[k][b][h].item<double>());
          c_in[h] += c;
          cnt[n][h] += static_cast<int64_t>(c);
        }
      }
      contrib = c_in;
    }
  }
  return counts;
}

nn::Sequential RandomNet(std::mt19937& rng, bool* is_cnn) {
  auto pick = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  nn::Sequential net;
  *is_cnn = pick(0, 1) == 1;
  int64_t features;
  if (*is_cnn) {
    const int c1 = 2 * pick(1, 2), c2 = 2 * pick(1, 2);
    net->push_back(nn::Conv2d(nn::Conv2dOptions(1, c1, 3).padding(1)));
    net->push_back(nn::ReLU());
    net->push_back(nn::MaxPool2d(2));
    net->push_back(
        nn::Conv2d(nn::Conv2dOptions(c1, c2, 3).padding(1).groups(pick(1, 2))));
    net->push_back(nn::ReLU());
    net->push_back(nn::Flatten());
    features = c2 * 3 * 3;
  } else {
    net->push_back(nn::Flatten());
    features = 36;
  }
  const int hidden = pick(1, 3);
  for (int i = 0; i < hidden; ++i) {
    const int width = pick(2, 7);
    net->push_back(nn::Linear(features, width));
    net->push_back(nn::ReLU());
    features = width;
  }
  net->push_back(nn::Linear(features, 3));
  // Some exact zeros, so sign(w) = 0 is exercised.
  torch::NoGradGuard g;
  for (auto& p : net->parameters()) {
    p.mul_(torch::rand(p.sizes()).gt(0.1).to(p.dtype()));
  }
  return net;
}

TEST(Slicer, MatchesThePlainLoopReferenceOn60RandomNets) {
  std::mt19937 rng(7);
  int cnns = 0;
  int64_t nonzero = 0;  // the comparison is not of all-zero counts
  for (int net_no = 0; net_no < 60; ++net_no) {
    torch::manual_seed(100 + net_no);
    bool is_cnn = false;
    nn::Sequential net = RandomNet(rng, &is_cnn);
    cnns += is_cnn;
    auto view = ModelView::Create(net);
    ASSERT_TRUE(view.ok()) << view.status();
    torch::Tensor data = torch::rand({20, 1, 6, 6});
    auto profile = Profile::Create(*view, data.slice(0, 0, 1), 0);
    ASSERT_TRUE(profile.ok()) << profile.status();
    ASSERT_TRUE(
        profile->AddBatch(*view, data, torch::full({20}, -1, torch::kLong))
            .ok());
    torch::Tensor inputs = torch::rand({7, 1, 6, 6});
    const int64_t target = net_no % 3;
    std::vector<at::Tensor> counts;
    // Two batches accumulate like one.
    ASSERT_TRUE(AccumulateCounts(*view, *profile, inputs.slice(0, 0, 3), target,
                                 &counts)
                    .ok());
    ASSERT_TRUE(
        AccumulateCounts(*view, *profile, inputs.slice(0, 3), target, &counts)
            .ok());
    auto expected = ReferenceCounts(*view, *profile, inputs, target);
    ASSERT_EQ(counts.size(), expected.size());
    for (size_t k = 0; k < counts.size(); ++k) {
      nonzero += counts[k].ne(0).sum().item<int64_t>();
      ASSERT_TRUE(torch::equal(counts[k], expected[k]))
          << "net " << net_no << " layer " << k << "\n"
          << counts[k] << "\nexpected\n"
          << expected[k];
    }
  }
  EXPECT_GE(cnns, 15);
  EXPECT_GT(nonzero, 1000);
}

// The MLP of the hand-worked tests: Linear "0" (W1) -> ReLU -> Linear "2"
// (W2), no biases, W1 = [[1, -1], [2, 1]], W2 = [[1, -2], [-1, 1]].
nn::Sequential HandWorkedMlpNet() {
  nn::Sequential net(nn::Linear(nn::LinearOptions(2, 2).bias(false)),
                     nn::ReLU(),
                     nn::Linear(nn::LinearOptions(2, 2).bias(false)));
  {
    torch::NoGradGuard g;
    net[0]->as<nn::Linear>()->weight.copy_(
        torch::tensor({{1., -1.}, {2., 1.}}));
    net[2]->as<nn::Linear>()->weight.copy_(
        torch::tensor({{1., -2.}, {-1., 1.}}));
  }
  return net;
}

// Worked by hand. MLP: Linear "0" (W1) -> ReLU -> Linear "2" (W2), no bias.
//   W1 = [[1, -1], [2, 1]]   W2 = [[1, -2], [-1, 1]]   (rows: output neuron)
// Profile data D = {(1, 0), (0, 1)}:
//   (1, 0): h = (1, 2), relu (1, 2), logits (-3, 1)
//   (0, 1): h = (-1, 1), relu (0, 1), logits (-2, 1)
//   means: x (0.5, 0.5), relu (0.5, 1.5), logits (-2.5, 1)
// Criterion input σ = (2, 0): relu (2, 4), logits (-6, 2), so
//   sign Δx = (+, -), sign Δrelu = (+, +), sign Δlogits = (-, +).
// Target logit 1: CONTRIB_o = (0, 1).
// Layer "2": s_out = sign(CONTRIB) * sign(Δo) = (0, +1); s_in = (+1, +1);
//   COUNT = sign(W2) * s_outᵀ s_in = [[0, 0], [-1, 1]];
//   CONTRIB_relu = s_in * (s_out · sign(W2)) = (-1, 1).
// Layer "0": s_out = sign(-1, 1) * sign(Δrelu) = (-1, +1); s_in = (+1, -1);
//   COUNT = [[1,-1],[1,1]] * [[-1·1, -1·-1], [1·1, 1·-1]] = [[-1, -1], [1,
//   -1]].
// q = 50 keeps 2 of 4 per tensor (ties to the lower index):
//   "2": 1 (index 3), then 0 (index 0) -> [[T, F], [F, T]], neurons (T, T)
//   "0": 1 (index 2), then -1 (index 0) -> [[T, F], [T, F]], neurons (T, T)
// q = 25 keeps 1: "2" -> index 3, neurons (F, T); "0" -> index 2, (F, T).
TEST(Slicer, HandWorkedMlp) {
  nn::Sequential net = HandWorkedMlpNet();
  auto view = ModelView::Create(net);
  ASSERT_TRUE(view.ok());
  torch::Tensor d = torch::tensor({{1., 0.}, {0., 1.}});
  auto profile = Profile::Create(*view, d.slice(0, 0, 1), 0);
  ASSERT_TRUE(profile.ok());
  ASSERT_TRUE(
      profile->AddBatch(*view, d, torch::full({2}, -1, torch::kLong)).ok());
  std::vector<at::Tensor> counts;
  ASSERT_TRUE(
      AccumulateCounts(*view, *profile, torch::tensor({{2., 0.}}), 1, &counts)
          .ok());
  EXPECT_TRUE(
      torch::equal(counts[1], torch::tensor({{0, 0}, {-1, 1}}, torch::kLong)))
      << counts[1];
  EXPECT_TRUE(
      torch::equal(counts[0], torch::tensor({{-1, -1}, {1, -1}}, torch::kLong)))
      << counts[0];
  auto half = SelectKeySynapses(*view, counts, {50.0});
  ASSERT_TRUE(half.ok());
  EXPECT_TRUE(torch::equal(half->layers[1].synapse_mask,
                           torch::tensor({{true, false}, {false, true}})));
  EXPECT_TRUE(torch::equal(half->layers[0].synapse_mask,
                           torch::tensor({{true, false}, {true, false}})));
  EXPECT_TRUE(half->layers[0].neuron_mask.all().item<bool>());
  auto quarter = SelectKeySynapses(*view, counts, {25.0});
  ASSERT_TRUE(quarter.ok());
  EXPECT_TRUE(torch::equal(quarter->layers[1].neuron_mask,
                           torch::tensor({false, true})));
  EXPECT_TRUE(torch::equal(quarter->layers[0].neuron_mask,
                           torch::tensor({false, true})));
  EXPECT_TRUE(torch::equal(quarter->layers[0].synapse_mask,
                           torch::tensor({{false, false}, {true, false}})));
}

// Worked by hand. CNN on 1x1x2 images (one row of two pixels):
// Conv2d "0" 1->2, 1x1 kernels (c0: 1, c1: -1), no bias -> Flatten "1"
// (channel-major: c0p0, c0p1, c1p0, c1p1) -> Linear "2" 4->2, no bias,
//   W = [[1, 1, -1, 0], [0, -1, 1, 1]].
// D = {(1, 3), (3, 1)}: features (1, 3, -1, -3) and (3, 1, -3, -1),
//   logits (5, -7) and (7, -5); means: input channel 2, features
//   (2, 2, -2, -2), logits (6, -6).
// σ = (4, 2): input channel mean 3 (Δ +), features (4, 2, -4, -2),
//   Δ = (2, 0, -2, 0) -> signs (+, 0, -, 0); logits (10, -8), Δ (+, -).
// Target 0: CONTRIB_o = (1, 0).
// Linear "2": s_out = (+1, 0), s_in = (+1, 0, -1, 0);
//   COUNT = [[1, 0, 1, 0], [0, 0, 0, 0]];
//   CONTRIB_features = s_in * (s_out · sign W) = (1, 0, 1, 0).
// Conv "0" (the Flatten maps elements to channels): CONTRIB per channel =
//   sums (1, 1); Δ per channel = means (1, -1) -> s_out = (+1, -1);
//   s_in = (+1); sign of the kernel sums = (1, -1);
//   COUNT = [[1·1·1], [-1·-1·1]] = [[1], [1]].
TEST(Slicer, HandWorkedCnnAcrossAFlatten) {
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(1, 2, 1).bias(false)),
                     nn::Flatten(),
                     nn::Linear(nn::LinearOptions(4, 2).bias(false)));
  {
    torch::NoGradGuard g;
    net[0]->as<nn::Conv2d>()->weight.copy_(
        torch::tensor({1., -1.}).reshape({2, 1, 1, 1}));
    net[2]->as<nn::Linear>()->weight.copy_(
        torch::tensor({{1., 1., -1., 0.}, {0., -1., 1., 1.}}));
  }
  auto view = ModelView::Create(net);
  ASSERT_TRUE(view.ok());
  torch::Tensor d = torch::tensor({1., 3., 3., 1.}).reshape({2, 1, 1, 2});
  auto profile = Profile::Create(*view, d.slice(0, 0, 1), 0);
  ASSERT_TRUE(profile.ok());
  ASSERT_TRUE(
      profile->AddBatch(*view, d, torch::full({2}, -1, torch::kLong)).ok());
  std::vector<at::Tensor> counts;
  ASSERT_TRUE(AccumulateCounts(*view, *profile,
                               torch::tensor({4., 2.}).reshape({1, 1, 1, 2}), 0,
                               &counts)
                  .ok());
  EXPECT_TRUE(torch::equal(
      counts[1], torch::tensor({{1, 0, 1, 0}, {0, 0, 0, 0}}, torch::kLong)))
      << counts[1];
  EXPECT_TRUE(torch::equal(counts[0], torch::tensor({{1}, {1}}, torch::kLong)))
      << counts[0];
  // q = 25 of the Linear's 8 synapses keeps 2: the two 1s (indexes 0, 2).
  auto slice = SelectKeySynapses(*view, counts, {25.0});
  ASSERT_TRUE(slice.ok());
  EXPECT_TRUE(torch::equal(slice->layers[1].synapse_mask,
                           torch::tensor({{true, false, true, false},
                                          {false, false, false, false}})));
  EXPECT_TRUE(
      torch::equal(slice->layers[1].neuron_mask, torch::tensor({true, false})));
  // The conv mask has the kernel's shape [2, 1, 1, 1].
  EXPECT_EQ(slice->layers[0].synapse_mask.sizes(),
            (std::vector<int64_t>{2, 1, 1, 1}));
}

TEST(Slicer, SelectsTheTopQPercentWithTiesToTheLowerIndex) {
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(2, 2, 1)), nn::Flatten(),
                     nn::Linear(2, 2));
  auto view = ModelView::Create(net);
  ASSERT_TRUE(view.ok());
  // Conv counts [out=2, in=2]; Linear counts [2, 2].
  std::vector<at::Tensor> counts = {
      torch::tensor({{5, -1}, {5, 0}}, torch::kLong),
      torch::tensor({{1, 1}, {1, 3}}, torch::kLong)};
  auto slice = SelectKeySynapses(*view, counts, {50.0});
  ASSERT_TRUE(slice.ok()) << slice.status();
  // Conv: the two 5s. Linear: 3, then the first 1 (index 0).
  EXPECT_TRUE(torch::equal(slice->layers[0].synapse_mask.reshape({2, 2}),
                           torch::tensor({{true, false}, {true, false}})));
  EXPECT_EQ(slice->layers[0].synapse_mask.sizes(),
            net[0]->as<nn::Conv2d>()->weight.sizes());
  EXPECT_TRUE(torch::equal(slice->layers[1].synapse_mask,
                           torch::tensor({{true, false}, {false, true}})));
  EXPECT_TRUE(
      torch::equal(slice->layers[1].neuron_mask, torch::tensor({true, true})));
  // Serialized and back.
  auto back = SliceFromProto(SliceToProto(*slice, 3, 50.0));
  ASSERT_TRUE(back.ok()) << back.status();
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_TRUE(torch::equal(back->layers[k].counts, slice->layers[k].counts));
    EXPECT_TRUE(torch::equal(back->layers[k].synapse_mask,
                             slice->layers[k].synapse_mask));
    EXPECT_TRUE(torch::equal(back->layers[k].neuron_mask,
                             slice->layers[k].neuron_mask));
  }
  pb::SliceProto broken = SliceToProto(*slice, 3, 50.0);
  broken.mutable_layers(1)->mutable_counts()->RemoveLast();
  auto rejected = SliceFromProto(broken);
  EXPECT_TRUE(absl::StrContains(rejected.status().message(), "layer '2'"))
      << rejected.status();
  // A weight shape whose product overflows int64 is rejected, not
  // multiplied.
  broken = SliceToProto(*slice, 3, 50.0);
  broken.mutable_layers(0)->clear_weight_shape();
  for (int i = 0; i < 3; ++i) {
    broken.mutable_layers(0)->add_weight_shape(int64_t{1} << 32);
  }
  rejected = SliceFromProto(broken);
  EXPECT_TRUE(
      absl::StrContains(rejected.status().message(), "invalid weight shape"))
      << rejected.status();
  auto all = SelectKeySynapses(*view, counts, {100.0});
  EXPECT_TRUE(all->layers[1].synapse_mask.all().item<bool>());
  for (double q : {0.0, -5.0, 100.5}) {
    auto bad = SelectKeySynapses(*view, counts, {q});
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << q;
  }
}

TEST(Slicer, RejectsABadTarget) {
  nn::Sequential net(nn::Flatten(), nn::Linear(4, 3));
  auto view = ModelView::Create(net);
  torch::Tensor x = torch::rand({4, 1, 2, 2});
  auto profile = Profile::Create(*view, x.slice(0, 0, 1), 0);
  ASSERT_TRUE(
      profile->AddBatch(*view, x, torch::full({4}, -1, torch::kLong)).ok());
  std::vector<at::Tensor> counts;
  absl::Status s = AccumulateCounts(*view, *profile, x, 3, &counts);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "target output neuron 3")) << s;
  // A criterion without inputs.
  s = AccumulateCounts(*view, *profile, x.slice(0, 0, 0), 1, &counts);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "no inputs")) << s;
}

TEST(Slicer, MixedCriteriaInOneBatchEqualEachCriterionApart) {
  std::mt19937 rng(11);
  for (int net_no = 0; net_no < 6; ++net_no) {
    torch::manual_seed(300 + net_no);
    bool is_cnn = false;
    nn::Sequential net = RandomNet(rng, &is_cnn);
    auto view = ModelView::Create(net);
    ASSERT_TRUE(view.ok()) << view.status();
    torch::Tensor data = torch::rand({16, 1, 6, 6});
    auto profile = Profile::Create(*view, data.slice(0, 0, 1), 0);
    ASSERT_TRUE(
        profile->AddBatch(*view, data, torch::full({16}, -1, torch::kLong))
            .ok());
    torch::Tensor inputs = torch::rand({30, 1, 6, 6});
    // Criteria 0..2 (and -1: not counted), with output neurons 2, 0, 1.
    torch::Tensor criteria = torch::randint(-1, 3, {30}, torch::kLong);
    const std::vector<int64_t> outputs = {2, 0, 1};
    CriterionCounts mixed;
    ASSERT_TRUE(
        AccumulateCounts(*view, *profile, inputs, criteria, outputs, &mixed)
            .ok());
    SliceOptions options;
    options.q = 60;
    options.batch_size = 7;  // batches cut across criteria
    auto slices =
        SliceCriteria(*view, *profile, inputs, criteria, outputs, options);
    ASSERT_TRUE(slices.ok()) << slices.status();
    for (int c = 0; c < 3; ++c) {
      torch::Tensor rows = criteria.eq(c).nonzero().reshape({-1});
      ASSERT_GT(rows.numel(), 0);
      EXPECT_EQ(mixed.inputs[c], rows.numel());
      std::vector<at::Tensor> apart;
      ASSERT_TRUE(AccumulateCounts(*view, *profile,
                                   inputs.index_select(0, rows), outputs[c],
                                   &apart)
                      .ok());
      auto expected = SelectKeySynapses(*view, apart, options);
      ASSERT_TRUE(expected.ok());
      for (size_t k = 0; k < apart.size(); ++k) {
        EXPECT_TRUE(torch::equal(mixed.counts[c][k], apart[k]))
            << "net " << net_no << " criterion " << c << " layer " << k;
        EXPECT_TRUE(torch::equal((*slices)[c].layers[k].synapse_mask,
                                 expected->layers[k].synapse_mask));
      }
    }
    // A criterion with no inputs is named.
    auto missing = SliceCriteria(*view, *profile, inputs, criteria.clamp_max(1),
                                 outputs, options);
    EXPECT_TRUE(absl::StrContains(missing.status().message(),
                                  "criterion 2 has no inputs"))
        << missing.status();
  }
}

// Worked by hand, the `aggregated` option on the MLP of HandWorkedMlp
// (W1 = [[1, -1], [2, 1]], W2 = [[1, -2], [-1, 1]]). Profile data:
//   (1, 0) criterion 0: relu (1, 2), logits (-3, 1)
//   (0, 1) criterion 1: relu (0, 1), logits (-2, 1)
//   (2, 0) criterion 0: relu (2, 4), logits (-6, 2)
//   overall means: x (1, 1/3), relu (1, 7/3), logits (-11/3, 4/3).
// Criterion 0 (target logit 1): means x (1.5, 0), relu (1.5, 3), logits
//   (-4.5, 1.5): Δ signs x (+, -), relu (+, +), logits (-, +), the signs of
//   HandWorkedMlp's σ, so the same counts: "2" [[0, 0], [-1, 1]],
//   "0" [[-1, -1], [1, -1]].
// Criterion 1 (target logit 0): means x (0, 1), relu (0, 1), logits (-2, 1):
//   Δ signs x (-, +), relu (-, -), logits (+, -).
//   "2": s_out = (+1, 0), s_in = (-1, -1): COUNT = [[1, -1], [-1, 1]] ⊙
//   [[-1, -1], [0, 0]] = [[-1, 1], [0, 0]]; CONTRIB_relu = (-1, -1) ⊙
//   ((1, 0) · sign W2) = (-1, 1).
//   "0": s_out = (-1·-1, 1·-1) = (1, -1), s_in = (-1, 1): COUNT =
//   [[1, -1], [1, 1]] ⊙ [[-1, 1], [1, -1]] = [[-1, -1], [1, -1]].
TEST(Slicer, HandWorkedAggregatedOption) {
  nn::Sequential net = HandWorkedMlpNet();
  auto view = ModelView::Create(net);
  ASSERT_TRUE(view.ok());
  torch::Tensor d = torch::tensor({{1., 0.}, {0., 1.}, {2., 0.}});
  auto profile = Profile::Create(*view, d.slice(0, 0, 1), 2);
  ASSERT_TRUE(profile.ok());
  ASSERT_TRUE(
      profile->AddBatch(*view, d, torch::tensor({0, 1, 0}, torch::kLong)).ok());
  auto counts = AggregatedCounts(*view, *profile, {1, 0});
  ASSERT_TRUE(counts.ok()) << counts.status();
  const auto& c = counts->counts;
  EXPECT_TRUE(
      torch::equal(c[0][1], torch::tensor({{0, 0}, {-1, 1}}, torch::kLong)))
      << c[0][1];
  EXPECT_TRUE(
      torch::equal(c[0][0], torch::tensor({{-1, -1}, {1, -1}}, torch::kLong)))
      << c[0][0];
  EXPECT_TRUE(
      torch::equal(c[1][1], torch::tensor({{-1, 1}, {0, 0}}, torch::kLong)))
      << c[1][1];
  EXPECT_TRUE(
      torch::equal(c[1][0], torch::tensor({{-1, -1}, {1, -1}}, torch::kLong)))
      << c[1][0];
  // Through SliceCriteria: the inputs are not needed.
  SliceOptions options;
  options.aggregated = true;
  options.q = 25;
  auto slices = SliceCriteria(*view, *profile, {}, {}, {1, 0}, options);
  ASSERT_TRUE(slices.ok()) << slices.status();
  EXPECT_TRUE(torch::equal((*slices)[1].layers[1].synapse_mask,
                           torch::tensor({{false, true}, {false, false}})));
  // A criterion the profile never saw is an error that names it.
  auto empty = Profile::Create(*view, d.slice(0, 0, 1), 2);
  ASSERT_TRUE(
      empty->AddBatch(*view, d, torch::tensor({0, 0, 0}, torch::kLong)).ok());
  auto missing = AggregatedCounts(*view, *empty, {1, 0});
  EXPECT_TRUE(absl::StrContains(missing.status().message(),
                                "criterion 1 has no profiled samples"))
      << missing.status();
}

TEST(Slicer, GlobalRankingComparesAcrossLayers) {
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(2, 2, 1)), nn::Flatten(),
                     nn::Linear(2, 2));
  auto view = ModelView::Create(net);
  ASSERT_TRUE(view.ok());
  std::vector<at::Tensor> counts = {
      torch::tensor({{5, -1}, {5, 0}}, torch::kLong),
      torch::tensor({{1, 1}, {1, 3}}, torch::kLong)};
  SliceOptions options;
  options.q = 25;  // 2 of all 8 synapses
  options.global_ranking = true;
  auto global = SelectKeySynapses(*view, counts, options);
  ASSERT_TRUE(global.ok()) << global.status();
  EXPECT_TRUE(torch::equal(global->layers[0].synapse_mask.reshape({2, 2}),
                           torch::tensor({{true, false}, {true, false}})));
  EXPECT_FALSE(global->layers[1].synapse_mask.any().item<bool>());
  EXPECT_FALSE(global->layers[1].neuron_mask.any().item<bool>());
  // Per tensor, q = 25 keeps one of each: conv index 0, linear index 3.
  options.global_ranking = false;
  auto per_tensor = SelectKeySynapses(*view, counts, options);
  ASSERT_TRUE(per_tensor.ok());
  // Key synapses {conv 0, conv 2} vs {conv 0, linear 3}: Jaccard 1/3.
  auto j = KeySynapseJaccard({*global}, {*per_tensor});
  ASSERT_TRUE(j.ok());
  EXPECT_DOUBLE_EQ(*j, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(*KeySynapseJaccard({*global}, {*global}), 1.0);
  // Excluded synapses: {conv 1, 3, linear 0-3} vs {conv 1-3, linear 0-2}:
  // 5 shared of 7.
  auto excluded = ExcludedSynapseJaccard({*global}, {*per_tensor});
  ASSERT_TRUE(excluded.ok());
  EXPECT_DOUBLE_EQ(*excluded, 5.0 / 7.0);
  // Counts of the wrong shape are named.
  counts[1] = torch::zeros({3, 2}, torch::kLong);
  auto bad = SelectKeySynapses(*view, counts, options);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "layer '2'"))
      << bad.status();
}

// A grouped Conv2d's dense count matrix holds cross-group entries for
// synapses that do not exist; they must not take key-synapse places.
TEST(Slicer, GroupedConvRanksOnlyRealSynapses) {
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(4, 4, 1).groups(2)),
                     nn::Flatten(), nn::Linear(4, 2));
  auto view = ModelView::Create(net);
  ASSERT_TRUE(view.ok());
  // Real synapses: out 0-1 x in 0-1 and out 2-3 x in 2-3 (8 of 16); the
  // zeros elsewhere are phantoms and would outrank every real count.
  std::vector<at::Tensor> counts = {
      torch::tensor(
          {{-1, -2, 0, 0}, {-3, -4, 0, 0}, {0, 0, -5, -6}, {0, 0, -7, -8}},
          torch::kLong),
      torch::tensor({{1, 1, 1, 1}, {1, 1, 1, 1}}, torch::kLong)};
  auto slice = SelectKeySynapses(*view, counts, {50.0});
  ASSERT_TRUE(slice.ok()) << slice.status();
  // 4 of the 8 real synapses: the whole first group.
  EXPECT_TRUE(torch::equal(
      slice->layers[0].synapse_mask.reshape({4, 2}),
      torch::tensor(
          {{true, true}, {true, true}, {false, false}, {false, false}})));
  EXPECT_TRUE(torch::equal(slice->layers[0].neuron_mask,
                           torch::tensor({true, true, false, false})));
}

// Hazard "errors, not exceptions": bad input to slicing returns a status.
TEST(Slicer, BadInputIsAnErrorNotAnException) {
  torch::manual_seed(5);
  nn::Sequential net(nn::Linear(4, 6), nn::ReLU(), nn::Linear(6, 3));
  nn::Sequential other(nn::Linear(4, 5), nn::ReLU(), nn::Linear(5, 3));
  auto view = ModelView::Create(net);
  auto other_view = ModelView::Create(other);
  ASSERT_TRUE(view.ok() && other_view.ok());
  at::Tensor x = torch::rand({8, 4});
  at::Tensor crit = torch::zeros({8}, torch::kLong);
  auto profile = ProfileModel(net, x, crit, 1);
  auto other_profile = ProfileModel(other, x, crit, 1);
  ASSERT_TRUE(profile.ok() && other_profile.ok());
  // A profile of another model (same number of layers, other widths).
  auto wrong = SliceCriteria(*view, *other_profile, x, crit, {0}, {});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument)
      << wrong.status();
  EXPECT_TRUE(absl::StrContains(wrong.status().message(), "profile"))
      << wrong.status();
  // A 0-dim criteria tensor for one input.
  auto scalar = SliceCriteria(*view, *profile, x.slice(0, 0, 1),
                              torch::tensor(0, torch::kLong), {0}, {});
  EXPECT_EQ(scalar.status().code(), absl::StatusCode::kInvalidArgument)
      << scalar.status();
  // A NaN in the activations names the layer (its NaN output feeds
  // weighted layer '2').
  {
    torch::NoGradGuard g;
    net[0]->as<nn::Linear>()->weight[2][1] = NAN;
  }
  auto nan = SliceCriteria(*view, *profile, x, crit, {0}, {});
  EXPECT_EQ(nan.status().code(), absl::StatusCode::kInvalidArgument)
      << nan.status();
  EXPECT_TRUE(absl::StrContains(nan.status().message(), "NaN")) << nan.status();
  EXPECT_TRUE(absl::StrContains(nan.status().message(), "layer '2'"))
      << nan.status();
}

}  // namespace
}  // namespace posttrain

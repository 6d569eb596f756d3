#include "robustness/attacks.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"

namespace posttrain {
namespace {

// A separable task: 1×4×4 images in [0, 1], class 1 when the top half is
// brighter than the bottom half. Images within 0.25 of the boundary (in the
// difference of the halves' sums) are left out, so that a small model learns
// it almost perfectly, while an L∞ step of 0.1 moves that difference by up
// to 1.6.
struct Split {
  at::Tensor images;  // [N, 1, 4, 4]
  at::Tensor labels;  // [N]
};

Split MakeSplit(int64_t n, uint64_t seed) {
  at::Tensor x =
      torch::rand({n, 1, 4, 4}, at::detail::createCPUGenerator(seed));
  at::Tensor d =
      x.slice(2, 0, 2).sum({1, 2, 3}) - x.slice(2, 2, 4).sum({1, 2, 3});
  at::Tensor keep = d.abs() > 0.25;
  return {x.index({keep}).contiguous(), (d.index({keep}) > 0).to(torch::kLong)};
}

// MLP with BatchNorm and Dropout, so that eval mode matters during attacks.
torch::nn::Sequential MakeMlp() {
  return torch::nn::Sequential(torch::nn::Flatten(), torch::nn::Linear(16, 32),
                               torch::nn::BatchNorm1d(32), torch::nn::ReLU(),
                               torch::nn::Dropout(0.2),
                               torch::nn::Linear(32, 2));
}

const Split& TestSplit() {
  static const Split* split = new Split(MakeSplit(512, 2));
  return *split;
}

// Trained once (seeded); every test gets its own copy, in training mode,
// with undefined parameter gradients.
torch::nn::Sequential TrainedMlp() {
  static const torch::nn::Sequential* trained = [] {
    at::set_num_threads(1);
    torch::manual_seed(0);
    auto* model = new torch::nn::Sequential(MakeMlp());
    const Split train = MakeSplit(1024, 1);
    torch::optim::Adam adam((*model)->parameters(),
                            torch::optim::AdamOptions(0.01));
    for (int step = 0; step < 150; ++step) {
      adam.zero_grad();
      torch::nn::functional::cross_entropy((*model)->forward(train.images),
                                           train.labels)
          .backward();
      adam.step();
    }
    return model;
  }();
  torch::nn::Sequential copy(
      std::dynamic_pointer_cast<torch::nn::SequentialImpl>(
          (*trained)->clone()));
  for (at::Tensor& p : copy->parameters()) p.mutable_grad() = at::Tensor();
  copy->train();
  return copy;
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(Attacks, HandCheckedLinearModel) {
  // logits = W x with W = [[1, 2], [3, -1]]: for two classes the input
  // gradient of CE is p_other · (W_other − W_label), so its sign is
  // sign(W1 − W0) = (+, −) for label 0 and (−, +) for label 1.
  torch::nn::Sequential model(torch::nn::Linear(2, 2));
  {
    torch::NoGradGuard no_grad;
    auto* linear = model[0]->as<torch::nn::Linear>();
    linear->weight.copy_(torch::tensor({{1.f, 2.f}, {3.f, -1.f}}));
    linear->bias.zero_();
  }
  const at::Tensor x =
      torch::tensor({{0.5f, 0.5f}, {0.5f, 0.5f}, {0.875f, 0.125f}});
  const at::Tensor y = torch::tensor({0, 1, 0}, torch::kLong);
  // The third input is clipped to [0, 1].
  const at::Tensor expected =
      torch::tensor({{0.75f, 0.25f}, {0.25f, 0.75f}, {1.f, 0.f}});

  AttackOptions options;
  options.epsilon = 0.25;
  auto fgsm = Fgsm(model, x, y, options);
  ASSERT_TRUE(fgsm.ok()) << fgsm.status();
  EXPECT_TRUE(torch::equal(*fgsm, expected)) << *fgsm;

  // PGD without random start: two steps of 0.125 reach the corner of the
  // ball, the third is projected back onto it.
  options.random_start = false;
  options.alpha = 0.125;
  options.steps = 3;
  auto pgd = Pgd(model, x, y, options);
  ASSERT_TRUE(pgd.ok()) << pgd.status();
  EXPECT_TRUE(torch::equal(*pgd, expected)) << *pgd;

  // BIM: two steps of 0.1 along the same signs, inside the ball of 0.25;
  // the third input is clipped at the corner.
  AttackOptions bim = BimDefaults();
  bim.epsilon = 0.25;
  bim.alpha = 0.1;
  bim.steps = 2;
  bim.random_start = true;  // ignored by BIM
  auto bim_out = Bim(model, x, y, bim);
  ASSERT_TRUE(bim_out.ok()) << bim_out.status();
  EXPECT_TRUE(torch::allclose(
      *bim_out, torch::tensor({{0.7f, 0.3f}, {0.3f, 0.7f}, {1.f, 0.f}}), 0,
      1e-6))
      << *bim_out;

  // One PGD step from the random start, by hand: the start is
  // x + (2u − 1)·ε with u = U(0, 1) drawn for all inputs at once from a
  // generator seeded with the seed, clipped; then one signed step,
  // projected onto the ball and [0, 1].
  AttackOptions one = options;
  one.random_start = true;
  one.steps = 1;
  one.seed = 11;
  auto gen = at::detail::createCPUGenerator(11);
  const at::Tensor u = torch::rand(x.sizes(), gen);
  const at::Tensor start = (x + (2 * u - 1) * 0.25).clamp(0, 1);
  const at::Tensor sign =
      torch::tensor({{1.f, -1.f}, {-1.f, 1.f}, {1.f, -1.f}});
  const at::Tensor by_hand =
      torch::min(torch::max(start + 0.125 * sign, x - 0.25), x + 0.25)
          .clamp(0, 1);
  auto pgd1 = Pgd(model, x, y, one);
  ASSERT_TRUE(pgd1.ok()) << pgd1.status();
  EXPECT_TRUE(torch::allclose(*pgd1, by_hand, 0, 1e-6)) << *pgd1 << by_hand;

  // Logits (1.5, 1), (1.5, 1), (1.125, 2.5): only the first is right.
  auto accuracy = Accuracy(model, x, y);
  ASSERT_TRUE(accuracy.ok()) << accuracy.status();
  EXPECT_DOUBLE_EQ(*accuracy, 1.0 / 3.0);
}

TEST(Attacks, StayInBallAndLeaveInputsModelAndGradientsAlone) {
  torch::nn::Sequential model = TrainedMlp();
  const Split& test = TestSplit();
  const at::Tensor before = test.images.clone();
  // One parameter with a gradient, the others without.
  std::vector<at::Tensor> params = model->parameters();
  params[0].mutable_grad() = torch::full_like(params[0], 0.5);
  const at::Tensor grad_before = params[0].grad().clone();
  auto* bn = model[2]->as<torch::nn::BatchNorm1d>();
  const at::Tensor running_mean = bn->running_mean.clone();

  AttackOptions options;  // ε = 0.1
  options.batch_size = 100;
  for (bool pgd : {false, true}) {
    SCOPED_TRACE(pgd ? "PGD" : "FGSM");
    auto adv = pgd ? Pgd(model, test.images, test.labels, options)
                   : Fgsm(model, test.images, test.labels, options);
    ASSERT_TRUE(adv.ok()) << adv.status();
    EXPECT_EQ(adv->sizes(), test.images.sizes());
    EXPECT_LE(MaxAbsDiff(*adv, test.images), options.epsilon + 1e-6);
    EXPECT_GE(adv->min().item<float>(), 0.f);
    EXPECT_LE(adv->max().item<float>(), 1.f);
    EXPECT_TRUE(torch::equal(test.images, before));
    EXPECT_TRUE(model->is_training());
    for (const auto& child : model->children()) {
      EXPECT_TRUE(child->is_training());
    }
    // BatchNorm ran in eval mode: its statistics did not move.
    EXPECT_TRUE(torch::equal(bn->running_mean, running_mean));
    EXPECT_TRUE(torch::equal(params[0].grad(), grad_before));
    for (size_t i = 1; i < params.size(); ++i) {
      EXPECT_FALSE(params[i].grad().defined()) << "parameter " << i;
    }
  }
}

TEST(Attacks, LowerAccuracyAndPgdIsAtLeastAsStrong) {
  torch::nn::Sequential model = TrainedMlp();
  const Split& test = TestSplit();
  auto clean = Accuracy(model, test.images, test.labels);
  ASSERT_TRUE(clean.ok()) << clean.status();
  EXPECT_GT(*clean, 0.9);
  EXPECT_TRUE(model->is_training());

  AttackOptions options;
  options.seed = 3;
  auto fgsm = Fgsm(model, test.images, test.labels, options);
  auto pgd = Pgd(model, test.images, test.labels, options);
  ASSERT_TRUE(fgsm.ok()) << fgsm.status();
  ASSERT_TRUE(pgd.ok()) << pgd.status();
  auto fgsm_accuracy = Accuracy(model, *fgsm, test.labels, /*batch_size=*/64);
  auto pgd_accuracy = Accuracy(model, *pgd, test.labels);
  ASSERT_TRUE(fgsm_accuracy.ok()) << fgsm_accuracy.status();
  ASSERT_TRUE(pgd_accuracy.ok()) << pgd_accuracy.status();
  EXPECT_LT(*fgsm_accuracy, *clean - 0.3);
  EXPECT_LT(*pgd_accuracy, *clean - 0.3);
  EXPECT_LE(*pgd_accuracy, *fgsm_accuracy);
}

TEST(Attacks, PgdIsDeterministicUnderItsSeed) {
  torch::nn::Sequential model = TrainedMlp();
  const Split& test = TestSplit();
  AttackOptions options;
  options.seed = 11;
  auto a = Pgd(model, test.images, test.labels, options);
  torch::manual_seed(12345);  // the global generator plays no part
  auto b = Pgd(model, test.images, test.labels, options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(torch::equal(*a, *b));

  // Few steps, so that the random start still shows.
  options.steps = 2;
  auto c = Pgd(model, test.images, test.labels, options);
  options.seed = 12;
  auto d = Pgd(model, test.images, test.labels, options);
  ASSERT_TRUE(c.ok() && d.ok());
  EXPECT_FALSE(torch::equal(*c, *d));
}

TEST(Attacks, ResultsDoNotDependOnBatchSize) {
  torch::nn::Sequential model = TrainedMlp();
  const Split& test = TestSplit();
  AttackOptions small;
  small.batch_size = 37;
  small.steps = 5;
  AttackOptions large = small;
  large.batch_size = 10000;
  for (bool pgd : {false, true}) {
    SCOPED_TRACE(pgd ? "PGD" : "FGSM");
    auto a = pgd ? Pgd(model, test.images, test.labels, small)
                 : Fgsm(model, test.images, test.labels, small);
    auto b = pgd ? Pgd(model, test.images, test.labels, large)
                 : Fgsm(model, test.images, test.labels, large);
    ASSERT_TRUE(a.ok() && b.ok());
    // Batched matrix products may round differently; a gradient sign may
    // flip where a component is ~0, but hardly anywhere else.
    const double differing = a->ne(*b).to(torch::kDouble).mean().item<double>();
    EXPECT_LT(differing, 0.01);
  }
}

TEST(Attacks, FgsmWithZeroEpsilonReturnsTheInputs) {
  torch::nn::Sequential model = TrainedMlp();
  const Split& test = TestSplit();
  AttackOptions options;
  options.epsilon = 0;
  auto adv = Fgsm(model, test.images, test.labels, options);
  ASSERT_TRUE(adv.ok()) << adv.status();
  EXPECT_TRUE(torch::equal(*adv, test.images));
  EXPECT_NE(adv->data_ptr(), test.images.data_ptr());
}

TEST(Attacks, BadArgumentsAreNamed) {
  torch::nn::Sequential model = TrainedMlp();
  const Split& test = TestSplit();
  const at::Tensor x = test.images.slice(0, 0, 8);
  const at::Tensor y = test.labels.slice(0, 0, 8);

  struct Case {
    std::string name;
    AttackOptions options;
    at::Tensor inputs;
    at::Tensor labels;
    std::string expected;  // in the message
    bool pgd_only = false;
  };
  std::vector<Case> cases;
  auto with = [&](std::string name, std::string expected) {
    Case c;
    c.name = std::move(name);
    c.inputs = x;
    c.labels = y;
    c.expected = std::move(expected);
    return c;
  };
  {
    Case c = with("negative epsilon", "epsilon");
    c.options.epsilon = -0.1;
    cases.push_back(c);
  }
  {
    Case c = with("NaN epsilon", "epsilon");
    c.options.epsilon = std::nan("");
    cases.push_back(c);
  }
  {
    Case c = with("zero steps", "steps");
    c.options.steps = 0;
    c.pgd_only = true;
    cases.push_back(c);
  }
  {
    Case c = with("zero alpha", "alpha");
    c.options.alpha = 0;
    c.pgd_only = true;
    cases.push_back(c);
  }
  {
    Case c = with("zero batch size", "batch_size");
    c.options.batch_size = 0;
    cases.push_back(c);
  }
  {
    Case c = with("empty inputs", "inputs are empty");
    c.inputs = x.slice(0, 0, 0);
    c.labels = y.slice(0, 0, 0);
    cases.push_back(c);
  }
  {
    Case c = with("undefined inputs", "inputs are empty");
    c.inputs = at::Tensor();
    cases.push_back(c);
  }
  {
    Case c =
        with("label count", "labels count 7 does not match inputs count 8");
    c.labels = y.slice(0, 0, 7);
    cases.push_back(c);
  }
  {
    Case c = with("label too large", "labels out of range: label 2");
    c.labels = y.clone();
    c.labels[3] = 2;
    cases.push_back(c);
  }
  {
    Case c = with("negative label", "labels out of range: label -1");
    c.labels = y.clone();
    c.labels[5] = -1;
    cases.push_back(c);
  }
  {
    Case c = with("float labels", "labels must be an integer tensor");
    c.labels = y.to(torch::kFloat);
    cases.push_back(c);
  }
  {
    Case c = with("integer inputs", "inputs must be floating point");
    c.inputs = x.to(torch::kLong);
    cases.push_back(c);
  }

  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto pgd = Pgd(model, c.inputs, c.labels, c.options);
    EXPECT_EQ(pgd.status().code(), absl::StatusCode::kInvalidArgument)
        << pgd.status();
    EXPECT_TRUE(absl::StrContains(pgd.status().message(), c.expected))
        << pgd.status();
    auto fgsm = Fgsm(model, c.inputs, c.labels, c.options);
    if (c.pgd_only) {
      EXPECT_TRUE(fgsm.ok()) << fgsm.status();
      continue;
    }
    EXPECT_EQ(fgsm.status().code(), absl::StatusCode::kInvalidArgument)
        << fgsm.status();
    EXPECT_TRUE(absl::StrContains(fgsm.status().message(), c.expected))
        << fgsm.status();
    if (absl::StrContains(c.name, "epsilon")) continue;
    auto accuracy = Accuracy(model, c.inputs, c.labels, c.options.batch_size);
    EXPECT_EQ(accuracy.status().code(), absl::StatusCode::kInvalidArgument)
        << accuracy.status();
    EXPECT_TRUE(absl::StrContains(accuracy.status().message(), c.expected))
        << accuracy.status();
  }
  EXPECT_TRUE(model->is_training());

  // A model whose output is not [B, C] logits.
  torch::nn::Sequential flat(
      torch::nn::Flatten(torch::nn::FlattenOptions().start_dim(0)));
  auto bad = Fgsm(flat, x, y);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "logits [B, C]"))
      << bad.status();
  // Torch errors come back as statuses: the model expects 16 features.
  auto wrong_shape = Fgsm(model, torch::rand({4, 3}), y.slice(0, 0, 4));
  EXPECT_FALSE(wrong_shape.ok());
}

// A linear 2-D classifier, z₁ − z₀ = x₁ + x₂ − 1, on 200 seeded points of
// [0, 1]², labelled by the model itself. The nearest point of the other
// class is at the exact distance |x₁ + x₂ − 1| / √2 (its projection on the
// boundary stays inside the square).
TEST(Attacks, LinearBoundaryFlipsAndCwFindsTheNearestPoint) {
  torch::nn::Sequential model(torch::nn::Linear(2, 2));
  {
    torch::NoGradGuard no_grad;
    auto* linear = model[0]->as<torch::nn::Linear>();
    linear->weight.copy_(torch::tensor({{0.f, 0.f}, {1.f, 1.f}}));
    linear->bias.copy_(torch::tensor({0.f, -1.f}));
  }
  const at::Tensor x = torch::rand({200, 2}, at::detail::createCPUGenerator(3));
  const at::Tensor s = x.sum(1) - 1;
  const at::Tensor y = (s > 0).to(torch::kLong);
  AttackOptions eps;
  eps.epsilon = 0.5;
  eps.alpha = 0.05;
  eps.steps = 20;
  for (int attack = 0; attack < 2; ++attack) {
    auto adv = attack == 0 ? Fgsm(model, x, y, eps) : Pgd(model, x, y, eps);
    ASSERT_TRUE(adv.ok()) << adv.status();
    auto r = EvaluateAttack(model, x, *adv, y);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->correct, 200);
    EXPECT_GE(r->success_rate, 0.5)
        << (attack == 0 ? "FGSM " : "PGD ") << r->ToJson();
    EXPECT_LE(r->mean_linf, 0.5 + 1e-6);
  }
  const CwOptions cw;
  auto adv = CarliniWagnerL2(model, x, y, cw);
  ASSERT_TRUE(adv.ok()) << adv.status();
  auto r = EvaluateAttack(model, x, *adv, y);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(r->success_rate, 0.9) << r->ToJson();
  // Exact distances of the fooled points.
  const at::Tensor fooled = model->forward(*adv).argmax(1).ne(y);
  const double exact =
      (s.abs() / std::sqrt(2.0)).index({fooled}).mean().item<double>();
  EXPECT_NEAR(r->mean_l2, exact, 0.1 * exact)
      << "C&W mean L2 " << r->mean_l2 << ", exact " << exact;
  EXPECT_GE(r->mean_l2, exact * (1 - 1e-3));  // never inside the boundary
  EXPECT_TRUE(absl::StrContains(cw.Describe(), "\"binary_search_steps\": 5"));
}

// JSMA on a linear model over 10 features: the target's logit is the sum
// of features 0..4 minus 2.5, class 0's is 0.5 minus half that sum, class
// 1's is 0. From x = 0 two raised features leave class 1 (logit 0) above
// the target (−0.5), so the target is unreachable within γ = 0.2 (at most
// 2 features); four features reach it (1.5 > 0 and > −1.5), within γ = 0.5.
TEST(Attacks, JsmaReachesTheTargetWithinItsFeatureBudget) {
  torch::nn::Sequential model(torch::nn::Linear(10, 3));
  {
    torch::NoGradGuard no_grad;
    auto* linear = model[0]->as<torch::nn::Linear>();
    linear->weight.zero_();
    linear->weight[0].narrow(0, 0, 5).fill_(-0.5f);
    linear->weight[2].narrow(0, 0, 5).fill_(1.f);
    linear->bias.copy_(torch::tensor({0.5f, 0.f, -2.5f}));
  }
  const at::Tensor x = torch::zeros({3, 10});
  const at::Tensor targets = torch::full({3}, 2, torch::kLong);
  const at::Tensor labels = torch::zeros({3}, torch::kLong);
  JsmaOptions jsma;
  jsma.gamma = 0.2;
  auto low = Jsma(model, x, targets, jsma);
  ASSERT_TRUE(low.ok()) << low.status();
  EXPECT_LE(low->ne(x).sum(1).max().item<int64_t>(), 2);
  EXPECT_TRUE(model->forward(*low).argmax(1).ne(2).all().item<bool>());
  jsma.gamma = 0.5;
  auto high = Jsma(model, x, targets, jsma);
  ASSERT_TRUE(high.ok()) << high.status();
  const at::Tensor changed = high->ne(x).sum(1);
  EXPECT_LE(changed.max().item<int64_t>(), 5);  // ⌈γ·n⌉
  EXPECT_TRUE(model->forward(*high).argmax(1).eq(2).all().item<bool>());
  // Only the features that raise the target moved, each to 1.
  EXPECT_TRUE(high->narrow(1, 5, 5).eq(0).all().item<bool>());
  EXPECT_TRUE(high->index({high->ne(0)}).eq(1).all().item<bool>());
  auto r = EvaluateAttack(model, x, *high, labels, targets);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->correct, 3);
  EXPECT_EQ(r->successes, 3);
  EXPECT_NEAR(r->mean_l2, 2.0, 1e-6);  // four features moved by 1
  EXPECT_NEAR(r->mean_linf, 1.0, 1e-6);
  // Stopping: once at the target nothing more changes: with a budget of
  // all 10 features, still the 4 that reach it.
  jsma.gamma = 1.0;
  auto all = Jsma(model, x, targets, jsma);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->ne(x).sum(1).max().item<int64_t>(), 4);
  // Targets of another length, and bad options, are named.
  EXPECT_FALSE(Jsma(model, x, targets.narrow(0, 0, 2), jsma).ok());
  jsma.gamma = 0;
  EXPECT_TRUE(absl::StrContains(
      Jsma(model, x, targets, jsma).status().message(), "gamma"));
}

// The CPU pair loop and the [B, n, n] matrix search pick the same pairs,
// so the attacks are identical, for both signs of θ, on a network whose
// gradients differ per input.
TEST(Attacks, JsmaPairSearchMatchesTheMatrixSearch) {
  torch::manual_seed(11);
  torch::nn::Sequential model(torch::nn::Linear(36, 16), torch::nn::ReLU(),
                              torch::nn::Linear(16, 5));
  const at::Tensor x = torch::rand({40, 36});
  const at::Tensor labels = torch::zeros({40}, torch::kLong);
  auto targets = RandomTargets(labels, 5, 2);
  ASSERT_TRUE(targets.ok());
  for (double theta : {1.0, -1.0}) {
    JsmaOptions jsma;
    jsma.theta = theta;
    jsma.gamma = 0.3;
    jsma.batch_size = 16;
    auto loop = Jsma(model, x, *targets, jsma);
    jsma.pair_matrix = true;
    auto matrix = Jsma(model, x, *targets, jsma);
    ASSERT_TRUE(loop.ok() && matrix.ok()) << theta;
    EXPECT_TRUE(torch::equal(*loop, *matrix)) << theta;
    EXPECT_GT(loop->ne(x).sum().item<int64_t>(), 40) << theta;
  }
}

TEST(Attacks, NewAttacksAreDeterministicInRangeAndLeaveInputsAlone) {
  torch::nn::Sequential model = TrainedMlp();
  const Split& test = TestSplit();
  const at::Tensor x = test.images.narrow(0, 0, 64);
  const at::Tensor y = test.labels.narrow(0, 0, 64);
  const at::Tensor before = x.clone();
  auto targets = RandomTargets(y, 2, 5);
  ASSERT_TRUE(targets.ok());
  EXPECT_TRUE(targets->ne(y).all().item<bool>());
  {  // Ten classes: never the label, every offset 1..9 drawn, seeded.
    const at::Tensor labels = torch::arange(1000, torch::kLong).remainder(10);
    auto t1 = RandomTargets(labels, 10, 3), t2 = RandomTargets(labels, 10, 3),
         t3 = RandomTargets(labels, 10, 4);
    ASSERT_TRUE(t1.ok() && t2.ok() && t3.ok());
    EXPECT_TRUE(t1->ne(labels).all().item<bool>());
    EXPECT_TRUE(torch::equal(*t1, *t2));
    EXPECT_FALSE(torch::equal(*t1, *t3));
    const at::Tensor offsets = (*t1 - labels + 10).remainder(10);
    for (int k = 1; k < 10; ++k) {
      EXPECT_TRUE(offsets.eq(k).any().item<bool>()) << k;
    }
    EXPECT_FALSE(RandomTargets(labels, 1, 3).ok());
  }
  CwOptions cw;
  cw.iterations = 20;
  cw.binary_search_steps = 3;
  JsmaOptions jsma;
  jsma.gamma = 0.25;
  const AttackOptions bim = BimDefaults();
  for (int attack = 0; attack < 3; ++attack) {
    auto run = [&]() -> absl::StatusOr<at::Tensor> {
      if (attack == 0) return Bim(model, x, y, bim);
      if (attack == 1) return CarliniWagnerL2(model, x, y, cw);
      return Jsma(model, x, *targets, jsma);
    };
    auto a = run();
    auto b = run();
    ASSERT_TRUE(a.ok() && b.ok()) << attack;
    EXPECT_TRUE(torch::equal(*a, *b)) << attack;
    EXPECT_TRUE(torch::equal(x, before)) << attack;
    EXPECT_GE(a->min().item<double>(), 0.0);
    EXPECT_LE(a->max().item<double>(), 1.0);
    if (attack == 0) {
      EXPECT_LE((*a - x).abs().max().item<double>(), bim.epsilon + 1e-6);
    }
    auto r =
        EvaluateAttack(model, x, *a, y, attack == 2 ? *targets : at::Tensor());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_GT(r->successes, 0) << attack << " " << r->ToJson();
  }
  // The parameters' gradients were left undefined.
  for (const at::Tensor& p : model->parameters()) {
    EXPECT_FALSE(p.grad().defined());
  }
  EXPECT_FALSE(EvaluateAttack(model, x, x.narrow(0, 0, 3), y).ok());
  cw.initial_c = 0;
  EXPECT_TRUE(absl::StrContains(
      CarliniWagnerL2(model, x, y, cw).status().message(), "initial_c"));
}

}  // namespace
}  // namespace posttrain

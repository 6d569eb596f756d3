#include "fairness/fmt.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "fairness/adversarial_debiasing.h"
#include "fairness/baselines.h"
#include "fairness/care.h"
#include "fairness/metrics.h"
#include "fairness/reject_option.h"
#include "hooks/post_train_callback.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

// Inputs (f, a). Hidden h = relu(f, a, 0); logits (0, h0 − 2·h1): for σ
// (a = 1) the favourable logit is f − 2, for σ' (a = 0) it is f, so
// conf(σ) = sigmoid(|f − 2|) and conf(σ') = sigmoid(|f|).
//   f = 0:   conf(σ) = s(2) > conf(σ') = s(0): no swap
//   f = 1:   s(1) = s(1): no swap (only a strictly lower conf(σ) swaps)
//   f = 1.5: s(0.5) < s(1.5): swap
nn::Sequential HandSetModel() {
  nn::Sequential m(nn::Linear(2, 3), nn::ReLU(), nn::Linear(3, 2));
  torch::NoGradGuard g;
  auto* l0 = m[0]->as<nn::Linear>();
  auto* l2 = m[2]->as<nn::Linear>();
  l0->weight.copy_(torch::tensor({{1.f, 0.f}, {0.f, 1.f}, {0.f, 0.f}}));
  l0->bias.zero_();
  l2->weight.copy_(torch::tensor({{0.f, 0.f, 0.f}, {1.f, -2.f, 0.f}}));
  l2->bias.zero_();
  return m;
}

TEST(Fmt, Algorithm2PairsSwapsOnlyWhenTheCounterfactualIsMoreConfident) {
  nn::Sequential m = HandSetModel();
  // The protected feature (column 1) is overwritten by the pairing.
  at::Tensor rows = torch::tensor({{0.f, 0.3f}, {1.f, 0.f}, {1.5f, 1.f}});
  int64_t swapped = -1;
  auto td = FmtPairs(m, 1, rows, 1, /*both=*/true, &swapped);
  ASSERT_TRUE(td.ok()) << td.status();
  EXPECT_EQ(swapped, 1);
  ASSERT_EQ(td->size(), 6);
  // σ' first, then σ; σ is the more confident member of each pair.
  const at::Tensor want_inputs = torch::tensor({{0.f, 0.f},
                                                {1.f, 0.f},
                                                {1.5f, 1.f},  // swapped
                                                {0.f, 1.f},
                                                {1.f, 1.f},
                                                {1.5f, 0.f}});
  EXPECT_TRUE(torch::equal(td->inputs, want_inputs)) << td->inputs;
  // Y = M's hidden output (after the ReLU) on σ, for both members.
  const at::Tensor y =
      torch::tensor({{0.f, 1.f, 0.f}, {1.f, 1.f, 0.f}, {1.5f, 0.f, 0.f}});
  EXPECT_TRUE(torch::equal(td->references, torch::cat({y, y})))
      << td->references;
  // Each sample's mask is its own group's slice: the criterion is its A.
  EXPECT_TRUE(torch::equal(td->criteria,
                           torch::tensor({0, 0, 1, 1, 1, 0}, torch::kLong)));
  // Labels: M's prediction on σ (favourable when its logit is above 0).
  EXPECT_TRUE(torch::equal(td->labels,
                           torch::tensor({0, 0, 1, 0, 0, 1}, torch::kLong)));
  // Ts holds only σ' of each pair.
  auto ts = FmtPairs(m, 1, rows, 1, /*both=*/false);
  ASSERT_TRUE(ts.ok());
  EXPECT_TRUE(torch::equal(ts->inputs, want_inputs.narrow(0, 0, 3)));
  EXPECT_TRUE(torch::equal(ts->references, y));
  // p = 0: the reference is M's probability of its label on σ.
  auto last = FmtPairs(m, 0, rows, 1, false);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_NEAR(last->references[0][0].item<double>(), 1 / (1 + std::exp(-2.0)),
              1e-6);
  EXPECT_FALSE(FmtPairs(m, 1, rows, 5, true).ok());
}

// A synthetic data set: a categorical column with shares .2/.3/.5, a
// numeric one, a protected 0/1 column and a label.
struct Synthetic {
  TabularSchema schema;
  TabularRows rows;
};
// `mixed`: the label follows the numeric column and the group, P(y = 1) =
// 0.1 + 0.5·z + 0.3·[privileged]: the best classifier predicts favourable
// from z > 0.2 when privileged but only from z > 0.8 when not, so its TPR
// gap is wide while z still carries the signal.
Synthetic MakeSynthetic(int64_t n, uint64_t seed, bool leak = false,
                        bool mixed = false) {
  Synthetic s;
  auto schema = ParseTabularSchema(
      "file: f\ncolumn: colour categorical\ncolumn: size numeric\n"
      "column: group categorical\ncolumn: y categorical\nlabel: y\n"
      "favourable: 1\nprotected: group\nprivileged: group == p\n",
      "synthetic.schema");
  s.schema = *schema;
  auto gen = at::detail::createCPUGenerator(seed);
  const at::Tensor u = torch::rand({n, 4}, gen);
  std::string text;
  for (int64_t i = 0; i < n; ++i) {
    const double c = u[i][0].item<double>(), z = u[i][1].item<double>();
    const bool priv = u[i][2].item<double>() < 0.6;
    const std::string colour = c < 0.2 ? "red" : c < 0.5 ? "green" : "blue";
    const double p_fav = leak ? (priv ? 0.8 : 0.2) : 0.2 + 0.6 * z;
    const double p_mixed = 0.1 + 0.5 * z + (priv ? 0.3 : 0.0);
    const int label =
        u[i][3].item<double>() < (mixed ? p_mixed : p_fav) ? 1 : 0;
    absl::StrAppend(&text, colour, ", ", 10 * z, ", ", priv ? "p" : "u", ", ",
                    label, "\n");
  }
  EXPECT_TRUE(ParseTabularText(s.schema, "group", text, "f", &s.rows).ok());
  return s;
}

TEST(Fmt, GeneratedAttributesFollowTheTrainingMarginals) {
  Synthetic s = MakeSynthetic(3000, 5);
  auto data = EncodeTabular(s.schema, s.rows, {});
  ASSERT_TRUE(data.ok()) << data.status();
  const FeatureBlock* colour = nullptr;
  for (const FeatureBlock& b : data->blocks) {
    if (b.column == "colour") colour = &b;
  }
  ASSERT_NE(colour, nullptr);
  ASSERT_EQ(colour->categories,
            (std::vector<std::string>{"blue", "green", "red"}));
  auto gen = at::detail::createCPUGenerator(9);
  const int64_t n = 10000;
  at::Tensor drawn = DrawAttributes(*data, n, /*uniform=*/false, gen);
  const at::Tensor train_share =
      data->train.x.narrow(1, colour->start, 3).mean(0);
  const at::Tensor drawn_share = drawn.narrow(1, colour->start, 3).mean(0);
  // Bound: 4 standard errors of a share of 10,000 draws (at most 0.02).
  for (int k = 0; k < 3; ++k) {
    const double p = train_share[k].item<double>();
    EXPECT_NEAR(drawn_share[k].item<double>(), p,
                4 * std::sqrt(p * (1 - p) / n))
        << colour->categories[k];
  }
  // Every drawn row is one-hot in the block; the protected feature is 0.
  EXPECT_TRUE(
      torch::equal(drawn.narrow(1, colour->start, 3).sum(1), torch::ones({n})));
  EXPECT_EQ(drawn.select(1, data->protected_feature).abs().sum().item<double>(),
            0.0);
  // Uniform: each category about a third.
  at::Tensor uniform = DrawAttributes(*data, n, /*uniform=*/true, gen);
  const at::Tensor u_share = uniform.narrow(1, colour->start, 3).mean(0);
  for (int k = 0; k < 3; ++k) {
    EXPECT_NEAR(u_share[k].item<double>(), 1.0 / 3, 4 * std::sqrt(2.0 / 9 / n));
  }
}

TEST(Fmt, EncodingIsFittedOnTheTrainingSplit) {
  Synthetic s = MakeSynthetic(500, 6);
  TabularOptions o;
  o.seed = 4;
  auto data = EncodeTabular(s.schema, s.rows, o);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->test.size(), 150);
  EXPECT_EQ(data->validation.size(), 70);
  EXPECT_EQ(data->train.size(), 280);
  EXPECT_EQ(data->features, 3 + 1 + 1);  // one-hot colour, size, group
  const FeatureBlock& size = data->blocks[1];
  ASSERT_EQ(size.column, "size");
  const at::Tensor col = data->train.x.select(1, size.start);
  EXPECT_FLOAT_EQ(col.min().item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(col.max().item<float>(), 1.0f);
  EXPECT_TRUE(torch::equal(
      data->train.x.select(1, data->protected_feature).to(torch::kLong),
      data->train.a));
  // The same seed, the same split; another seed, another one.
  auto again = EncodeTabular(s.schema, s.rows, o);
  EXPECT_TRUE(torch::equal(again->test.x, data->test.x));
  o.seed = 5;
  auto other = EncodeTabular(s.schema, s.rows, o);
  EXPECT_FALSE(torch::equal(other->test.x, data->test.x));
}

// FMT through the one callback on a data set whose label leaks through
// the protected attribute: the phase runs, slices per group, respects the
// guard, and reports.
TEST(Fmt, RunsAsATaskOfTheOneCallback) {
  Synthetic s = MakeSynthetic(2000, 7, /*leak=*/true);
  auto encoded = EncodeTabular(s.schema, s.rows, {});
  ASSERT_TRUE(encoded.ok());
  auto data = std::make_shared<TabularData>(std::move(*encoded));
  nn::Sequential model = ReferenceMlp(data->features, 3);
  FmtOptions fmt;
  fmt.data = data;
  fmt.pipeline.tuner.max_epochs = 5;
  fmt.pipeline.tuner.learning_rates = {1e-3};
  auto task = MakeFmtTask(fmt);
  ASSERT_TRUE(task.ok()) << task.status();
  PostTrainCallbackOptions options;
  options.directory = testing::MakeTempDir("fmt") + "/history";
  options.profiler.every_n_batches = 2;
  PostTrainCallback post(model, std::move(*task), options);
  ASSERT_TRUE(post.OnTrainBegin().ok());
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-2));
  const TabularSplit& train = data->train;
  for (int epoch = 0; epoch < 8; ++epoch) {
    model->train();
    for (int64_t b = 0; b < train.size(); b += 64) {
      const int64_t len = std::min<int64_t>(64, train.size() - b);
      at::Tensor x = train.x.narrow(0, b, len), y = train.y.narrow(0, b, len);
      adam.zero_grad();
      nn::functional::cross_entropy(model->forward(x), y).backward();
      adam.step();
      ASSERT_TRUE(post.OnBatchEnd({x, y}).ok());
    }
    ASSERT_TRUE(post.OnEpochEnd(epoch, {}).ok());
  }
  absl::Status end = post.OnTrainEnd();
  ASSERT_TRUE(end.ok()) << end;
  const PipelineResult* r = post.result();
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->task, "fmt");
  EXPECT_EQ(r->settings.slicer.q, 80);
  ASSERT_EQ(r->slices.size(), 2u);  // one per group
  EXPECT_EQ(r->augmentation.figures.at("T"), 2.0 * train.size());
  EXPECT_LE(r->tune.guard_accuracy_before - r->tune.guard_accuracy_after,
            0.02 + 1e-12);
  // The online profile counted both groups.
  EXPECT_EQ(post.profiler()->profile()->num_criteria(), 2);
  EXPECT_GT(post.profiler()->profile()->criterion_count(0), 0);
  EXPECT_GT(post.profiler()->profile()->criterion_count(1), 0);
  // Variants by name; an unknown one is named.
  EXPECT_TRUE(absl::StrContains(
      MakeFmtTask({"fmt_plus", data, 0, 0, DefaultFmtPipeline()})
          .status()
          .message(),
      "unknown FMT variant 'fmt_plus'"));
}

// The retraining baselines on data whose label leaks through the group (the
// only informative feature): the plain model's SPD is near −0.6 (it
// predicts the group's majority label); reweighing equalizes the weighted
// label rates of the groups, and dropping the column removes the signal,
// so both bring |SPD| down by a wide margin. ROC fitted on the validation
// split keeps its SPD within ±0.05 there.
TEST(FairnessBaselines, RewSuppAndRocLowerTheParityGap) {
  Synthetic s = MakeSynthetic(2000, 8, /*leak=*/true);
  auto data = EncodeTabular(s.schema, s.rows, {});
  ASSERT_TRUE(data.ok()) << data.status();
  TabularTrainOptions train;
  nn::Sequential plain = ReferenceMlp(data->features, 1);
  ASSERT_TRUE(TrainTabular(plain, data->train, train).ok());
  auto m_plain = EvaluateTabular(plain, data->test);
  ASSERT_TRUE(m_plain.ok()) << m_plain.status();
  EXPECT_GT(m_plain->abs_spd(), 0.5);

  nn::Sequential rew = ReferenceMlp(data->features, 1);
  ASSERT_TRUE(TrainReweighed(rew, *data, train).ok());
  auto m_rew = EvaluateTabular(rew, data->test);
  ASSERT_TRUE(m_rew.ok());
  EXPECT_LT(m_rew->abs_spd(), m_plain->abs_spd() - 0.4);

  const TabularSplit supp_train =
      DropProtected(data->train, data->protected_feature);
  EXPECT_EQ(supp_train.x.size(1), data->features - 1);
  nn::Sequential supp = ReferenceMlp(data->features - 1, 1);
  ASSERT_TRUE(TrainTabular(supp, supp_train, train).ok());
  auto m_supp =
      EvaluateTabular(supp, DropProtected(data->test, data->protected_feature));
  ASSERT_TRUE(m_supp.ok());
  EXPECT_LT(m_supp->abs_spd(), m_plain->abs_spd() - 0.4);

  auto p_val = FavourableProbability(plain, data->validation.x);
  ASSERT_TRUE(p_val.ok());
  std::vector<int64_t> y(data->validation.size()), a(data->validation.size());
  for (int64_t i = 0; i < data->validation.size(); ++i) {
    y[i] = data->validation.y[i].item<int64_t>();
    a[i] = data->validation.a[i].item<int64_t>();
  }
  auto roc = FitRejectOption(*p_val, y, a);
  ASSERT_TRUE(roc.ok());
  EXPECT_TRUE(roc->feasible);
  EXPECT_LE(std::fabs(roc->spd), 0.05);
  // Weights of another length are refused.
  EXPECT_FALSE(TrainTabular(plain, data->train, train, {1.0, 2.0}).ok());
}

// ADV on data where the label follows a numeric column and, less, the
// group: the plain model uses both, so its TPR gap is wide. The adversary
// (equalized-odds form) sees the score and the label and predicts the
// group; the classifier's gradient is turned away from what helps it.
// |EOD| falls by a wide margin while the model stays far better than the
// constant predictor (so the drop is not a collapse).
TEST(FairnessBaselines, AdversarialDebiasingLowersTheEodGap) {
  Synthetic s = MakeSynthetic(3000, 8, /*leak=*/false, /*mixed=*/true);
  auto data = EncodeTabular(s.schema, s.rows, {});
  ASSERT_TRUE(data.ok()) << data.status();
  TabularTrainOptions train;
  nn::Sequential plain = ReferenceMlp(data->features, 1);
  ASSERT_TRUE(TrainTabular(plain, data->train, train).ok());
  auto m_plain = EvaluateTabular(plain, data->test);
  ASSERT_TRUE(m_plain.ok());
  const double majority =
      std::max(data->test.y.to(torch::kDouble).mean().item<double>(),
               1 - data->test.y.to(torch::kDouble).mean().item<double>());
  EXPECT_GT(m_plain->accuracy, majority + 0.1);
  EXPECT_GT(m_plain->abs_eod(), 0.3);

  AdversarialDebiasingOptions adv;
  adv.train = train;
  nn::Sequential fair = ReferenceMlp(data->features, 1);
  auto r = TrainAdversarialDebiasing(fair, data->train, adv);
  ASSERT_TRUE(r.ok()) << r.status();
  auto m_adv = EvaluateTabular(fair, data->test);
  ASSERT_TRUE(m_adv.ok());
  EXPECT_LT(m_adv->abs_eod(), m_plain->abs_eod() - 0.15)
      << "plain " << m_plain->abs_eod() << " ADV " << m_adv->abs_eod();
  EXPECT_GT(m_adv->accuracy, majority + 0.05) << m_adv->accuracy;
  EXPECT_EQ(r->epochs, TrainingEpochs(train, data->train.size()));
  EXPECT_TRUE(absl::StrContains(r->Describe(adv), "\"adversary_weight\": 0.1"));
  // The same seed, the same model (the adversary's start is seeded too).
  nn::Sequential again = ReferenceMlp(data->features, 1);
  torch::manual_seed(12345);  // the global stream must not matter
  ASSERT_TRUE(TrainAdversarialDebiasing(again, data->train, adv).ok());
  EXPECT_TRUE(torch::equal(again->parameters()[0], fair->parameters()[0]));
  // A negative weight is refused.
  adv.adversary_weight = -1;
  EXPECT_FALSE(TrainAdversarialDebiasing(fair, data->train, adv).ok());
}

// CARE's localization on a hand-built model: inputs (f, a); hidden unit 0
// copies f, unit 1 copies a; the favourable logit is h0 + 2·h1 − 1. Fixing
// unit 1 makes both members of every pair equal (D = 0 for every value),
// fixing unit 0 leaves the gap: unit 1 has the larger effect.
TEST(FairnessBaselines, CareLocalizesTheUnitCarryingTheAttribute) {
  nn::Sequential m(nn::Linear(2, 2), nn::ReLU(), nn::Linear(2, 2));
  {
    torch::NoGradGuard g;
    m[0]->as<nn::Linear>()->weight.copy_(torch::eye(2));
    m[0]->as<nn::Linear>()->bias.zero_();
    m[2]->as<nn::Linear>()->weight.copy_(
        torch::tensor({{0.f, 0.f}, {1.f, 2.f}}));
    m[2]->as<nn::Linear>()->bias.copy_(torch::tensor({0.f, -1.f}));
  }
  auto gen = at::detail::createCPUGenerator(4);
  TabularSplit split;
  split.a = torch::randint(0, 2, {200}, gen, torch::kLong);
  split.x =
      torch::stack({torch::rand({200}, gen), split.a.to(torch::kFloat)}, 1);
  split.y = split.a.clone();
  CareOptions care;
  care.neurons = 2;
  care.iterations = 0;  // localization only; the swarm is its start
  auto r = RepairWithCare(m, split, 1, care);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->neurons.size(), 2u);
  EXPECT_EQ(r->neurons[0].module, 1);
  EXPECT_EQ(r->neurons[0].unit, 1);
  EXPECT_GT(r->neurons[0].effect, 2 * r->neurons[1].effect)
      << r->Describe(care);
  // Its effect is D itself: every intervention on unit 1 closes the gap.
  double d = 0;
  {
    torch::NoGradGuard g;
    const at::Tensor f = split.x.select(1, 0);
    d = (torch::sigmoid(f + 1) - torch::sigmoid(f - 1))
            .abs()
            .mean()
            .item<double>();
  }
  EXPECT_NEAR(r->neurons[0].effect, d, 1e-5);
}

// CARE on the leaking data: the label-flip share U of the plain model is
// near 1 (its prediction is the group); the repair lowers the fitness and
// U, changes only the kept neurons' rows, and its reported U is the
// model's.
TEST(FairnessBaselines, CareLowersItsFairnessFitness) {
  Synthetic s = MakeSynthetic(2000, 8, /*leak=*/true);
  auto data = EncodeTabular(s.schema, s.rows, {});
  ASSERT_TRUE(data.ok()) << data.status();
  nn::Sequential model = ReferenceMlp(data->features, 1);
  ASSERT_TRUE(TrainTabular(model, data->train, {}).ok());
  std::vector<at::Tensor> before;
  for (const at::Tensor& p : model->parameters()) before.push_back(p.clone());
  CareOptions care;
  care.alpha = 0.5;
  auto r = RepairWithCare(model, data->train, data->protected_feature, care);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->unfair_before, 0.5);
  EXPECT_LT(r->fitness_after, r->fitness_before - 0.1) << r->Describe(care);
  EXPECT_LT(r->unfair_after, r->unfair_before - 0.3) << r->Describe(care);
  ASSERT_EQ(r->neurons.size(), 4u);
  for (size_t i = 1; i < r->neurons.size(); ++i) {
    EXPECT_GE(r->neurons[i - 1].effect, r->neurons[i].effect);
  }
  EXPECT_EQ(r->evaluations, care.particles * (care.iterations + 1));
  auto u = CounterfactualFlipRate(model, data->train.x.narrow(0, 0, r->rows),
                                  data->protected_feature);
  ASSERT_TRUE(u.ok());
  EXPECT_DOUBLE_EQ(*u, r->unfair_after);
  // Only the kept neurons' incoming rows and biases moved.
  std::vector<at::Tensor> after = model->parameters();
  int64_t moved = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    const at::Tensor diff = after[i].ne(before[i]);
    if (after[i].dim() == 2) {
      moved += diff.any(1).sum().item<int64_t>();
    }
  }
  EXPECT_GE(moved, 1);
  EXPECT_LE(moved, 4);
  // A model with no hidden ReLU is refused, naming why.
  nn::Sequential linear(nn::Linear(data->features, 2));
  EXPECT_TRUE(absl::StrContains(
      RepairWithCare(linear, data->train, data->protected_feature, care)
          .status()
          .message(),
      "no ReLU"));
}

}  // namespace
}  // namespace posttrain

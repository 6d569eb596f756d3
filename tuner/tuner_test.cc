#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "absl/strings/match.h"
#include "common/module_state.h"
#include "slicer/profile.h"
#include "slicer/slicer.h"
#include "tuner/masked_tuner.h"
#include "tuner/regression_view.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

// Three Gaussian blobs in 4-D, labels 0..2.
struct Blobs {
  at::Tensor x, y;
};
Blobs MakeBlobs(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  at::Tensor y = torch::randint(0, 3, {n}, gen, torch::kLong);
  at::Tensor centers =
      torch::tensor({{2., 0., 0., 1.}, {0., 2., 0., -1.}, {0., 0., 2., 0.}});
  at::Tensor x = centers.index_select(0, y) + 0.6 * torch::randn({n, 4}, gen);
  return {x.to(torch::kFloat), y};
}

nn::Sequential TrainedMlp(const Blobs& d) {
  torch::manual_seed(1);
  nn::Sequential m(nn::Linear(4, 16), nn::ReLU(), nn::Linear(16, 8), nn::ReLU(),
                   nn::Linear(8, 3));
  torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(1e-2));
  for (int step = 0; step < 150; ++step) {
    opt.zero_grad();
    nn::functional::cross_entropy(m->forward(d.x), d.y).backward();
    opt.step();
  }
  for (auto& p : m->parameters()) p.mutable_grad() = at::Tensor();
  return m;
}

TEST(RegressionView, TruncatesAtTheRightLayer) {
  nn::Sequential mlp(nn::Linear(4, 16), nn::ReLU(), nn::Linear(16, 8),
                     nn::ReLU(), nn::Linear(8, 3));
  auto m = RegressionView::Create(mlp);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->end(), 4);  // up to the ReLU after Linear "2"
  EXPECT_EQ(m->target(), 1);
  EXPECT_EQ(m->outputs(), 8);
  at::Tensor x = torch::rand({5, 4});
  at::Tensor expected = mlp[3]->as<nn::ReLU>()->forward(
      mlp[2]->as<nn::Linear>()->forward(mlp[1]->as<nn::ReLU>()->forward(
          mlp[0]->as<nn::Linear>()->forward(x))));
  EXPECT_TRUE(torch::equal(*m->Forward(x), expected));
  auto p2 = RegressionView::Create(mlp, 2);
  EXPECT_EQ(p2->end(), 2);
  EXPECT_EQ(p2->outputs(), 16);
  EXPECT_FALSE(RegressionView::Create(mlp, 3).ok());
  EXPECT_FALSE(RegressionView::Create(mlp, -1).ok());
  // p = 0: the whole model; the softmax probability of the true class.
  auto p0 = RegressionView::Create(mlp, 0);
  at::Tensor y = torch::tensor({0, 2, 1, 1, 0}, torch::kLong);
  at::Tensor prob = *p0->Forward(x, y);
  EXPECT_TRUE(
      torch::allclose(prob.reshape({-1}), torch::softmax(mlp->forward(x), 1)
                                              .gather(1, y.reshape({-1, 1}))
                                              .reshape({-1})));
  EXPECT_FALSE(p0->Forward(x).ok());  // labels needed

  // The example CNN: the output of the ReLU after Linear 1568→64.
  nn::Sequential cnn(nn::Conv2d(nn::Conv2dOptions(1, 16, 3).padding(1)),
                     nn::BatchNorm2d(16), nn::ReLU(), nn::MaxPool2d(2),
                     nn::Conv2d(nn::Conv2dOptions(16, 32, 3).padding(1)),
                     nn::BatchNorm2d(32), nn::ReLU(), nn::MaxPool2d(2),
                     nn::Flatten(), nn::Linear(32 * 7 * 7, 64), nn::ReLU(),
                     nn::Linear(64, 10));
  auto c = RegressionView::Create(cnn);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->end(), 11);
  EXPECT_EQ(c->outputs(), 64);
  EXPECT_EQ(c->target(), 2);
  // p = 2 ends at the second conv block, which feeds the Flatten: 32
  // channels x 49 positions.
  auto c2 = RegressionView::Create(cnn, 2);
  EXPECT_EQ(c2->end(), 9);
  EXPECT_EQ(c2->outputs(), 32 * 49);
  EXPECT_EQ(c2->per_neuron(), 49);

  // A model ending in Dropout: the Dropout has no parameters and is not a
  // weighted layer, so p = 1 still ends after the first Linear's ReLU.
  nn::Sequential drop(nn::Linear(4, 8), nn::ReLU(), nn::Dropout(0.5),
                      nn::Linear(8, 3), nn::Dropout(0.2));
  auto d = RegressionView::Create(drop);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->end(), 3);
  EXPECT_EQ(d->outputs(), 8);
  EXPECT_EQ(d->layer_names(), (std::vector<std::string>{"0", "1", "2"}));
}

// Slices of the blobs MLP at q = 50, one per class.
std::vector<Slice> HalfSlices(nn::Sequential& m, const Blobs& d) {
  auto view = ModelView::Create(m);
  auto profile = ProfileModel(m, d.x, d.y, 3);
  SliceOptions options;
  options.q = 50;
  return *SliceCriteria(*view, *profile, d.x, d.y, {0, 1, 2}, options);
}

TEST(MaskedTuner, MixedBatchGradientsEqualEachCriterionApart) {
  Blobs d = MakeBlobs(90, 3);
  nn::Sequential m = TrainedMlp(d);
  auto view = RegressionView::Create(m);
  auto masks = MasksFromSlices(*view, HalfSlices(m, d));
  ASSERT_TRUE(masks.ok()) << masks.status();
  at::Tensor refs = torch::rand({90, 8});
  TrainableParameters params = Trainable(*view);
  ASSERT_TRUE(MaskedBackward(*view, *masks, d.x, refs, d.y).ok());
  std::vector<at::Tensor> mixed;
  for (const auto& p : params.all()) mixed.push_back(p.grad().clone());
  // Apart: each class's samples alone, plain backward into .grad, masked by
  // hand and weighted by the class's share.
  std::vector<at::Tensor> apart;
  for (const auto& p : params.all()) apart.push_back(torch::zeros_like(p));
  for (int64_t c = 0; c < 3; ++c) {
    at::Tensor rows = d.y.eq(c).nonzero().reshape({-1});
    for (auto& p : params.all()) p.mutable_grad() = at::Tensor();
    // Eq. 8 written out: mean over the class's samples of the masked MSE.
    at::Tensor y = *view->Forward(d.x.index_select(0, rows));
    at::Tensor om = (*masks)[c].output;
    at::Tensor loss =
        (((y - refs.index_select(0, rows)).pow(2) * om).sum(1) / om.sum())
            .mean();
    loss.backward();
    size_t j = 0;
    for (size_t k = 0; k < params.weight.size(); ++k) {
      apart[j] += params.weight[k].grad() * (*masks)[c].weight[k] *
                  (rows.numel() / 90.0);
      ++j;
      apart[j] +=
          params.bias[k].grad() * (*masks)[c].bias[k] * (rows.numel() / 90.0);
      ++j;
    }
  }
  for (size_t j = 0; j < mixed.size(); ++j) {
    EXPECT_TRUE(torch::allclose(mixed[j], apart[j], 1e-5, 1e-7)) << j;
    EXPECT_GT(mixed[j].abs().sum().item<double>(), 0) << j;
  }
}

TEST(MaskedTuner, MaskedWeightsStayBitIdenticalThroughAdamAndWeightDecay) {
  Blobs d = MakeBlobs(300, 4);
  nn::Sequential m = TrainedMlp(d);
  NamedTensors original = *CopyModuleState(*m);
  std::vector<Slice> slices = HalfSlices(m, d);
  auto view = RegressionView::Create(m);
  // References: the current outputs, moved, so tuning has work to do.
  at::Tensor refs;
  {
    torch::NoGradGuard g;
    refs = *view->Forward(d.x) * 1.3 + 0.1;
  }
  TuningData train{d.x.slice(0, 0, 240), refs.slice(0, 0, 240),
                   d.y.slice(0, 0, 240), d.y.slice(0, 0, 240)};
  TuningData val{d.x.slice(0, 240), refs.slice(0, 240), d.y.slice(0, 240),
                 d.y.slice(0, 240)};
  TunerOptions options;
  options.learning_rates = {1e-2};
  options.max_epochs = 5;
  options.weight_decay = 0.1;
  options.max_accuracy_drop = 1.0;  // accept whatever happens
  auto report = TuneModel(m, slices, train, val, {d.x, d.y}, options);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_TRUE(report->accepted) << report->reason;
  EXPECT_LT(report->validation_loss_after, report->validation_loss_before);
  NamedTensors tuned = *CopyModuleState(*m);
  // Layer "0" weight, "0" bias, "2" weight, "2" bias; "4" is above M_T.
  int64_t frozen = 0, moved = 0;
  for (size_t i = 0; i < tuned.size(); ++i) {
    const std::string& name = tuned[i].name;
    const at::Tensor& a = original[i].tensor;
    const at::Tensor& b = tuned[i].tensor;
    if (absl::StartsWith(name, "4.")) {
      EXPECT_TRUE(torch::equal(a, b)) << name;
      continue;
    }
    const int k = absl::StartsWith(name, "0.") ? 0 : 1;
    const bool is_bias = absl::EndsWith(name, "bias");
    at::Tensor any = torch::zeros_like(a, torch::kBool);
    for (const Slice& s : slices) {
      any |= is_bias ? s.layers[k].neuron_mask : s.layers[k].synapse_mask;
    }
    at::Tensor outside = any.logical_not();
    frozen += outside.sum().item<int64_t>();
    // Bit-identical outside every mask.
    EXPECT_TRUE(
        torch::equal(a.masked_select(outside), b.masked_select(outside)))
        << name;
    moved += a.ne(b).logical_and(any).sum().item<int64_t>();
  }
  EXPECT_GT(frozen, 20);
  EXPECT_GT(moved, 20);
}

TEST(MaskedTuner, SyncIsBitExact) {
  Blobs d = MakeBlobs(60, 5);
  nn::Sequential m = TrainedMlp(d);
  auto copy = CopyModel(m);
  ASSERT_TRUE(copy.ok()) << copy.status();
  {
    torch::NoGradGuard g;
    for (auto& p : (*copy)->parameters()) p.add_(torch::randn_like(p));
  }
  NamedTensors before = *CopyModuleState(*m);
  ASSERT_TRUE(SyncLayers(**copy, *m, {"0", "1", "2"}).ok());
  NamedTensors after = *CopyModuleState(*m);
  NamedTensors source = *CopyModuleState(**copy);
  for (size_t i = 0; i < after.size(); ++i) {
    const bool synced = !absl::StartsWith(after[i].name, "4.");
    EXPECT_TRUE(torch::equal(after[i].tensor,
                             synced ? source[i].tensor : before[i].tensor))
        << after[i].name;
  }
  // A mismatched model is refused before anything is copied.
  nn::Sequential other(nn::Linear(4, 5), nn::ReLU(), nn::Linear(5, 8));
  NamedTensors other_before = *CopyModuleState(*other);
  absl::Status s = SyncLayers(*m, *other, {"0", "2"});
  EXPECT_TRUE(absl::StrContains(s.message(), "'0.weight'")) << s;
  NamedTensors other_after = *CopyModuleState(*other);
  for (size_t i = 0; i < other_after.size(); ++i) {
    EXPECT_TRUE(torch::equal(other_before[i].tensor, other_after[i].tensor));
  }
}

TEST(MaskedTuner, GuardKeepsTheOriginalWhenAccuracyDrops) {
  Blobs d = MakeBlobs(300, 6);
  nn::Sequential m = TrainedMlp(d);
  NamedTensors original = *CopyModuleState(*m);
  // Nonsense references: fitting them wrecks the hidden layer.
  at::Tensor refs = torch::rand({300, 8}) * 20;
  TuningData train{d.x.slice(0, 0, 240), refs.slice(0, 0, 240),
                   torch::zeros({240}, torch::kLong), d.y.slice(0, 0, 240)};
  TuningData val{d.x.slice(0, 240), refs.slice(0, 240),
                 torch::zeros({60}, torch::kLong), d.y.slice(0, 240)};
  TunerOptions options;
  options.learning_rates = {1e-1, 1e-2};
  options.max_epochs = 10;
  auto report = TuneModel(m, {}, train, val, {d.x, d.y}, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->accepted);
  EXPECT_TRUE(absl::StrContains(report->reason, "guard accuracy"))
      << report->reason;
  ASSERT_EQ(report->trials.size(), 2u);
  EXPECT_FALSE(report->trials[0].passes_guard);
  EXPECT_GT(report->guard_accuracy_before, 0.9);
  NamedTensors after = *CopyModuleState(*m);
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_TRUE(torch::equal(after[i].tensor, original[i].tensor))
        << after[i].name;
  }
  // Bad inputs are named.
  TuningData empty;
  auto bad = TuneModel(m, {}, empty, val, {d.x, d.y}, options);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "training set"))
      << bad.status();
}

// Every optimizer step changes only entries inside the masks of its own
// batch's criterion: the restore after the Adam step (momentum and weight
// decay would move every entry) uses that criterion's masks. Checked step
// by step through TunerOptions::on_step, so a restore with another
// criterion's masks (or their union) fails here.
TEST(MaskedTuner, EveryStepChangesOnlyItsOwnCriterionsMask) {
  Blobs d = MakeBlobs(300, 4);
  nn::Sequential m = TrainedMlp(d);
  std::vector<Slice> slices = HalfSlices(m, d);
  auto view = RegressionView::Create(m);
  auto masks = MasksFromSlices(*view, slices);
  ASSERT_TRUE(masks.ok()) << masks.status();
  at::Tensor refs;
  {
    torch::NoGradGuard g;
    refs = *view->Forward(d.x) * 1.3 + 0.1;
  }
  TuningData train{d.x.slice(0, 0, 240), refs.slice(0, 0, 240),
                   d.y.slice(0, 0, 240), d.y.slice(0, 0, 240)};
  TuningData val{d.x.slice(0, 240), refs.slice(0, 240), d.y.slice(0, 240),
                 d.y.slice(0, 240)};
  // Masks aligned with TrainableParameters::all(): weight, bias per layer.
  const TrainableParameters original = Trainable(*view);
  std::vector<std::vector<at::Tensor>> aligned(masks->size());
  for (size_t c = 0; c < masks->size(); ++c) {
    for (size_t k = 0; k < original.weight.size(); ++k) {
      aligned[c].push_back((*masks)[c].weight[k]);
      if (original.bias[k].defined()) aligned[c].push_back((*masks)[c].bias[k]);
    }
  }
  std::vector<at::Tensor> prev;
  for (const at::Tensor& p : original.all()) prev.push_back(p.detach().clone());
  int64_t steps = 0, moved_inside = 0, outside_criterion_0 = 0;
  std::set<int64_t> criteria_seen;
  TunerOptions options;
  options.learning_rates = {1e-2};
  options.max_epochs = 3;
  options.weight_decay = 0.1;
  options.max_accuracy_drop = 1.0;
  options.on_step = [&](const TuneStep& step) {
    ++steps;
    criteria_seen.insert(step.criterion);
    const std::vector<at::Tensor> now = step.params->all();
    ASSERT_EQ(now.size(), prev.size());
    for (size_t j = 0; j < now.size(); ++j) {
      const at::Tensor changed = now[j].detach().ne(prev[j]);
      const at::Tensor mask = aligned[step.criterion][j];
      EXPECT_EQ(changed.logical_and(mask.logical_not()).sum().item<int64_t>(),
                0)
          << "step " << steps << " of criterion " << step.criterion
          << " moved entries outside its masks (tensor " << j << ")";
      moved_inside += changed.logical_and(mask).sum().item<int64_t>();
      outside_criterion_0 += changed.logical_and(aligned[0][j].logical_not())
                                 .sum()
                                 .item<int64_t>();
      prev[j] = now[j].detach().clone();
    }
  };
  auto report = TuneModel(m, slices, train, val, {d.x, d.y}, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(criteria_seen, (std::set<int64_t>{0, 1, 2}));
  EXPECT_GT(steps, 3);
  EXPECT_GT(moved_inside, 100);
  // The criteria's masks differ, so some steps move entries that criterion
  // 0's mask freezes: a restore with criterion 0's masks would fail.
  EXPECT_GT(outside_criterion_0, 0);
}

// Successive halving over scripted candidates: losses per lr and epoch are
// given, so the schedule, the eliminations and the winner are known.
// Grid of 5, min 1 epoch, factor 3: all 5 run 1 epoch, the best 2 run to 3,
// the best of those runs to max_epochs (6).
TEST(SuccessiveHalving,
     RunsTheScheduleAndFallsBackWhenTheSurvivorFailsTheGuard) {
  const std::vector<double> lrs = {1, 2, 3, 4, 5};
  // loss[lr index][epoch - 1]; the loss before any epoch is 10.
  const std::vector<std::vector<double>> loss = {
      {9.0, 8.0, 7.0, 6.0, 5.0, 4.0},  // slow start, best at the end
      {8.0, 7.9, 7.8, 7.7, 7.6, 7.5},  // second after epoch 1
      {9.5, 9.4, 9.3, 9.2, 9.1, 9.0},
      {7.0, 3.0, 2.5, 2.0, 1.5, 1.0},  // best after epoch 1 and after 3
      {9.9, 9.8, 9.7, 9.6, 9.5, 9.4},
  };
  for (const bool survivor_fails : {false, true}) {
    nn::Sequential model(nn::Linear(1, 1));
    std::vector<int> epochs_seen(lrs.size(), 0);
    auto make = [&](nn::Sequential& copy,
                    double lr) -> absl::StatusOr<LearningRateCandidate> {
      const size_t i = static_cast<size_t>(lr) - 1;
      LearningRateCandidate c;
      auto ran = std::make_shared<int>(0);
      c.train_epoch = [&, i, ran, copy](int epoch) -> absl::Status {
        EXPECT_EQ(epoch, *ran + 1);
        *ran = epoch;
        ++epochs_seen[i];
        torch::NoGradGuard g;
        copy->ptr(0)->as<nn::Linear>()->weight.fill_(
            static_cast<double>(10 * (i + 1) + epoch));  // encodes lr and epoch
        return absl::OkStatus();
      };
      c.validation_loss = [&, i, ran]() -> absl::StatusOr<double> {
        return *ran == 0 ? 10.0 : loss[i][*ran - 1];
      };
      return c;
    };
    // The guard: the original weight passes; lr 4's models fail when asked.
    ModelMetric guard = [&](const nn::Sequential& m) -> absl::StatusOr<double> {
      const double w = m->ptr(0)->as<nn::Linear>()->weight.item<double>();
      return survivor_fails && w > 40 && w < 50 ? 0.0 : 1.0;
    };
    TunerOptions options;
    options.learning_rates = lrs;
    options.max_epochs = 6;
    options.patience = 10;
    options.search = TunerOptions::Search::kSuccessiveHalving;
    options.halving_min_epochs = 1;
    options.halving_factor = 3;
    auto report = SearchLearningRates(model, guard, options, {"0"}, make);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(epochs_seen, (std::vector<int>{1, 3, 1, 6, 1}));
    EXPECT_EQ(report->epochs_run, 12);
    ASSERT_EQ(report->trials.size(), lrs.size());
    for (size_t i = 0; i < lrs.size(); ++i) {
      EXPECT_EQ(report->trials[i].lr, lrs[i]);
      EXPECT_EQ(report->trials[i].epochs, epochs_seen[i]) << i;
      EXPECT_EQ(report->trials[i].eliminated, i != 3) << i;
    }
    const double w = model->ptr(0)->as<nn::Linear>()->weight.item<double>();
    ASSERT_TRUE(report->accepted) << report->reason;
    if (!survivor_fails) {
      // lr 4 at its best epoch, 6.
      EXPECT_EQ(report->lr, 4.0);
      EXPECT_EQ(report->best_epoch, 6);
      EXPECT_EQ(w, 46);
    } else {
      // lr 4 fails the guard: the lowest loss among the rest is lr 2's 7.8
      // after 3 epochs (lr 1's 9.0 after its one).
      EXPECT_FALSE(report->trials[3].passes_guard);
      EXPECT_EQ(report->lr, 2.0);
      EXPECT_EQ(report->best_epoch, 3);
      EXPECT_EQ(w, 23);
    }
  }
  // Bad settings are named.
  nn::Sequential model(nn::Linear(1, 1));
  TunerOptions bad;
  bad.search = TunerOptions::Search::kSuccessiveHalving;
  bad.halving_factor = 1;
  auto r = SearchLearningRates(
      model, [](const nn::Sequential&) { return absl::StatusOr<double>(1.0); },
      bad, {"0"},
      [](nn::Sequential&, double) -> absl::StatusOr<LearningRateCandidate> {
        return absl::InternalError("not reached");
      });
  EXPECT_TRUE(absl::StrContains(r.status().message(), "halving_factor"))
      << r.status();
}

// On a real tuning run, halving's epochs for the lr it keeps are the grid
// search's: when both pick the same lr, the tuned weights are bit-identical,
// with fewer epochs run in all.
TEST(SuccessiveHalving, SameWinnerAsTheGridGivesBitIdenticalWeights) {
  Blobs d = MakeBlobs(300, 4);
  std::vector<Slice> slices;
  TuningData train, val;
  {
    nn::Sequential m = TrainedMlp(d);
    slices = HalfSlices(m, d);
    auto view = RegressionView::Create(m);
    at::Tensor refs;
    {
      torch::NoGradGuard g;
      refs = *view->Forward(d.x) * 1.3 + 0.1;
    }
    train = {d.x.slice(0, 0, 240), refs.slice(0, 0, 240), d.y.slice(0, 0, 240),
             d.y.slice(0, 0, 240)};
    val = {d.x.slice(0, 240), refs.slice(0, 240), d.y.slice(0, 240),
           d.y.slice(0, 240)};
  }
  TunerOptions options;
  options.learning_rates = {1e-4, 1e-2, 1e-6};
  options.max_epochs = 8;
  options.max_accuracy_drop = 1.0;
  nn::Sequential by_grid = TrainedMlp(d);
  auto grid = TuneModel(by_grid, slices, train, val, {d.x, d.y}, options);
  ASSERT_TRUE(grid.ok()) << grid.status();
  options.search = TunerOptions::Search::kSuccessiveHalving;
  options.halving_min_epochs = 2;
  nn::Sequential by_halving = TrainedMlp(d);
  auto halving = TuneModel(by_halving, slices, train, val, {d.x, d.y}, options);
  ASSERT_TRUE(halving.ok()) << halving.status();
  ASSERT_TRUE(grid->accepted && halving->accepted);
  EXPECT_EQ(grid->lr, 1e-2);
  EXPECT_EQ(halving->lr, grid->lr);
  EXPECT_EQ(halving->best_epoch, grid->best_epoch);
  EXPECT_EQ(halving->validation_loss_after, grid->validation_loss_after);
  EXPECT_LT(halving->epochs_run, grid->epochs_run);
  EXPECT_EQ(halving->trials[0].epochs, 2);
  EXPECT_TRUE(halving->trials[0].eliminated);
  EXPECT_EQ(halving->trials[2].epochs, 2);
  EXPECT_FALSE(halving->trials[1].eliminated);
  EXPECT_EQ(halving->trials[1].epochs, grid->trials[1].epochs);
  NamedTensors a = *CopyModuleState(*by_grid);
  NamedTensors b = *CopyModuleState(*by_halving);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].tensor, b[i].tensor)) << a[i].name;
  }
}

}  // namespace
}  // namespace posttrain

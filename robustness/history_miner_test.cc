#include "robustness/history_miner.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "absl/strings/match.h"
#include "common/model_spec.h"
#include "common/module_state.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

// Linear "0" (2→2, no bias) → ReLU → Linear "2" = identity, so the logits
// are relu(W x) and the regression output (p = 1, the ReLU) equals them.
// For the inputs (1, 0) and (0, 1) the logits are W's columns.
nn::Sequential Model(const std::vector<double>& col0,
                     const std::vector<double>& col1) {
  nn::Sequential m(nn::Linear(nn::LinearOptions(2, 2).bias(false)), nn::ReLU(),
                   nn::Linear(nn::LinearOptions(2, 2).bias(false)));
  torch::NoGradGuard g;
  m[0]->as<nn::Linear>()->weight.copy_(
      torch::tensor({{col0[0], col1[0]}, {col0[1], col1[1]}}));
  m[2]->as<nn::Linear>()->weight.copy_(torch::eye(2));
  return m;
}

// Samples: s0 = (1, 0) label 0; s1 = (0, 1) label 0; s2 = (0, 1) label 1.
// conf = P(label) when the argmax is the label, else 0; σ(d) = 1/(1+e^-d).
//   final M:  col0 (1, 0), col1 (0, 1): s0 σ(1)=.73, s1 0 (wrong), s2 .73
//   epoch 0:  col0 (5, 0), col1 (0, 0)  -- not visited: t = 3, the latest
//             ceil(3/2) = 2 epochs are 1 and 2
//   epoch 1:  col0 (2, 0), col1 (3, 0): s0 σ(2)=.88 > .73 -> epoch 1;
//             s1 σ(3)=.95 > 0 -> epoch 1; s2 wrong
//   epoch 2:  col0 (2, 0), col1 (0, .5): s0 .88, not strictly above .88 ->
//             stays epoch 1; s1 wrong; s2 σ(.5)=.62 < .73 (M) -> dropped
// T = {s0, s1}, both from epoch 1, references = epoch 1's relu outputs
// (2, 0) and (3, 0).
TEST(HistoryMiner, HandMadeHistoryPicksTheExpectedEpochs) {
  const std::string dir = testing::MakeTempDir("miner") + "/history";
  const std::vector<std::vector<std::vector<double>>> epochs = {
      {{5, 0}, {0, 0}}, {{2, 0}, {3, 0}}, {{2, 0}, {0, 0.5}}};
  {
    nn::Sequential m = Model({1, 0}, {0, 1});
    auto store = HistoryStore::Open(dir, {}, *DescribeSequential(m));
    ASSERT_TRUE(store.ok()) << store.status();
    for (int e = 0; e < 3; ++e) {
      nn::Sequential snapshot = Model(epochs[e][0], epochs[e][1]);
      EpochMetadata meta;
      meta.epoch = e;
      ASSERT_TRUE((*store)->Append(meta, *CopyModuleState(*snapshot)).ok());
    }
  }
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  nn::Sequential model = Model({1, 0}, {0, 1});
  at::Tensor x = torch::tensor({{1., 0.}, {0., 1.}, {0., 1.}});
  at::Tensor y = torch::tensor({0, 0, 1}, torch::kLong);
  auto mined = MineHistory(model, **store, x, y, {});
  ASSERT_TRUE(mined.ok()) << mined.status();
  EXPECT_EQ(mined->epochs, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(mined->candidates, 3);
  ASSERT_EQ(mined->data.size(), 2);
  EXPECT_TRUE(torch::equal(mined->data.inputs, x.slice(0, 0, 2)));
  EXPECT_TRUE(torch::equal(mined->data.labels, y.slice(0, 0, 2)));
  EXPECT_TRUE(torch::equal(mined->data.criteria, y.slice(0, 0, 2)));
  EXPECT_TRUE(torch::equal(mined->data.references,
                           torch::tensor({{2.f, 0.f}, {3.f, 0.f}})))
      << mined->data.references;
  EXPECT_EQ(mined->chosen, (std::map<int64_t, int64_t>{{1, 2}}));
  EXPECT_NEAR(mined->ratio(), 2.0 / 3.0, 1e-12);

  // p = 0: references are the history model's true-class probability.
  MinerOptions last;
  last.p = 0;
  auto probs = MineHistory(model, **store, x, y, last);
  ASSERT_TRUE(probs.ok()) << probs.status();
  ASSERT_EQ(probs->data.size(), 2);
  EXPECT_NEAR(probs->data.references[0][0].item<double>(),
              1 / (1 + std::exp(-2.0)), 1e-6);
  EXPECT_NEAR(probs->data.references[1][0].item<double>(),
              1 / (1 + std::exp(-3.0)), 1e-6);

  // Errors name the problem.
  EXPECT_FALSE(MineHistory(model, **store, x, y.slice(0, 0, 2), {}).ok());
  nn::Sequential other(nn::Linear(2, 3), nn::ReLU(), nn::Linear(3, 2));
  auto wrong = MineHistory(other, **store, x, y, {});
  EXPECT_TRUE(absl::StrContains(wrong.status().message(), "epoch 1"))
      << wrong.status();
}

// t = 2: only the last epoch is mined, and it is M itself, which can never
// be strictly more confident than M: T is empty (not an error).
TEST(HistoryMiner, AHistoryOfOnlyTheFinalModelGivesAnEmptySet) {
  const std::string dir = testing::MakeTempDir("miner_short") + "/history";
  nn::Sequential model = Model({1, 0}, {0, 1});
  {
    auto store = HistoryStore::Open(dir, {}, *DescribeSequential(model));
    ASSERT_TRUE(store.ok());
    for (int e = 0; e < 2; ++e) {
      EpochMetadata meta;
      meta.epoch = e;
      nn::Sequential m = e == 1 ? model : Model({3, 0}, {0, 3});
      ASSERT_TRUE((*store)->Append(meta, *CopyModuleState(*m)).ok());
    }
  }
  auto store = HistoryStore::OpenReadOnly(dir);
  at::Tensor x = torch::tensor({{1., 0.}, {0., 1.}});
  at::Tensor y = torch::tensor({0, 1}, torch::kLong);
  auto mined = MineHistory(model, **store, x, y, {});
  ASSERT_TRUE(mined.ok()) << mined.status();
  EXPECT_EQ(mined->epochs, (std::vector<int64_t>{1}));
  EXPECT_EQ(mined->data.size(), 0);
  EXPECT_EQ(mined->data.references.size(1), 2);
}

// Writes the hand-made epochs under the given epoch numbers.
void WriteHistory(const std::string& dir, const std::vector<int64_t>& numbers,
                  const std::vector<std::vector<std::vector<double>>>& cols) {
  nn::Sequential m0 = Model({1, 0}, {0, 1});
  auto store = HistoryStore::Open(dir, {}, *DescribeSequential(m0));
  ASSERT_TRUE(store.ok()) << store.status();
  for (size_t i = 0; i < numbers.size(); ++i) {
    nn::Sequential snapshot = Model(cols[i][0], cols[i][1]);
    EpochMetadata meta;
    meta.epoch = numbers[i];
    ASSERT_TRUE((*store)->Append(meta, *CopyModuleState(*snapshot)).ok());
  }
}

// ALGORITHMS.md §3: the window is the latest ceil(t/2) stored training
// epochs counted as epochs, not by epoch number. Snapshots of every other
// epoch (0, 2, 4, 6) are t = 4 stored epochs: the window is {4, 6}, not the
// epochs numbered above 6 - 2.
TEST(HistoryMiner, SparseSnapshotsDoNotShrinkTheWindow) {
  const std::string dir = testing::MakeTempDir("miner_sparse") + "/history";
  // Epoch 4 is the hand example's epoch 1 (picked for s0 and s1).
  WriteHistory(dir, {0, 2, 4, 6},
               {{{5, 0}, {0, 0}},
                {{5, 0}, {0, 0}},
                {{2, 0}, {3, 0}},
                {{2, 0}, {0, 0.5}}});
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  nn::Sequential model = Model({1, 0}, {0, 1});
  at::Tensor x = torch::tensor({{1., 0.}, {0., 1.}, {0., 1.}});
  at::Tensor y = torch::tensor({0, 0, 1}, torch::kLong);
  auto mined = MineHistory(model, **store, x, y, {});
  ASSERT_TRUE(mined.ok()) << mined.status();
  EXPECT_EQ(mined->epochs, (std::vector<int64_t>{4, 6}));
  EXPECT_EQ(mined->chosen, (std::map<int64_t, int64_t>{{4, 2}}));
}

// Dare_rand (ALGORITHMS.md §3): as many samples as Dare selected (2 of the
// 3 here), drawn from D with the seed, each with a random window model's
// output; reproducible, and another seed draws differently somewhere.
TEST(HistoryMiner, DareRandomDrawsAsManySamplesAsDareSelected) {
  const std::string dir = testing::MakeTempDir("miner_rand") + "/history";
  WriteHistory(dir, {0, 1, 2},
               {{{5, 0}, {0, 0}}, {{2, 0}, {3, 0}}, {{2, 0}, {0, 0.5}}});
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  nn::Sequential model = Model({1, 0}, {0, 1});
  at::Tensor x = torch::tensor({{1., 0.}, {0., 1.}, {0., 1.}});
  at::Tensor y = torch::tensor({0, 0, 1}, torch::kLong);
  auto best = MineHistory(model, **store, x, y, {});
  ASSERT_TRUE(best.ok()) << best.status();
  ASSERT_EQ(best->data.size(), 2);
  MinerOptions random;
  random.mode = MinerOptions::Mode::kRandom;
  auto r1 = MineHistory(model, **store, x, y, random);
  auto r2 = MineHistory(model, **store, x, y, random);
  ASSERT_TRUE(r1.ok() && r2.ok()) << r1.status();
  EXPECT_EQ(r1->data.size(), best->data.size());
  EXPECT_EQ(r1->candidates, 3);
  EXPECT_TRUE(torch::equal(r1->data.inputs, r2->data.inputs));
  EXPECT_TRUE(torch::equal(r1->data.references, r2->data.references));
  int64_t total = 0;
  for (const auto& [e, c] : r1->chosen) {
    EXPECT_TRUE(e == 1 || e == 2) << e;  // the window of t = 3
    total += c;
  }
  EXPECT_EQ(total, 2);
  // Each reference is the relu output of the epoch it was drawn from.
  for (int64_t i = 0; i < r1->data.size(); ++i) {
    const at::Tensor in = r1->data.inputs[i];
    const at::Tensor ref = r1->data.references[i];
    const bool s0 = in[0].item<double>() == 1.0;
    const std::vector<at::Tensor> allowed =
        s0 ? std::vector<at::Tensor>{torch::tensor({2.f, 0.f})}
           : std::vector<at::Tensor>{torch::tensor({3.f, 0.f}),
                                     torch::tensor({0.f, 0.5f})};
    bool ok = false;
    for (const at::Tensor& a : allowed) ok |= torch::equal(ref, a);
    EXPECT_TRUE(ok) << in << ref;
  }
}

}  // namespace
}  // namespace posttrain

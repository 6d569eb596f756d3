#include "fairness/reject_option.h"

#include <gtest/gtest.h>

#include <vector>

#include "absl/strings/match.h"

namespace posttrain {
namespace {

// Equal base rates (2 of 4 favourable in each group), so perfect
// predictions have SPD 0. No single threshold is perfect: the privileged
// 0.6 is unfavourable and the unprivileged 0.4 favourable. A margin that
// holds both (|0.6 − t| <= m, |0.4 − t| <= m) but none of 0.05, 0.1, 0.9,
// 0.95 on the wrong side makes all eight right: it needs
// m >= 0.6 − t and m < t − 0.1, so t > 0.35. The first grid threshold
// above 0.35 is t = 0.01 + 35 · 0.98/99; the first grid margin of
// linspace(0, t, 50) that reaches 0.6 − t is 34 · t/49.
TEST(RejectOption, TheWorkedOutCase) {
  const std::vector<double> p = {0.95, 0.6, 0.9, 0.05, 0.95, 0.05, 0.4, 0.1};
  const std::vector<int64_t> y = {1, 0, 1, 0, 1, 0, 1, 0};
  const std::vector<int64_t> a = {1, 1, 1, 1, 0, 0, 0, 0};
  auto roc = FitRejectOption(p, y, a);
  ASSERT_TRUE(roc.ok()) << roc.status();
  const double t = 0.01 + 35 * (0.98 / 99);
  EXPECT_NEAR(roc->threshold, t, 1e-12);
  EXPECT_NEAR(roc->margin, 34 * (t / 49), 1e-12);
  EXPECT_DOUBLE_EQ(roc->balanced_accuracy, 1.0);
  EXPECT_DOUBLE_EQ(roc->spd, 0.0);
  EXPECT_TRUE(roc->feasible);
  EXPECT_EQ(ApplyRejectOption(p, a, *roc), y);
  // Without the margin the same threshold makes two mistakes.
  RejectOption plain = *roc;
  plain.margin = 0;
  EXPECT_EQ(ApplyRejectOption(p, a, plain),
            (std::vector<int64_t>{1, 1, 1, 0, 1, 0, 1, 0}));
}

TEST(RejectOption, InfeasibleBoundAndBadInput) {
  // The label is the group: SPD = 0 needs equal selection rates s in both
  // groups, and then TPR = s and TNR = 1 − s, so every feasible pair has
  // balanced accuracy 0.5.
  const std::vector<double> p = {0.9, 0.8, 0.2, 0.1};
  const std::vector<int64_t> y = {1, 1, 0, 0};
  const std::vector<int64_t> a = {1, 1, 0, 0};
  auto roc = FitRejectOption(p, y, a, 0.0);
  ASSERT_TRUE(roc.ok());
  EXPECT_TRUE(roc->feasible);
  EXPECT_DOUBLE_EQ(roc->spd, 0.0);
  EXPECT_DOUBLE_EQ(roc->balanced_accuracy, 0.5);
  // A bound nothing meets: the smallest |SPD| is kept, and said so.
  auto none = FitRejectOption(p, y, a, -1.0);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->feasible);
  EXPECT_DOUBLE_EQ(none->spd, 0.0);
  EXPECT_TRUE(absl::StrContains(
      FitRejectOption({0.5, 1.5}, {0, 1}, {0, 1}).status().message(),
      "probability 1"));
  EXPECT_FALSE(FitRejectOption({0.5}, {0, 1}, {0, 1}).ok());
}

}  // namespace
}  // namespace posttrain

#include "common/results.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/match.h"

namespace posttrain {
namespace {

TEST(Results, MeanAndSampleStd) {
  MeanStd m = Summarize({1, 2, 3, 4, NAN});
  EXPECT_EQ(m.n, 4);
  EXPECT_DOUBLE_EQ(m.mean, 2.5);
  EXPECT_NEAR(m.std, std::sqrt(5.0 / 3.0), 1e-15);
  EXPECT_EQ(FormatMeanStd(m, 2), "2.50 ± 1.29");
  EXPECT_EQ(Summarize({7}).std, 0);
  EXPECT_EQ(FormatMeanStd(Summarize({}), 3), "n/a");
}

struct Golden {
  const char* name;
  std::vector<double> x, y;
  double statistic, p;
};

// From scripts/golden/wilcoxon.py (scipy 1.10.1; exact for the first two,
// normal approximation for the others).
const Golden kGolden[] = {
    {"six_all_positive",
     {1.0, 2.0, 3.0, 4.0, 5.0, 6.0},
     {0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
     0.0,
     0.03125},
    {"ten_mixed",
     {1.5, -0.25, 3.0, 2.25, -1.0, 4.5, 0.75, 5.5, 2.75, -3.5},
     {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0},
     12.0,
     0.130859375},
    {"ties",
     {1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0},
     {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0},
     7.5,
     0.13854641509892002},
};

TEST(Results, WilcoxonMatchesScipy) {
  for (const Golden& g : kGolden) {
    auto r = WilcoxonSignedRank(g.x, g.y);
    ASSERT_TRUE(r.ok()) << g.name;
    EXPECT_DOUBLE_EQ(r->statistic, g.statistic) << g.name;
    EXPECT_NEAR(r->p_value, g.p, 1e-12) << g.name;
  }
  // Sixty pairs with a zero difference and ties: the approximation.
  std::vector<double> x, y;
  for (int i = 0; i < 60; ++i) {
    x.push_back(((i * 37) % 101) / 10.0);
    y.push_back(((i * 53) % 97) / 10.0);
  }
  auto r = WilcoxonSignedRank(x, y);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->exact);
  EXPECT_EQ(r->n, 59);
  EXPECT_DOUBLE_EQ(r->statistic, 780.5);
  EXPECT_NEAR(r->p_value, 0.4302453269328883, 1e-12);
}

TEST(Results, WilcoxonEdgeCases) {
  // A zero difference is dropped; the rest is exact: 5 positive of 5.
  auto r = WilcoxonSignedRank({1, 2, 3, 4, 5, 6}, {1, 0, 0, 0, 0, 0});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->n, 5);
  EXPECT_TRUE(r->exact);
  EXPECT_DOUBLE_EQ(r->p_value, 2.0 / 32);
  // Five pairs can never reach p < 0.05.
  EXPECT_GT(r->p_value, 0.05);
  auto same = WilcoxonSignedRank({1, 2}, {1, 2});
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->n, 0);
  EXPECT_EQ(same->p_value, 1);
  EXPECT_FALSE(WilcoxonSignedRank({1, 2}, {1}).ok());
  EXPECT_TRUE(absl::StrContains(
      WilcoxonSignedRank({1, NAN}, {1, 2}).status().message(), "pair 1"));
}

TEST(Results, MarkdownTable) {
  MarkdownTable t({"method", "accuracy", "p"});
  t.AddRow({"fmt", "0.81 ± 0.01"});
  EXPECT_EQ(
      t.ToString(),
      "| method | accuracy | p |\n|---|---|---|\n| fmt | 0.81 ± 0.01 |  |\n");
}

}  // namespace
}  // namespace posttrain

#include "fairness/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace posttrain {
namespace {

// ../shared/data/metric_vectors.md: group a = privileged (1), b = 0.
const std::vector<int64_t> kTrue = {0, 1, 1, 1, 1, 1, 0, 0, 1, 1};
const std::vector<int64_t> kPred = {0, 0, 1, 0, 1, 0, 1, 1, 1, 1};
const std::vector<int64_t> kPriv = {0, 0, 1, 0, 0, 1, 1, 1, 0, 0};

TEST(FairnessMetrics, TheHandCheckedVector) {
  auto m = ComputeFairnessMetrics(kTrue, kPred, kPriv);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_DOUBLE_EQ(m->privileged.selection_rate, 0.75);
  EXPECT_DOUBLE_EQ(m->unprivileged.selection_rate, 0.5);
  EXPECT_DOUBLE_EQ(m->privileged.tpr, 0.5);
  EXPECT_DOUBLE_EQ(m->unprivileged.tpr, 0.6);
  EXPECT_DOUBLE_EQ(m->privileged.fpr, 1.0);
  EXPECT_DOUBLE_EQ(m->unprivileged.fpr, 0.0);
  EXPECT_DOUBLE_EQ(m->spd, -0.25);
  EXPECT_NEAR(m->di, 2.0 / 3.0, 1e-15);
  EXPECT_NEAR(m->eod, 0.1, 1e-15);
  EXPECT_NEAR(m->aod, -0.45, 1e-15);
  EXPECT_NEAR(m->aaod, 0.55, 1e-15);
  EXPECT_NEAR(m->abs_eod(), 0.1, 1e-15);
  EXPECT_DOUBLE_EQ(m->accuracy, 0.5);  // rows 1, 3, 5, 9, 10
  // TPR 4/7, TNR 1/3.
  EXPECT_NEAR(m->balanced_accuracy, 0.5 * (4.0 / 7 + 1.0 / 3), 1e-15);
}

TEST(FairnessMetrics, ReweighingWeightsAreExact) {
  auto w = ReweighingWeights(kTrue, kPriv);
  ASSERT_TRUE(w.ok()) << w.status();
  double sum = 0, fav[2] = {}, all[2] = {};
  for (size_t i = 0; i < kTrue.size(); ++i) {
    const double want =
        kPriv[i] ? (kTrue[i] ? 1.4 : 0.6) : (kTrue[i] ? 0.84 : 1.8);
    EXPECT_NEAR((*w)[i], want, 1e-15) << i;
    sum += (*w)[i];
    fav[kPriv[i]] += (*w)[i] * kTrue[i];
    all[kPriv[i]] += (*w)[i];
  }
  EXPECT_NEAR(sum, 10.0, 1e-12);
  // The weighted favourable-label rates of the groups are equal.
  EXPECT_NEAR(fav[0] / all[0], fav[1] / all[1], 1e-12);
  // As sample weights of the metrics: the labels' weighted SPD is 0.
  auto m = ComputeFairnessMetrics(kTrue, kTrue, kPriv, *w);
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR(m->spd, 0.0, 1e-12);
}

TEST(FairnessMetrics, WeightsAndUndefinedRates) {
  // Uniform weights change nothing.
  auto plain = ComputeFairnessMetrics(kTrue, kPred, kPriv);
  auto twice =
      ComputeFairnessMetrics(kTrue, kPred, kPriv, std::vector<double>(10, 2.0));
  ASSERT_TRUE(plain.ok() && twice.ok());
  EXPECT_DOUBLE_EQ(plain->aaod, twice->aaod);
  EXPECT_DOUBLE_EQ(plain->di, twice->di);
  // A group without negatives has no FPR: AOD and AAOD are NaN, SPD is not.
  auto m = ComputeFairnessMetrics({1, 1, 0, 1}, {1, 0, 0, 1}, {1, 1, 0, 0});
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(std::isnan(m->privileged.fpr));
  EXPECT_TRUE(std::isnan(m->aaod));
  EXPECT_FALSE(std::isnan(m->spd));
}

// The cross-check: scripts/golden/fairness_metrics.py computes every metric
// with an independent (numpy) implementation on 500 saved predictions, with
// and without weights; both must agree to rounding.
TEST(FairnessMetrics, AgreeWithTheIndependentPythonImplementation) {
  const std::string dir = POSTTRAIN_FAIRNESS_TESTDATA;
  std::ifstream csv(dir + "/predictions.csv");
  ASSERT_TRUE(csv.good());
  std::string line;
  std::getline(csv, line);  // header
  std::vector<int64_t> y, pred, a;
  std::vector<double> w;
  while (std::getline(csv, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ',');
    ASSERT_EQ(f.size(), 4u) << line;
    int64_t v[3];
    for (int k = 0; k < 3; ++k) ASSERT_TRUE(absl::SimpleAtoi(f[k], &v[k]));
    double weight;
    ASSERT_TRUE(absl::SimpleAtod(f[3], &weight));
    y.push_back(v[0]);
    pred.push_back(v[1]);
    a.push_back(v[2]);
    w.push_back(weight);
  }
  ASSERT_EQ(y.size(), 500u);
  std::map<std::string, std::pair<double, double>> golden;
  std::ifstream g(dir + "/metrics_golden.txt");
  while (std::getline(g, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    ASSERT_EQ(f.size(), 3u);
    double u, v;
    ASSERT_TRUE(absl::SimpleAtod(f[1], &u) && absl::SimpleAtod(f[2], &v));
    golden[f[0]] = {u, v};
  }
  ASSERT_EQ(golden.size(), 7u);
  auto plain = ComputeFairnessMetrics(y, pred, a);
  auto weighted = ComputeFairnessMetrics(y, pred, a, w);
  ASSERT_TRUE(plain.ok() && weighted.ok());
  for (const auto& [m, want] : std::map<std::string, std::pair<double, double>>{
           {"accuracy", {plain->accuracy, weighted->accuracy}},
           {"balanced_accuracy",
            {plain->balanced_accuracy, weighted->balanced_accuracy}},
           {"spd", {plain->spd, weighted->spd}},
           {"di", {plain->di, weighted->di}},
           {"eod", {plain->eod, weighted->eod}},
           {"aod", {plain->aod, weighted->aod}},
           {"aaod", {plain->aaod, weighted->aaod}}}) {
    EXPECT_NEAR(want.first, golden.at(m).first, 1e-12) << m;
    EXPECT_NEAR(want.second, golden.at(m).second, 1e-12) << m << " weighted";
  }
}

TEST(FairnessMetrics, BadInputIsNamed) {
  auto s = ComputeFairnessMetrics({0, 1}, {0, 2}, {0, 1}).status();
  EXPECT_TRUE(absl::StrContains(s.message(), "y_pred[1] = 2")) << s;
  s = ComputeFairnessMetrics({0, 1}, {0, 1}, {1, 1}).status();
  EXPECT_TRUE(absl::StrContains(s.message(), "no unprivileged")) << s;
  s = ComputeFairnessMetrics({0, 1}, {0}, {1, 0}).status();
  EXPECT_TRUE(absl::StrContains(s.message(), "as many")) << s;
  s = ComputeFairnessMetrics({0, 1}, {0, 1}, {1, 0}, {1.0, -1.0}).status();
  EXPECT_TRUE(absl::StrContains(s.message(), "weights[1]")) << s;
}

}  // namespace
}  // namespace posttrain

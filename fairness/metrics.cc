#include "fairness/metrics.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace posttrain {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double Ratio(double a, double b) { return b > 0 ? a / b : kNaN; }

absl::Status CheckBinary(const std::vector<int64_t>& v, const char* what) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != 0 && v[i] != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, "[", i, "] = ", v[i], "; expected 0 or 1"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckInputs(const std::vector<int64_t>& y_true,
                         const std::vector<int64_t>* y_pred,
                         const std::vector<int64_t>& privileged,
                         const std::vector<double>* weights) {
  const size_t n = y_true.size();
  if (n == 0) return absl::InvalidArgumentError("no samples");
  if ((y_pred && y_pred->size() != n) || privileged.size() != n ||
      (weights && !weights->empty() && weights->size() != n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("y_true has ", n,
                     " entries; y_pred, privileged and "
                     "weights must have as many"));
  }
  if (auto s = CheckBinary(y_true, "y_true"); !s.ok()) return s;
  if (y_pred) {
    if (auto s = CheckBinary(*y_pred, "y_pred"); !s.ok()) return s;
  }
  if (auto s = CheckBinary(privileged, "privileged"); !s.ok()) return s;
  if (weights) {
    for (size_t i = 0; i < weights->size(); ++i) {
      if (!((*weights)[i] >= 0) || !std::isfinite((*weights)[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("weights[", i, "] is not a finite value >= 0"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<FairnessMetrics> ComputeFairnessMetrics(
    const std::vector<int64_t>& y_true, const std::vector<int64_t>& y_pred,
    const std::vector<int64_t>& privileged,
    const std::vector<double>& weights) {
  if (auto s = CheckInputs(y_true, &y_pred, privileged, &weights); !s.ok()) {
    return s;
  }
  // Weighted counts per group g (0, 1), true label t, prediction p.
  double c[2][2][2] = {};
  for (size_t i = 0; i < y_true.size(); ++i) {
    const double w = weights.empty() ? 1.0 : weights[i];
    c[privileged[i]][y_true[i]][y_pred[i]] += w;
  }
  FairnessMetrics m;
  GroupRates* rates[2] = {&m.unprivileged, &m.privileged};
  for (int g = 0; g < 2; ++g) {
    const double total = c[g][0][0] + c[g][0][1] + c[g][1][0] + c[g][1][1];
    if (!(total > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "no ", g ? "privileged" : "unprivileged", " samples (A = ", g, ")"));
    }
    rates[g]->weight = total;
    rates[g]->selection_rate = (c[g][0][1] + c[g][1][1]) / total;
    rates[g]->tpr = Ratio(c[g][1][1], c[g][1][0] + c[g][1][1]);
    rates[g]->fpr = Ratio(c[g][0][1], c[g][0][0] + c[g][0][1]);
  }
  const double tp = c[0][1][1] + c[1][1][1], fn = c[0][1][0] + c[1][1][0];
  const double tn = c[0][0][0] + c[1][0][0], fp = c[0][0][1] + c[1][0][1];
  m.accuracy = (tp + tn) / (tp + tn + fp + fn);
  m.balanced_accuracy = 0.5 * (Ratio(tp, tp + fn) + Ratio(tn, tn + fp));
  const GroupRates& u = m.unprivileged;
  const GroupRates& p = m.privileged;
  m.spd = u.selection_rate - p.selection_rate;
  m.di = Ratio(u.selection_rate, p.selection_rate);
  m.eod = u.tpr - p.tpr;
  m.aod = 0.5 * ((u.fpr - p.fpr) + (u.tpr - p.tpr));
  m.aaod = 0.5 * (std::fabs(u.fpr - p.fpr) + std::fabs(u.tpr - p.tpr));
  return m;
}

absl::StatusOr<std::vector<double>> ReweighingWeights(
    const std::vector<int64_t>& y_true,
    const std::vector<int64_t>& privileged) {
  if (auto s = CheckInputs(y_true, nullptr, privileged, nullptr); !s.ok()) {
    return s;
  }
  double n_g[2] = {}, n_y[2] = {}, n_gy[2][2] = {};
  for (size_t i = 0; i < y_true.size(); ++i) {
    ++n_g[privileged[i]];
    ++n_y[y_true[i]];
    ++n_gy[privileged[i]][y_true[i]];
  }
  const double n = static_cast<double>(y_true.size());
  std::vector<double> w(y_true.size());
  for (size_t i = 0; i < y_true.size(); ++i) {
    const int64_t g = privileged[i], y = y_true[i];
    w[i] = n_g[g] * n_y[y] / (n * n_gy[g][y]);  // n_gy >= 1: sample i is in it
  }
  return w;
}

}  // namespace posttrain

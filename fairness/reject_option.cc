#include "fairness/reject_option.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "fairness/metrics.h"

namespace posttrain {

std::vector<int64_t> ApplyRejectOption(const std::vector<double>& p,
                                       const std::vector<int64_t>& privileged,
                                       const RejectOption& roc) {
  std::vector<int64_t> pred(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    if (std::fabs(p[i] - roc.threshold) <= roc.margin) {
      pred[i] = privileged[i] ? 0 : 1;
    } else {
      pred[i] = p[i] > roc.threshold ? 1 : 0;
    }
  }
  return pred;
}

absl::StatusOr<RejectOption> FitRejectOption(
    const std::vector<double>& p, const std::vector<int64_t>& y_true,
    const std::vector<int64_t>& privileged, double spd_bound) {
  if (p.size() != y_true.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ROC: ", p.size(), " probabilities for ", y_true.size(), " labels"));
  }
  for (size_t i = 0; i < p.size(); ++i) {
    if (!(p[i] >= 0 && p[i] <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("ROC: probability ", i, " is not in [0, 1]"));
    }
  }
  RejectOption best;
  bool have_feasible = false;
  double best_abs_spd = INFINITY;
  bool first = true;
  for (int ti = 0; ti < 100; ++ti) {
    const double t = 0.01 + ti * (0.98 / 99);
    const double m_max = std::min(t, 1 - t);
    for (int mi = 0; mi < 50; ++mi) {
      RejectOption c;
      c.threshold = t;
      c.margin = mi * (m_max / 49);
      auto m = ComputeFairnessMetrics(
          y_true, ApplyRejectOption(p, privileged, c), privileged);
      if (!m.ok()) return m.status();
      c.balanced_accuracy = m->balanced_accuracy;
      c.spd = m->spd;
      c.feasible = m->abs_spd() <= spd_bound;
      if (first) {
        best = c;
        best_abs_spd = m->abs_spd();
        have_feasible = c.feasible;
        first = false;
        continue;
      }
      if (c.feasible) {
        if (!have_feasible || c.balanced_accuracy > best.balanced_accuracy) {
          best = c;
          have_feasible = true;
        }
      } else if (!have_feasible && m->abs_spd() < best_abs_spd) {
        best = c;
        best_abs_spd = m->abs_spd();
      }
    }
  }
  return best;
}

}  // namespace posttrain

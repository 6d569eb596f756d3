// Fairness metrics of a binary classifier (ALGORITHMS.md §5; AIF360's
// conventions: A = 1 privileged, Ŷ = 1 favourable; differences are
// unprivileged − privileged), with optional sample weights, and the
// reweighing weights of Kamiran and Calders (the REW baseline).
//
//   SPD  = P(Ŷ=1 | A=0) − P(Ŷ=1 | A=1)
//   DI   = P(Ŷ=1 | A=0) / P(Ŷ=1 | A=1)
//   EOD  = TPR₀ − TPR₁
//   AOD  = ½[(FPR₀ − FPR₁) + (TPR₀ − TPR₁)]
//   AAOD = ½(|FPR₀ − FPR₁| + |TPR₀ − TPR₁|)
// A rate with an empty denominator (no positives in a group, say) is NaN,
// and so is every metric that uses it, as in AIF360.
//
// Example:
//   absl::StatusOr<posttrain::FairnessMetrics> m =
//       posttrain::ComputeFairnessMetrics({0, 1, 1}, {0, 1, 0}, {1, 0, 1});
//   if (m.ok()) std::printf("SPD %.3f\n", m->spd);
//
// Thread safety: free functions.
#ifndef POSTTRAIN_FAIRNESS_METRICS_H_
#define POSTTRAIN_FAIRNESS_METRICS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace posttrain {

struct GroupRates {
  double weight = 0;          // total sample weight of the group
  double selection_rate = 0;  // P(Ŷ = 1)
  double tpr = 0, fpr = 0;    // P(Ŷ = 1 | Y = 1), P(Ŷ = 1 | Y = 0)
};

struct FairnessMetrics {
  double accuracy = 0;
  double balanced_accuracy = 0;  // ½(TPR + TNR) over all samples
  double spd = 0, di = 0, eod = 0, aod = 0, aaod = 0;
  GroupRates privileged, unprivileged;
  double abs_spd() const { return spd < 0 ? -spd : spd; }
  double abs_eod() const { return eod < 0 ? -eod : eod; }
};

// All vectors of one length N >= 1 with 0/1 entries; `weights` empty (all
// 1) or N non-negative values. Errors: lengths that differ, a value other
// than 0 or 1 (naming its index), a group without samples.
absl::StatusOr<FairnessMetrics> ComputeFairnessMetrics(
    const std::vector<int64_t>& y_true, const std::vector<int64_t>& y_pred,
    const std::vector<int64_t>& privileged,
    const std::vector<double>& weights = {});

// Reweighing (REW): w(g, y) = n_g · n_y / (n · n_{g,y}) for every sample,
// from the true labels and groups. They sum to n, and the weighted
// favourable-label rates of the groups are equal.
absl::StatusOr<std::vector<double>> ReweighingWeights(
    const std::vector<int64_t>& y_true, const std::vector<int64_t>& privileged);

}  // namespace posttrain

#endif  // POSTTRAIN_FAIRNESS_METRICS_H_

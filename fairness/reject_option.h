// ROC, reject option classification (Kamiran et al. 2012; ALGORITHMS.md
// §7), the post-processing fairness baseline: near the decision threshold
// (|p − t| <= m, p = the model's favourable probability) unprivileged
// samples get the favourable label and privileged ones the unfavourable
// one; elsewhere the prediction is p > t. FitRejectOption searches
// t ∈ linspace(0.01, 0.99, 100) and m ∈ linspace(0, min(t, 1 − t), 50)
// on held-out data for the best balanced accuracy with SPD within
// ±spd_bound; the first best in grid order (t, then m, ascending) wins.
// When no pair meets the bound, the one with the smallest |SPD| is kept and
// `feasible` is false.
//
// Example:
//   absl::StatusOr<posttrain::RejectOption> roc =
//       posttrain::FitRejectOption(val_prob, val_y, val_a);
//   if (roc.ok()) {
//     std::vector<int64_t> pred =
//         posttrain::ApplyRejectOption(test_prob, test_a, *roc);
//   }
//
// Thread safety: free functions.
#ifndef POSTTRAIN_FAIRNESS_REJECT_OPTION_H_
#define POSTTRAIN_FAIRNESS_REJECT_OPTION_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace posttrain {

struct RejectOption {
  double threshold = 0.5;
  double margin = 0;
  double balanced_accuracy = 0;  // on the data it was fitted on
  double spd = 0;
  bool feasible = false;  // |SPD| <= the bound
};

// Errors: lengths that differ, probabilities outside [0, 1], non-binary
// labels or groups, a group without samples.
absl::StatusOr<RejectOption> FitRejectOption(
    const std::vector<double>& favourable_probability,
    const std::vector<int64_t>& y_true, const std::vector<int64_t>& privileged,
    double spd_bound = 0.05);

std::vector<int64_t> ApplyRejectOption(
    const std::vector<double>& favourable_probability,
    const std::vector<int64_t>& privileged, const RejectOption& roc);

}  // namespace posttrain

#endif  // POSTTRAIN_FAIRNESS_REJECT_OPTION_H_

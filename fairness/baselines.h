// Training and evaluation of tabular classifiers, shared by the fairness
// example and benchmarks, and the retraining baselines of ALGORITHMS.md §7
// that use them: REW (reweighing: per-sample loss weights w(g, y)) and
// SUPP (the protected column removed). ROC is post-processing
// (fairness/reject_option.h). All use the same training configuration as
// the original model.
//
// Example:
//   posttrain::TabularTrainOptions train;
//   torch::nn::Sequential rew = posttrain::ReferenceMlp(encoded->features, 1);
//   PT_RETURN_IF_ERROR(posttrain::TrainReweighed(rew, *encoded, train));
//   PT_ASSIGN_OR_RETURN(posttrain::FairnessMetrics m,
//                       posttrain::EvaluateTabular(rew, encoded->test));
//
// Thread safety: the model must not be used meanwhile.
#ifndef POSTTRAIN_FAIRNESS_BASELINES_H_
#define POSTTRAIN_FAIRNESS_BASELINES_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "fairness/metrics.h"
#include "fairness/tabular.h"
#include "hooks/callback.h"

namespace posttrain {

struct TabularTrainOptions {
  // 0: enough epochs for 1,000 optimizer steps, at least 20.
  int epochs = 0;
  int64_t batch_size = 128;
  double lr = 1e-3;   // Adam
  uint64_t seed = 1;  // the batch order
};

// The epochs `options` resolve to for `rows` training rows.
int TrainingEpochs(const TabularTrainOptions& options, int64_t rows);

// Cross-entropy training of `model` on `train` (Adam, shuffled minibatches
// in a seeded order). `weights` (one per row, or empty) weight each
// sample's loss (the batch loss is Σ w·l / Σ w). `callback`, when given,
// gets OnEpochBegin, OnBatchEnd and OnEpochEnd (not OnTrainBegin/End).
absl::Status TrainTabular(torch::nn::Sequential& model,
                          const TabularSplit& train,
                          const TabularTrainOptions& options,
                          const std::vector<double>& weights = {},
                          Callback* callback = nullptr);

// Accuracy and every fairness metric of `model`'s predictions on `split`.
absl::StatusOr<FairnessMetrics> EvaluateTabular(
    const torch::nn::Sequential& model, const TabularSplit& split);
// The favourable-label probability of every row.
absl::StatusOr<std::vector<double>> FavourableProbability(
    const torch::nn::Sequential& model, const at::Tensor& x);

// REW: `model` trained on data.train with the reweighing weights.
absl::Status TrainReweighed(torch::nn::Sequential& model,
                            const TabularData& data,
                            const TabularTrainOptions& options);

// SUPP: the split without its protected column (d − 1 features); train and
// evaluate a model of d − 1 inputs on it.
TabularSplit DropProtected(const TabularSplit& split,
                           int64_t protected_feature);

}  // namespace posttrain

#endif  // POSTTRAIN_FAIRNESS_BASELINES_H_

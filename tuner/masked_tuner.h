// MaskedTuner: fits the regression model M_T to reference outputs with only
// the key synapses of each sample's criterion free (paper §3.1.2, Eq. 8;
// ALGORITHMS.md §2), and Sync, which copies the tuned layers back.
//
// Decisions (ALGORITHMS.md §2 and where it is silent):
//  - Loss of a sample σ of criterion c: ((y(σ) − y_ref(σ))² · mask_c).sum()
//    / mask_c.sum(), mask_c = the key neurons of l(r−p) in c's slice
//    (expanded over positions); a batch's loss is the mean over samples.
//  - Free parameters: the weights of the weighted layers of M_T where the
//    criterion's synapse mask is set, and the biases of neurons with a key
//    incoming synapse. BatchNorm affine parameters and running statistics
//    stay fixed: M_T runs in eval mode while tuning (BatchNorm normalizes
//    with its running statistics, Dropout is off), so tuning is
//    deterministic and the statistics M was trained with stay valid.
//  - Mixed criteria in one batch (MaskedBackward): per criterion, backward
//    of its sub-batch's loss scaled by its share, gradient × mask_c,
//    accumulated. The tuner itself draws each batch from one criterion (in
//    a seeded shuffled order), the cheaper equivalent.
//  - After every optimizer step, entries outside the batch's masks get their
//    value from before the step back, so Adam moments, momentum and weight
//    decay never move them; a weight outside every mask stays bit-identical.
//  - lr from a grid, up to max_epochs each, early stop on the validation
//    loss (patience), best epoch kept; the lr whose best validation loss is
//    lowest among those passing the accuracy guard wins. Guard: clean
//    accuracy on the guard split may drop by at most max_accuracy_drop; if
//    no candidate passes (or none improves the validation loss), the
//    original weights stay and the report says why.
//
// Example:
//   TunerOptions options;
//   PT_ASSIGN_OR_RETURN(TuneReport report,
//       TuneModel(model, slices, train_set, val_set, guard, options));
//   // model now holds the tuned layers when report.accepted
//
// Thread safety: none; the model must not be used meanwhile.
#ifndef POSTTRAIN_TUNER_MASKED_TUNER_H_
#define POSTTRAIN_TUNER_MASKED_TUNER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "slicer/slicer.h"
#include "tuner/progress.h"
#include "tuner/regression_view.h"

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace posttrain {

// Samples with their regression references.
struct TuningData {
  at::Tensor inputs;      // [N, ...]
  at::Tensor references;  // float [N, outputs]
  at::Tensor criteria;    // int64 [N]: the slice (criterion) of each sample
  at::Tensor labels;      // int64 [N]: class labels (needed for p = 0)
  int64_t size() const { return inputs.defined() ? inputs.size(0) : 0; }
};

// Inputs with class labels (the guard split).
struct LabelledData {
  at::Tensor inputs;
  at::Tensor labels;
};

// The free entries of M_T's parameters for one criterion.
struct CriterionMask {
  // Per weighted layer of M_T (0 .. target()): bool masks of the weight and
  // of the bias (undefined when the layer has no bias).
  std::vector<at::Tensor> weight;
  std::vector<at::Tensor> bias;
  // float [outputs]: the loss mask (key neurons of l(r−p)).
  at::Tensor output;
};

// Masks from one slice per criterion (SliceCriteria's output).
absl::StatusOr<std::vector<CriterionMask>> MasksFromSlices(
    const RegressionView& view, const std::vector<Slice>& slices);
// Everything free, for `num_criteria` criteria (the no-slicing ablation).
absl::StatusOr<std::vector<CriterionMask>> FullMasks(const RegressionView& view,
                                                     int num_criteria);

// The parameters MaskedBackward and the tuner train: per weighted layer of
// M_T, its weight and bias (undefined when absent).
struct TrainableParameters {
  std::vector<at::Tensor> weight;
  std::vector<at::Tensor> bias;
  std::vector<at::Tensor> all() const;  // the defined ones
};
TrainableParameters Trainable(const RegressionView& view);

// Eq. 8 loss of a batch, with the autograd graph (mean over samples).
absl::StatusOr<at::Tensor> RegressionLoss(
    const RegressionView& view, const std::vector<CriterionMask>& masks,
    const at::Tensor& inputs, const at::Tensor& references,
    const at::Tensor& criteria, const at::Tensor& labels = {});

// Adds to the .grad of Trainable(view) the masked gradient of the batch's
// loss: per criterion present, backward of its sub-batch's loss times its
// share of the batch, gradients multiplied by that criterion's masks.
absl::Status MaskedBackward(const RegressionView& view,
                            const std::vector<CriterionMask>& masks,
                            const at::Tensor& inputs,
                            const at::Tensor& references,
                            const at::Tensor& criteria,
                            const at::Tensor& labels = {});

// One optimizer step of the tuner, for TunerOptions::on_step.
struct TuneStep {
  double lr = 0;
  int epoch = 0;           // 1-based, within this learning rate's trial
  int64_t criterion = -1;  // the batch's criterion (-1: cross-entropy tuning)
  // The parameters being trained (of the trial's copy of M_T), after the
  // step and the masked restore.
  const TrainableParameters* params = nullptr;
};

// A guard metric of a model: higher is better (clean accuracy by default).
using ModelMetric =
    std::function<absl::StatusOr<double>(const torch::nn::Sequential&)>;

struct TunerOptions {
  int p = 1;  // regression target l(r−p); 0: true-class probability
  enum class Optimizer { kAdam, kSgdMomentum };
  Optimizer optimizer = Optimizer::kAdam;
  std::vector<double> learning_rates = {1e-3, 1e-4, 1e-5};
  int max_epochs = 20;
  int patience = 3;  // epochs without a better validation loss
  // How the lr grid is searched. kGrid (ALGORITHMS.md §2): every lr runs
  // up to max_epochs. kSuccessiveHalving: every lr runs halving_min_epochs;
  // the best 1/halving_factor (by best validation loss) run on to
  // halving_factor times as many epochs, until one is left, which runs to
  // max_epochs. Each lr's epochs are the grid search's for that lr (same
  // batches, same steps), so when both pick the same lr the tuned weights
  // are bit-identical; halving may pick another lr when the ranking after
  // few epochs differs from the final one. Every lr's best epoch still
  // faces the guard. It holds every lr's copy of M_T at once.
  enum class Search { kGrid, kSuccessiveHalving };
  Search search = Search::kGrid;
  int halving_min_epochs = 2;
  int halving_factor = 3;
  int64_t batch_size = 128;
  double momentum = 0.9;  // kSgdMomentum
  double weight_decay = 0.0;
  // Largest clean-accuracy drop on the guard split, as a fraction (0.02 = 2
  // percentage points).
  double max_accuracy_drop = 0.02;
  uint64_t seed = 1;
  // Called after every optimizer step (tests and monitors); must not change
  // the parameters. Empty: not called.
  std::function<void(const TuneStep&)> on_step;
  // Receives "tuning" (epochs run over every lr) and "evaluation" (guard
  // evaluations); null: none.
  ProgressSink* progress = nullptr;
};

struct LearningRateTrial {
  double lr = 0;
  int best_epoch = 0;  // 0: no epoch improved the validation loss
  double best_validation_loss = 0;
  double guard_accuracy = 0;  // of the best epoch's model
  bool passes_guard = false;
  int epochs = 0;           // epochs this lr ran
  bool eliminated = false;  // stopped by successive halving
};

struct TuneReport {
  bool accepted = false;
  std::string reason;  // why the original weights were kept
  double lr = 0;
  int best_epoch = 0;
  int epochs_run = 0;
  double validation_loss_before = 0, validation_loss_after = 0;
  double guard_accuracy_before = 0, guard_accuracy_after = 0;
  std::vector<LearningRateTrial> trials;
  double seconds = 0;
};

// Tunes a copy of `model` (masks from `slices`; empty: everything free) and,
// when a candidate passes the guard, syncs it into `model`. Errors: empty
// data, masks that do not match the model, torch errors.
absl::StatusOr<TuneReport> TuneModel(torch::nn::Sequential& model,
                                     const std::vector<Slice>& slices,
                                     const TuningData& train,
                                     const TuningData& validation,
                                     const LabelledData& guard,
                                     const TunerOptions& options);
// The same with any guard metric (the report's guard_accuracy_* fields then
// hold that metric).
absl::StatusOr<TuneReport> TuneModel(torch::nn::Sequential& model,
                                     const std::vector<Slice>& slices,
                                     const TuningData& train,
                                     const TuningData& validation,
                                     const ModelMetric& guard,
                                     const TunerOptions& options);

// One learning rate's candidate in SearchLearningRates: one training epoch
// of the copy it was made for, and its validation loss.
struct LearningRateCandidate {
  // Runs one epoch; `epoch` is 1-based.
  std::function<absl::Status(int epoch)> train_epoch;
  std::function<absl::StatusOr<double>()> validation_loss;
};

// The search both tuners share: for each lr, `make` builds a candidate on a
// fresh copy of `model` (in eval mode); epochs run until max_epochs or
// `patience` epochs without a lower validation loss (or, with
// options.search = kSuccessiveHalving, until halving stops the lr, as
// TunerOptions::search says); the best epoch is kept;
// the candidate with the lowest loss among those within the accuracy guard
// is synced into `model` (the tensors of `layers`); otherwise the report
// says why the original stays.
absl::StatusOr<TuneReport> SearchLearningRates(
    torch::nn::Sequential& model, const ModelMetric& guard,
    const TunerOptions& options, const std::vector<std::string>& layers,
    const std::function<absl::StatusOr<LearningRateCandidate>(
        torch::nn::Sequential& copy, double lr)>& make);

// Copies the parameters and buffers of the layers named `layers` (state-dict
// prefixes) from `from` into `to`, by name; every other tensor of `to` is
// untouched. All shapes are checked before the first copy. Errors name the
// tensor.
absl::Status SyncLayers(const torch::nn::Module& from, torch::nn::Module& to,
                        const std::vector<std::string>& layers);

// Clean top-1 accuracy in [0, 1] of `model` on `data` (eval mode, no grad,
// batches of 256 on the model's device). Errors: no inputs, a label count
// mismatch, a label outside [0, number of outputs), torch errors (naming the
// inputs' shape).
absl::StatusOr<double> ClassifierAccuracy(const torch::nn::Sequential& model,
                                          const LabelledData& data);
// ClassifierAccuracy on `data` as a guard metric (the data is shared).
ModelMetric AccuracyOn(const LabelledData& data);

// A fresh copy of `model` (same architecture, parameters and buffers, same
// device), built from its model spec.
absl::StatusOr<torch::nn::Sequential> CopyModel(
    const torch::nn::Sequential& model);

}  // namespace posttrain

#endif  // POSTTRAIN_TUNER_MASKED_TUNER_H_

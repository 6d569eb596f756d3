// PostTrainTask: what the post-training phase needs from a task (Dare for
// robustness, FMT for fairness, or a user's own), and TaskContext, what the
// host hands it. The pipeline (tuner/pipeline.h) and the hooks know tasks
// only through this interface; a task's folder builds its tasks with a
// factory (robustness/dare.h: MakeDareTask).
//
// The phase calls a task in this order:
//   before training:  Check(model)                         (OnTrainBegin)
//   after training:   MakeGuard(ctx) → Augment(ctx, p) → PlanSlicing(ctx)
// settings(), Describe() and profile_criteria() may be called at any time.
//
// Contracts common to every call:
//  - The task must leave ctx.model's parameters, buffers and train/eval
//    modes as it found them (it may run forward passes and make copies).
//  - Tensors it returns may live on any device; the pipeline moves inputs
//    to the model's device batch by batch. Shapes are stated per field.
//  - Errors are returned as statuses, never thrown.
//
// Example (a task that tunes toward the model's own outputs; see
// robustness/dare.h for a real one):
//   class SelfTask : public posttrain::PostTrainTask {
//    public:
//     explicit SelfTask(posttrain::LabelledData data) : data_(data) {}
//     std::string name() const override { return "self"; }
//     absl::Status Check(const torch::nn::Sequential&) const override {
//       return absl::OkStatus();
//     }
//     const posttrain::PipelineOptions& settings() const override {
//       return settings_;
//     }
//     absl::StatusOr<posttrain::GuardSpec> MakeGuard(
//         const posttrain::TaskContext&) override {
//       return posttrain::AccuracyGuard(data_);
//     }
//     absl::StatusOr<posttrain::Augmentation> Augment(
//         const posttrain::TaskContext& ctx, int p) override {
//       PT_ASSIGN_OR_RETURN(auto view,
//                           posttrain::RegressionView::Create(ctx.model, p));
//       PT_ASSIGN_OR_RETURN(at::Tensor refs,
//                           view.Forward(data_.inputs, data_.labels));
//       posttrain::TuningData t{data_.inputs, refs.detach(), data_.labels,
//                               data_.labels};
//       return posttrain::Augmentation{t, t, {}};
//     }
//     absl::StatusOr<posttrain::SlicingPlan> PlanSlicing(
//         const posttrain::TaskContext&) override {
//       return posttrain::ClassSlicingPlan(data_, 3);
//     }
//    private:
//     posttrain::LabelledData data_;
//     posttrain::PipelineOptions settings_;
//   };
//
// Thread safety: a task is used by one phase at a time.
#ifndef POSTTRAIN_TUNER_TASK_H_
#define POSTTRAIN_TUNER_TASK_H_

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/sequential.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "history/store.h"
#include "slicer/profile.h"
#include "slicer/slicer.h"
#include "tuner/masked_tuner.h"
#include "tuner/progress.h"

namespace posttrain {

// What the host hands a task after training.
struct TaskContext {
  // M, the trained model (shared with the user's loop). Read it; leave it
  // as found (see the contract above).
  torch::nn::Sequential model{nullptr};
  // The training history, read-only; null when the host has none.
  const HistoryStore* history = nullptr;
  // The NNSlicer profile recorded online; null when there is none (the
  // pipeline then profiles the slicing inputs offline).
  const Profile* profile = nullptr;
  // Progress of long steps (mining, ...); null: none wanted.
  ProgressSink* progress = nullptr;
};

// What an Augment hands to the tuner.
struct Augmentation {
  TuningData train;       // T: inputs [N, ...], references [N, outputs]
  TuningData validation;  // T's counterpart on the guard split
  // Figures for the report ("T/D", "D", ...).
  std::map<std::string, double> figures;
};

// Which inputs slicing runs on, and for which output neurons.
struct SlicingPlan {
  at::Tensor inputs;    // [N, ...] as the model takes them
  at::Tensor criteria;  // int64 [N]: criterion id in [0, outputs.size()),
                        // or -1 (not counted)
  // Per criterion: the output neuron (logit index) its slice is traced
  // back from. Dare: criterion c = class c, neuron c. FMT: one criterion
  // per protected group, every one at the favourable label's logit.
  std::vector<int64_t> outputs;
};

// The accuracy guard: a metric of a model, higher is better. A tuned model
// is rejected when it is more than tuner.max_accuracy_drop below M's.
struct GuardSpec {
  std::string metric = "accuracy";  // its name, for the report
  LabelledData data;                // what it is measured on
  std::function<absl::StatusOr<double>(const torch::nn::Sequential&)> evaluate;
};

// `s` as a JSON string literal (quoted, escaped), for Describe().
std::string JsonQuote(absl::string_view s);

// Clean top-1 accuracy on `data` (ClassifierAccuracy).
GuardSpec AccuracyGuard(LabelledData data);

// For a task's Check: the model's output (eval mode, no grad, on the
// model's device) for the first input of `inputs`, or InvalidArgument
// "<what>: the inputs (AxB) do not fit the model: ..." when they do not.
absl::StatusOr<at::Tensor> ForwardFirstInput(const torch::nn::Sequential& model,
                                             const at::Tensor& inputs,
                                             const std::string& what);

// Every input of `data`, criterion = its class label, output neuron c for
// criterion c, for `classes` classes (Dare's plan).
SlicingPlan ClassSlicingPlan(const LabelledData& data, int64_t classes);

// The criteria of a training batch, for the online profile.
struct ProfileCriteria {
  // Criteria ids 0 .. num_criteria - 1; 0: one per model output (a class).
  int num_criteria = 0;
  // The criterion id of every sample of a batch (int64 [B], -1: none);
  // empty: the batch's targets (its class labels).
  std::function<at::Tensor(const at::Tensor& inputs, const at::Tensor& targets)>
      of_batch;
};

// The settings of the phase (ALGORITHMS.md §2 defaults).
struct PipelineOptions {
  // Slice with NNSlicer (false: every weight free, the "no slice" ablation).
  bool slice = true;
  SliceOptions slicer;
  // tuner.p is the regression target. tuner.seed must be left at its
  // default or equal `seed` (a different value is an error).
  TunerOptions tuner;
  // Transform into the regression model (false: cross-entropy fine-tuning
  // of the whole model on T's inputs and labels, the "no transform"
  // ablation; slicing is then skipped).
  bool transform = true;
  // At most this many slicing inputs (a seeded sample; 0: all).
  int64_t max_slice_inputs = 0;
  // Seeds every random draw of the phase: the task's splits and samples,
  // the slicing sample and the tuner's shuffles.
  uint64_t seed = 1;
};

// The presets of a named task variant (Dare's and FMT's ablations): the
// settings it fixes. ApplyPresets merges them under the user's settings: a
// preset field the user left at the library default (PipelineOptions{})
// takes the preset; one the user set to the preset's value is fine; any
// other value is an InvalidArgument naming the variant, the field and both
// values. (A field set explicitly to its default is indistinguishable from
// one left alone, and takes the preset.)
struct VariantPresets {
  std::optional<int> p;  // tuner.p
  std::optional<bool> slice;
  std::optional<bool> transform;
};
absl::StatusOr<PipelineOptions> ApplyPresets(const std::string& variant,
                                             const VariantPresets& presets,
                                             const PipelineOptions& user);

class PostTrainTask {
 public:
  virtual ~PostTrainTask() = default;

  // A short name for reports ("dare", "dare_last", "fmt").
  virtual std::string name() const = 0;

  // Before training: checks that the task can run on `model` (its
  // architecture, its outputs) and that its options are consistent. Must
  // not change the model. The host runs the pipeline's own checks
  // (CheckPipeline) beside it.
  virtual absl::Status Check(const torch::nn::Sequential& model) const = 0;

  // The settings the phase runs with: the task's presets merged with the
  // user's explicit settings (never silently replacing one).
  virtual const PipelineOptions& settings() const = 0;

  // Every option of the task that the settings do not hold, as name ->
  // value (JSON literals), for report.json. Default: none.
  virtual std::vector<std::pair<std::string, std::string>> Describe() const {
    return {};
  }

  // The criteria the online profile records. Default: the classes.
  virtual ProfileCriteria profile_criteria() const { return {}; }

  // After training, first: the guard (data and metric). Called once; the
  // task may split its data here.
  virtual absl::StatusOr<GuardSpec> MakeGuard(const TaskContext& ctx) = 0;

  // T and its guard counterpart, with references at the output of
  // RegressionView(ctx.model, p) ([N, view.outputs()]; p = 0: [N, 1], the
  // true-class probability). Both may be empty (the phase then keeps the
  // model, saying so).
  virtual absl::StatusOr<Augmentation> Augment(const TaskContext& ctx,
                                               int p) = 0;

  // The slicing plan (called only when the settings slice).
  virtual absl::StatusOr<SlicingPlan> PlanSlicing(const TaskContext& ctx) = 0;
};

}  // namespace posttrain

#endif  // POSTTRAIN_TUNER_TASK_H_

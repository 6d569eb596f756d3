// The post-training pipeline (paper §3; ALGORITHMS.md §2): a task
// (tuner/task.h) gives the guard, the augmented set T and the slicing plan;
// the slicer finds each criterion's key synapses; MaskedTuner fits M_T; the
// tuned layers are synced into the user's model when the guard passes. The
// result carries every figure measured on the way, for the report.
//
// Example:
//   PT_ASSIGN_OR_RETURN(std::unique_ptr<posttrain::PostTrainTask> task,
//                       posttrain::MakeDareTask(dare_options));
//   posttrain::TaskContext ctx;
//   ctx.model = model;
//   ctx.history = store.get();
//   PT_RETURN_IF_ERROR(posttrain::CheckPipeline(model, *task));
//   PT_ASSIGN_OR_RETURN(posttrain::PipelineResult r,
//                       posttrain::RunPipeline(*task, ctx));
//
// Thread safety: none; the model must not be used meanwhile.
#ifndef POSTTRAIN_TUNER_PIPELINE_H_
#define POSTTRAIN_TUNER_PIPELINE_H_

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "slicer/profile.h"
#include "slicer/slicer.h"
#include "tuner/masked_tuner.h"
#include "tuner/task.h"

namespace posttrain {

struct PipelineResult {
  std::string task;           // the task's name
  PipelineOptions settings;   // what the phase ran with
  std::string guard_metric;   // GuardSpec::metric
  Augmentation augmentation;  // its figures (the tensors may be dropped)
  std::vector<Slice> slices;
  TuneReport tune;
  double augment_seconds = 0, slice_seconds = 0, tune_seconds = 0;
  int64_t slice_inputs = 0;
  bool profile_online = false;
};

// Everything the phase can check before training starts: the settings
// (q, tuner options, seeds), every layer of `model` against the slicer's
// model view, the regression view at tuner.p (when the settings transform),
// and the task's own Check. Errors name the layer or the setting.
absl::Status CheckPipeline(const torch::nn::Sequential& model,
                           const PostTrainTask& task);

// Runs guard, augment, slice, tune and sync on ctx.model with
// task.settings(). Slicing uses ctx.profile when given, else the exact
// offline profile of the plan's inputs. ctx.model holds the tuned layers
// afterwards when the guard passed (result.tune.accepted).
absl::StatusOr<PipelineResult> RunPipeline(PostTrainTask& task,
                                           const TaskContext& ctx);

// The "no transform" ablation: cross-entropy fine-tuning of every parameter
// of `model` on (train.inputs, train.labels), with the tuner's lr grid,
// early stopping on the validation cross-entropy, and the guard.
absl::StatusOr<TuneReport> TuneCrossEntropy(torch::nn::Sequential& model,
                                            const TuningData& train,
                                            const TuningData& validation,
                                            const ModelMetric& guard,
                                            const TunerOptions& options);

}  // namespace posttrain

#endif  // POSTTRAIN_TUNER_PIPELINE_H_

// The post-training pipeline (paper §3; ALGORITHMS.md §2): augment, slice,
// tune, sync. An Augmenter (Dare, FMT, ...) produces the augmented set T
// with regression references; the slicer finds each criterion's key
// synapses; MaskedTuner fits M_T; the tuned layers are synced into the
// user's model when the accuracy guard passes. The result carries every
// figure measured on the way, for the report.
//
// Example:
//   DareAugmenter dare(store, mine_split, guard_split, {});
//   PipelineOptions options;
//   PT_ASSIGN_OR_RETURN(PipelineResult r,
//       RunPipeline(model, dare, profile, train_images, train_labels,
//                   guard_split, options));
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

namespace posttrain {

// What an Augmenter hands to the tuner.
struct Augmentation {
  TuningData train;       // T
  TuningData validation;  // T's counterpart on the guard split
  // Figures for the report ("T/D", "epochs chosen", ...).
  std::map<std::string, double> figures;
};

class Augmenter {
 public:
  virtual ~Augmenter() = default;
  virtual std::string name() const = 0;
  // References at RegressionView(model, p)'s output.
  virtual absl::StatusOr<Augmentation> Augment(
      const torch::nn::Sequential& model, int p) = 0;
};

struct PipelineOptions {
  // Slice with NNSlicer (false: every weight free, the "no slice" ablation).
  bool slice = true;
  SliceOptions slicer;
  TunerOptions tuner;
  // Transform into the regression model (false: cross-entropy fine-tuning
  // of the whole model on T's inputs and labels, the "no transform"
  // ablation; slicing is then skipped).
  bool transform = true;
  // At most this many slicing inputs (a seeded sample; 0: all).
  int64_t max_slice_inputs = 0;
  uint64_t seed = 1;
};

struct PipelineResult {
  std::string augmenter;
  Augmentation augmentation;  // its figures (the tensors are dropped)
  std::vector<Slice> slices;
  TuneReport tune;
  double augment_seconds = 0, slice_seconds = 0, tune_seconds = 0;
  int64_t slice_inputs = 0;
  bool profile_online = false;
};

// Runs augment, slice, tune and sync on `model`. Slicing uses `profile`
// (the online one) when given, else the exact offline profile of
// `slice_inputs`; the criteria of slicing are the classes of
// `slice_labels` (criterion c = class c, output neuron c).
absl::StatusOr<PipelineResult> RunPipeline(
    torch::nn::Sequential& model, Augmenter& augmenter, const Profile* profile,
    const at::Tensor& slice_inputs, const at::Tensor& slice_labels,
    const LabelledData& guard, const PipelineOptions& options);

// The "no transform" ablation: cross-entropy fine-tuning of every parameter
// of `model` on (train.inputs, train.labels), with the tuner's lr grid,
// early stopping on the validation cross-entropy, and the accuracy guard.
absl::StatusOr<TuneReport> TuneCrossEntropy(torch::nn::Sequential& model,
                                            const TuningData& train,
                                            const TuningData& validation,
                                            const LabelledData& guard,
                                            const TunerOptions& options);

}  // namespace posttrain

#endif  // POSTTRAIN_TUNER_PIPELINE_H_

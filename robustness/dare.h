// Dare (paper §4.1; ALGORITHMS.md §3): the post-training task that mines the
// training history (HistoryMiner, Algorithm 1) for references, and its
// named ablations, built by MakeDareTask.
//
//   variant            presets                  history model per sample
//   dare               (none)                   the most confident (Alg. 1)
//   dare_no_slice      slice = false            the most confident (Dare−s)
//   dare_no_transform  slice = transform = false  the most confident
//                      (Dare−sl: cross-entropy on T's inputs)
//   dare_last          tuner.p = 0              the most confident (p = 0)
//   dare_random        (none)                   a random one (Dare_rand)
//
// Presets never replace a setting the user made: a preset field the user
// left at its library default takes the preset; one set to another value
// that differs from the preset is an InvalidArgument naming the field, the
// variant and both values. (A field set explicitly to its default value is
// indistinguishable from one left alone, and takes the preset.)
//
// Data: `validation` is the held-out half handed to the callback; a seeded
// guard_fraction of it is the guard split (lr choice, early stopping,
// accuracy guard), the rest is D for Algorithm 1. `slice_data` is D'_c (the
// training inputs of each class; at most pipeline.max_slice_inputs of them,
// a seeded sample). One seed, pipeline.seed, drives every draw.
//
// Example:
//   posttrain::DareOptions dare;
//   dare.variant = "dare";
//   dare.validation = {val_images, val_labels};
//   dare.slice_data = {train_images, train_labels};
//   absl::StatusOr<std::unique_ptr<posttrain::PostTrainTask>> task =
//       posttrain::MakeDareTask(dare);
//   if (!task.ok()) return task.status();
#ifndef POSTTRAIN_ROBUSTNESS_DARE_H_
#define POSTTRAIN_ROBUSTNESS_DARE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "robustness/history_miner.h"
#include "tuner/task.h"

namespace posttrain {

struct DareVariant {
  std::string name;
  VariantPresets presets;  // the settings the variant fixes
  MinerOptions::Mode mode = MinerOptions::Mode::kBest;
  // `user` with the presets applied (ApplyPresets, tuner/task.h).
  absl::StatusOr<PipelineOptions> Apply(const PipelineOptions& user) const {
    return ApplyPresets(name, presets, user);
  }
};

// The variants in the table above, by name; InvalidArgument naming the
// unknown one (and listing the known ones).
absl::StatusOr<DareVariant> DareVariantByName(const std::string& name);
std::vector<std::string> DareVariantNames();

// The phase's settings that Dare uses unless told otherwise: the library's
// PipelineOptions with at most 10 000 slicing inputs.
PipelineOptions DefaultDarePipeline();

struct DareOptions {
  // dare, dare_no_slice, dare_no_transform, dare_last or dare_random.
  std::string variant = "dare";
  // The held-out half: the guard split and D (required, >= 2 inputs with
  // int64 class labels).
  LabelledData validation;
  // The share of `validation` that is the guard split, in (0, 1).
  double guard_fraction = 0.1;
  // At most this many inputs of D are mined (a seeded sample; 0: all).
  int64_t max_mine_inputs = 0;
  // D'_c, the inputs sliced with their class labels; empty: D.
  LabelledData slice_data;
  // The phase's settings; the variant's presets apply under them.
  PipelineOptions pipeline = DefaultDarePipeline();
  // Inputs per forward while mining.
  int64_t mine_batch_size = 256;
};

// The seeded split of the held-out half that Dare and the
// adversarial-training baselines share: `guard_fraction` of it (at least
// one input, and at least one left) is the guard split, the rest (at most
// `max_rest` of it when > 0) is D. Same seed, same split.
struct GuardSplit {
  LabelledData guard, rest;
};
absl::StatusOr<GuardSplit> SplitForGuard(const LabelledData& validation,
                                         double guard_fraction, uint64_t seed,
                                         int64_t max_rest = 0);

// The Dare task. Errors (InvalidArgument): an unknown variant, a preset
// conflict, missing or mislabelled validation data, a guard_fraction
// outside (0, 1).
absl::StatusOr<std::unique_ptr<PostTrainTask>> MakeDareTask(
    DareOptions options);

}  // namespace posttrain

#endif  // POSTTRAIN_ROBUSTNESS_DARE_H_

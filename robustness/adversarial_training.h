// The adversarial-training baselines of the paper's robustness comparison
// (§4.2.2; ALGORITHMS.md §7) as post-training tasks: C&W-AT, FGSM-AT,
// JSMA-AT and PGD-AT fine-tune M with cross-entropy on adversarial
// examples of its own training half, crafted once against M. They run
// through the same pipeline as Dare, so they get the same learning-rate
// grid, tuning epochs, early stopping and accuracy guard, on the same
// seeded guard split of the held-out half (SplitForGuard, dare.h):
//
//   name     attack (crafting settings; cheaper ones allowed, recorded)
//   cw_at    C&W L2, CwOptions (default here: 2 binary-search steps of
//            50 iterations, against the evaluation's 5 × 100)
//   fgsm_at  FGSM, AttackOptions (ε 0.1)
//   jsma_at  JSMA, JsmaOptions, a seeded random target per image
//   pgd_at   PGD, AttackOptions (ε 0.1, α 0.01, 40 steps, random start)
//
// Presets: slice = transform = false (every parameter is tuned, on the
// true labels). The tuning set holds `samples` training images (a seeded
// sample; the paper matches Dare's |T|), the validation set (early
// stopping) their counterpart crafted on the guard split; the guard itself
// is clean accuracy on the guard split, as for Dare.
//
// Example:
//   posttrain::AdversarialTrainingOptions at;
//   at.method = "pgd_at";
//   at.train = {train_images, train_labels};
//   at.validation = {val_images, val_labels};
//   at.samples = 6869;  // Dare's |T|
//   absl::StatusOr<std::unique_ptr<posttrain::PostTrainTask>> task =
//       posttrain::MakeAdversarialTrainingTask(at);
//   if (!task.ok()) return task.status();
//
// Thread safety: a task is used by one phase at a time.
#ifndef POSTTRAIN_ROBUSTNESS_ADVERSARIAL_TRAINING_H_
#define POSTTRAIN_ROBUSTNESS_ADVERSARIAL_TRAINING_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "robustness/attacks.h"
#include "robustness/dare.h"
#include "tuner/task.h"

namespace posttrain {

// C&W's cheaper crafting settings for cw_at.
CwOptions CheapCwForTraining();

struct AdversarialTrainingOptions {
  std::string method = "pgd_at";  // cw_at, fgsm_at, jsma_at or pgd_at
  LabelledData train;             // the training half (required)
  LabelledData validation;        // the held-out half (required)
  double guard_fraction = 0.1;    // as DareOptions
  // Training images crafted for the tuning set (-1: all of `train`; 0:
  // none, and the phase keeps the original, as when Dare mines nothing).
  int64_t samples = -1;
  // Guard-split images crafted for early stopping (-1: all of it).
  int64_t validation_samples = -1;
  AttackOptions linf;  // fgsm_at, pgd_at
  CwOptions cw = CheapCwForTraining();
  JsmaOptions jsma;
  PipelineOptions pipeline = DefaultDarePipeline();
};

std::vector<std::string> AdversarialTrainingNames();

// The crafting seeds are the phase's: pipeline.seed for the tuning set
// (PGD's start, JSMA's targets), pipeline.seed + 1 for its validation
// counterpart; Describe() records them with the attack's options.
// Errors (InvalidArgument): an unknown method (listing the known ones), a
// preset conflict, missing data, counts below -1.
absl::StatusOr<std::unique_ptr<PostTrainTask>> MakeAdversarialTrainingTask(
    AdversarialTrainingOptions options);

}  // namespace posttrain

#endif  // POSTTRAIN_ROBUSTNESS_ADVERSARIAL_TRAINING_H_

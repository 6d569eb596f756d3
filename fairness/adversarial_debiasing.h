// ADV, the adversarial-debiasing baseline (Zhang, Lemoine and Mitchell,
// 2018, in the form of AIF360's AdversarialDebiasing; ALGORITHMS.md §7): the
// classifier and an adversary train together. The adversary sees the
// classifier's favourable-label score and, in the equalized-odds form (the
// default), the true label, and predicts the protected attribute. Each
// classifier parameter's gradient g of its own loss loses its projection on
// the adversary's gradient h and, further, α·h:
//
//   g ← g − (g·ĥ) ĥ − α h,   ĥ = h / ‖h‖   (per parameter tensor, as AIF360)
//
// so the classifier learns while making the adversary's task harder. The
// adversary descends its own loss.
//
// As in AIF360: the adversary's input is s = sigmoid((1 + |c|)·z) with a
// learned scalar c, z the classifier's favourable-label logit, and in the
// equalized-odds form [s, s·y, s·(1 − y)]; one linear unit predicts A
// (binary cross-entropy). Where we differ, to keep the comparison fair
// (the issue: "the same training configuration as the original model"):
// the classifier is the caller's model (the reference MLP, two logits: z =
// logit₁ − logit₀), trained with the original's Adam learning rate, batch
// size, epochs and batch order (fairness/baselines.h); AIF360 uses its own
// one-hidden-layer network and 50 epochs. The adversary uses Adam at
// `adversary_lr`.
//
// Example:
//   posttrain::AdversarialDebiasingOptions adv;
//   torch::nn::Sequential fair = posttrain::ReferenceMlp(encoded->features, 1);
//   absl::StatusOr<posttrain::AdversarialDebiasingResult> r =
//       posttrain::TrainAdversarialDebiasing(fair, encoded->train, adv);
//   if (!r.ok()) return r.status();
//
// Thread safety: the model must not be used meanwhile.
#ifndef POSTTRAIN_FAIRNESS_ADVERSARIAL_DEBIASING_H_
#define POSTTRAIN_FAIRNESS_ADVERSARIAL_DEBIASING_H_

#include <torch/nn/modules/container/sequential.h>

#include <string>

#include "absl/status/statusor.h"
#include "fairness/baselines.h"
#include "fairness/tabular.h"

namespace posttrain {

struct AdversarialDebiasingOptions {
  TabularTrainOptions train;      // the classifier's configuration
  double adversary_weight = 0.1;  // α (AIF360's adversary_loss_weight)
  double adversary_lr = 1e-3;     // the adversary's Adam learning rate
  bool equalized_odds = true;     // the adversary also sees the true label
};

struct AdversarialDebiasingResult {
  int epochs = 0;
  // Mean losses over the last epoch: the classifier's cross-entropy and the
  // adversary's binary cross-entropy (ln 2 ≈ 0.693 is a blind adversary
  // with balanced groups).
  double classifier_loss = 0;
  double adversary_loss = 0;
  // Every setting, as JSON, for reports.
  std::string Describe(const AdversarialDebiasingOptions& options) const;
};

// Trains `model` (two logits; class 1 favourable) on `train` from its
// current weights. Errors: an empty split, a model without two outputs,
// bad options (α < 0, a learning rate <= 0).
absl::StatusOr<AdversarialDebiasingResult> TrainAdversarialDebiasing(
    torch::nn::Sequential& model, const TabularSplit& train,
    const AdversarialDebiasingOptions& options);

}  // namespace posttrain

#endif  // POSTTRAIN_FAIRNESS_ADVERSARIAL_DEBIASING_H_

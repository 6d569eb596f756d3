// Gradient-sign L∞ attacks on a classifier, and its top-1 accuracy:
//   FGSM: Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial
//         Examples" (ICLR 2015).
//   PGD:  Madry et al., "Towards Deep Learning Models Resistant to Adversarial
//         Attacks" (ICLR 2018).
// Both are untargeted (they raise the cross-entropy of the true label), take
// inputs in [0, 1] and clip their outputs to [0, 1]. Defaults follow
// ALGORITHMS.md §6 (28×28 grey images).
//
// Every function runs the model in eval mode (EvalModeGuard; the modes are
// restored), batch by batch on the device of the model's first parameter,
// and returns its result on the inputs' device. The input tensor is never
// modified, and the gradients (.grad) of the model's parameters are left as
// they were: gradients are taken with respect to the inputs only.
//
// Example:
//   AttackOptions pgd;
//   pgd.epsilon = 0.1;
//   pgd.seed = 7;
//   PT_ASSIGN_OR_RETURN(at::Tensor adv,
//                       Pgd(model, data.test.images, data.test.labels, pgd));
//   PT_ASSIGN_OR_RETURN(double robust,
//                       Accuracy(model, adv, data.test.labels));
//
// Thread safety: the functions use `model` (its modes change for the
// duration of a call); the caller keeps other threads from using it
// meanwhile.
#ifndef POSTTRAIN_ROBUSTNESS_ATTACKS_H_
#define POSTTRAIN_ROBUSTNESS_ATTACKS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace torch::nn {
class Sequential;
}  // namespace torch::nn

namespace posttrain {

struct AttackOptions {
  double epsilon = 0.1;      // L∞ radius; inputs live in [0, 1]
  double alpha = 0.01;       // PGD step size
  int steps = 40;            // PGD steps
  bool random_start = true;  // PGD: uniform start in the ε-ball
  uint64_t seed = 0;         // PGD random start (a torch CPU generator seeded
                             // with this; same seed → same output)
  int64_t batch_size = 256;  // inputs per forward/backward
};

// The arguments shared by every function below. `inputs` is a floating-point
// tensor [N, ...] with N >= 1 that the model accepts; `labels` holds N
// integer class indices (shape [N]) in [0, number of model outputs). The
// model maps a batch [B, ...] to logits [B, C].
// Errors: InvalidArgument naming the problem (an option out of range, empty
// inputs, a label count mismatch, a label out of range, a model that is
// empty or does not return [B, C] logits); errors thrown by torch are
// returned as statuses (CallTorch).

// Untargeted FGSM: x + ε·sign(∇x CE(model(x), y)), clipped to [0,1].
// Reads epsilon and batch_size; ε = 0 returns a copy of the inputs.
absl::StatusOr<at::Tensor> Fgsm(const torch::nn::Sequential& model,
                                const at::Tensor& inputs,
                                const at::Tensor& labels,
                                const AttackOptions& options = {});

// Untargeted PGD: `steps` steps of α·sign(grad), projected to the ε-ball
// around x and to [0,1]. With random_start, starts from x + U(-ε, ε)
// (clipped to [0,1]); the noise for all N inputs is drawn at once, so the
// output depends on the seed but not on batch_size.
absl::StatusOr<at::Tensor> Pgd(const torch::nn::Sequential& model,
                               const at::Tensor& inputs,
                               const at::Tensor& labels,
                               const AttackOptions& options = {});

// Top-1 accuracy in [0,1] of model on inputs (eval mode, no grad, batched).
absl::StatusOr<double> Accuracy(const torch::nn::Sequential& model,
                                const at::Tensor& inputs,
                                const at::Tensor& labels,
                                int64_t batch_size = 1000);

}  // namespace posttrain

#endif  // POSTTRAIN_ROBUSTNESS_ATTACKS_H_

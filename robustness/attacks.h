// Adversarial attacks on a classifier, what they achieved, and its top-1
// accuracy:
//   FGSM: Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial
//         Examples" (ICLR 2015).
//   BIM:  Kurakin, Goodfellow, Bengio, "Adversarial Examples in the Physical
//         World" (ICLR workshop 2017): PGD without the random start.
//   PGD:  Madry et al., "Towards Deep Learning Models Resistant to Adversarial
//         Attacks" (ICLR 2018).
//   C&W:  Carlini, Wagner, "Towards Evaluating the Robustness of Neural
//         Networks" (S&P 2017), the L2 attack.
//   JSMA: Papernot et al., "The Limitations of Deep Learning in Adversarial
//         Settings" (EuroS&P 2016), targeted, pairwise saliency.
// FGSM, BIM, PGD and C&W are untargeted (FGSM, BIM and PGD raise the
// cross-entropy of the true label). All take inputs in [0, 1] and clip
// their outputs to [0, 1]. Defaults follow ALGORITHMS.md §6 (28×28 grey
// images); every option is a field, and Describe() records them all.
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
//   PT_ASSIGN_OR_RETURN(at::Tensor targets,
//                       RandomTargets(data.test.labels, 10, /*seed=*/7));
//   PT_ASSIGN_OR_RETURN(at::Tensor jsma,
//                       Jsma(model, data.test.images, targets));
//   PT_ASSIGN_OR_RETURN(AttackReport report,
//                       EvaluateAttack(model, data.test.images, jsma,
//                                      data.test.labels, targets));
//
// Thread safety: the functions use `model` (its modes change for the
// duration of a call); the caller keeps other threads from using it
// meanwhile.
#ifndef POSTTRAIN_ROBUSTNESS_ATTACKS_H_
#define POSTTRAIN_ROBUSTNESS_ATTACKS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

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
  // The options as JSON (name: "fgsm", "bim" or "pgd").
  std::string Describe(const std::string& name) const;
};

// BIM's defaults: ε 0.1, α 0.01, 20 steps, no random start.
AttackOptions BimDefaults();

// C&W L2 (untargeted): minimise ‖x' − x‖² + c·max(Z_y − max_{i≠y} Z_i, −κ)
// over x' = (tanh(w) + 1)/2 with Adam, for each c of a per-input binary
// search (c grows ×10 until the first success, then bisects). The
// successful x' of smallest L2 over all searches is returned; an input
// never fooled is returned unchanged.
struct CwOptions {
  double kappa = 0;  // confidence margin κ
  double lr = 0.01;  // Adam
  int binary_search_steps = 5;
  double initial_c = 1e-2;
  int iterations = 100;  // Adam steps per c
  // Stop a search early when the loss has not fallen by 0.01% over the
  // last iterations/10 steps (Carlini and Wagner's abort_early).
  bool abort_early = true;
  int64_t batch_size = 256;
  std::string Describe() const;
};

// JSMA (targeted): while the prediction is not the target and fewer than
// ⌈γ·n⌉ of the n input features have changed, pick the pair of features
// (p, q) still in the search domain maximising −α·β, with α = ∂Z_t/∂x_p +
// ∂Z_t/∂x_q > 0 and β = the same for the sum of the other logits < 0 (θ >
// 0; the signs swap for θ < 0), add θ to both (clipped to [0, 1]) and take
// them out of the domain. Gradients are of the logits (as cleverhans).
// Per-input state (domain, activity) lives in tensors: the batch runs as
// one. On the CPU (float and double) the pair search is a loop over each
// input's domain pairs (no n² matrices, inputs in parallel); on a GPU, and
// for other types, it is the pair matrix, 32 inputs at a time (three
// [32, n, n] matrices). Both pick the same pair, so the attack is the same.
struct JsmaOptions {
  double theta = 1.0;
  double gamma = 0.1;  // largest share of features changed
  int64_t batch_size = 256;
  // Force the matrix search on the CPU too (for tests).
  bool pair_matrix = false;
  std::string Describe() const;
};

// Targets for JSMA: for each label y, (y + k) mod classes with k uniform in
// 1..classes−1 (a CPU generator seeded with `seed`).
absl::StatusOr<at::Tensor> RandomTargets(const at::Tensor& labels,
                                         int64_t classes, uint64_t seed);

// What an attack achieved on `inputs` (labels `labels`), given its output
// `adversarial`. An input counts when the model classified it correctly;
// success: the adversarial version is misclassified, or, when `targets`
// is given (JSMA), classified as its target. Norms are of the perturbation
// (flattened per input) over the successful inputs.
struct AttackReport {
  int64_t inputs = 0;
  int64_t correct = 0;         // classified correctly before the attack
  int64_t successes = 0;       // of those
  double success_rate = 0;     // successes / correct (0 when none correct)
  double robust_accuracy = 0;  // accuracy on the adversarial inputs
  double mean_l2 = 0, mean_linf = 0;
  std::string ToJson() const;
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

// BIM: Pgd with options.random_start ignored (always false).
absl::StatusOr<at::Tensor> Bim(const torch::nn::Sequential& model,
                               const at::Tensor& inputs,
                               const at::Tensor& labels,
                               const AttackOptions& options = BimDefaults());

absl::StatusOr<at::Tensor> CarliniWagnerL2(const torch::nn::Sequential& model,
                                           const at::Tensor& inputs,
                                           const at::Tensor& labels,
                                           const CwOptions& options = {});

// `targets`: one class per input (RandomTargets for the paper's protocol).
absl::StatusOr<at::Tensor> Jsma(const torch::nn::Sequential& model,
                                const at::Tensor& inputs,
                                const at::Tensor& targets,
                                const JsmaOptions& options = {});

absl::StatusOr<AttackReport> EvaluateAttack(
    const torch::nn::Sequential& model, const at::Tensor& inputs,
    const at::Tensor& adversarial, const at::Tensor& labels,
    const at::Tensor& targets = at::Tensor(), int64_t batch_size = 1000);

// Top-1 accuracy in [0,1] of model on inputs (eval mode, no grad, batched).
absl::StatusOr<double> Accuracy(const torch::nn::Sequential& model,
                                const at::Tensor& inputs,
                                const at::Tensor& labels,
                                int64_t batch_size = 1000);

}  // namespace posttrain

#endif  // POSTTRAIN_ROBUSTNESS_ATTACKS_H_

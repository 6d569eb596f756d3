// CARE, the causality-based repair baseline (Sun, Sun, Pham and Shi, ICSE
// 2022; ALGORITHMS.md §7), implemented from its paper: there is no
// well-kept C++ library. Two steps on a trained model:
//
// 1. Fault localization. The fairness property is individual: a row and
//    its counterfactual, the same row with the protected feature flipped,
//    should get the same prediction. For every hidden neuron (the output
//    of every ReLU of the Sequential) and each of `intervention_values`
//    values evenly spaced over the range the neuron takes on the rows, the
//    intervention do(neuron = v) is applied to both members of every pair,
//    and D(v) = mean |P(fav | row) − P(fav | counterfactual)| is measured.
//    A neuron's causal effect is mean_v |D(v) − D|, D without intervention.
//    The `neurons` with the largest effect are kept.
// 2. Repair. Particle swarm optimization searches the kept neurons'
//    incoming weights and biases (one vector of all of them), minimising
//
//      fitness = (1 − α)·U + α·(1 − accuracy),
//
//    U the share of pairs whose predicted labels differ and accuracy on the
//    rows' true labels, both over the same rows. The swarm is the
//    constriction-factor PSO of Clerc and Kennedy (inertia 0.7298,
//    c₁ = c₂ = 1.49618); particle 0 starts at the original weights, the
//    others uniformly within ± `init_spread` × the layer's weight standard
//    deviation of them, so the result is never worse than the original under
//    the fitness. The best position found is written into the model.
//
// Choices the paper leaves open, recorded here and by CareResult::Describe:
// the effect measure (mean absolute change of D), the continuous D for
// ranking but the label-flip share U in the fitness, α = 0.8, 4 neurons,
// 10 intervention values, 30 particles, 40 iterations, the rows (up to
// 4,000 of the training split, the first ones of its seeded order).
//
// Example:
//   posttrain::CareOptions care;
//   absl::StatusOr<posttrain::CareResult> r = posttrain::RepairWithCare(
//       model, encoded->train, encoded->protected_feature, care);
//   if (r.ok()) std::printf("%s\n", r->Describe(care).c_str());
//
// Thread safety: the model must not be used meanwhile.
#ifndef POSTTRAIN_FAIRNESS_CARE_H_
#define POSTTRAIN_FAIRNESS_CARE_H_

#include <torch/nn/modules/container/sequential.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fairness/tabular.h"

namespace posttrain {

struct CareOptions {
  int64_t max_rows = 4000;  // the first rows of the split used
  int neurons = 4;
  int intervention_values = 10;
  int particles = 30;
  int iterations = 40;
  double alpha = 0.8;        // weight of (1 − accuracy) in the fitness
  double init_spread = 1.0;  // in weight standard deviations of the layer
  double inertia = 0.7298;
  double c1 = 1.49618, c2 = 1.49618;
  uint64_t seed = 1;
};

struct CareNeuron {
  int64_t module = 0;  // the ReLU's index in the Sequential
  int64_t unit = 0;
  double effect = 0;
};

struct CareResult {
  std::vector<CareNeuron> neurons;  // kept, largest effect first
  int64_t rows = 0;
  int64_t evaluations = 0;  // fitness evaluations
  double fitness_before = 0, fitness_after = 0;
  double unfair_before = 0, unfair_after = 0;  // U
  double accuracy_before = 0, accuracy_after = 0;
  // Every choice and figure, as JSON, for reports.
  std::string Describe(const CareOptions& options) const;
};

// U: the share of `x`'s rows whose prediction changes when the protected
// feature is flipped.
absl::StatusOr<double> CounterfactualFlipRate(
    const torch::nn::Sequential& model, const at::Tensor& x,
    int64_t protected_feature);

// Repairs `model` (a Sequential with ReLU hidden layers and two logits)
// on `split`. Errors: no ReLU, fewer than 2 rows, a protected feature out
// of range, options out of range.
absl::StatusOr<CareResult> RepairWithCare(torch::nn::Sequential& model,
                                          const TabularSplit& split,
                                          int64_t protected_feature,
                                          const CareOptions& options);

}  // namespace posttrain

#endif  // POSTTRAIN_FAIRNESS_CARE_H_

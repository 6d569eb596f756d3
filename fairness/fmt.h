// FMT (paper §5.1, Algorithm 2; ALGORITHMS.md §4): the fairness task of the
// post-training framework. It generates inputs from the training split's
// per-attribute marginals, pairs each with its counterfactual in the
// protected attribute, and asks the regression model to give both the
// output that M gives the more confident one; slicing is per protected
// group at the favourable-label logit (q = 80 by default).
//
//   variant           presets                     pairs
//   fmt               (none)                      Td: both members (double)
//   fmt_single        (none)                      Ts: the less confident one
//   fmt_random        (none)                      Td, uniform attribute values
//   fmt_no_slice      slice = false               Td
//   fmt_no_transform  slice = transform = false   Td, cross-entropy on M's
//                                                 label for σ
//   fmt_last          tuner.p = 0                 Td
// Presets apply under the user's settings (tuner/task.h: ApplyPresets).
//
// Per pair (FmtPairs): σ has A = privileged, σ' = σ with A = unprivileged;
// when conf(σ) < conf(σ') (conf = M's largest softmax probability) they
// swap; Y = M's regression output on σ. Ts gets (σ', Y); Td gets (σ', Y)
// and (σ, Y). Each sample's criterion (its mask) is its own group: its
// protected feature. Labels (for p = 0 and the cross-entropy ablation) are
// M's prediction on σ.
//
// Example:
//   posttrain::FmtOptions fmt;
//   fmt.data = std::make_shared<posttrain::TabularData>(std::move(*encoded));
//   absl::StatusOr<std::unique_ptr<posttrain::PostTrainTask>> task =
//       posttrain::MakeFmtTask(fmt);
//   if (!task.ok()) return task.status();
//
// Thread safety: a task is used by one phase at a time.
#ifndef POSTTRAIN_FAIRNESS_FMT_H_
#define POSTTRAIN_FAIRNESS_FMT_H_

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fairness/tabular.h"
#include "tuner/task.h"

namespace posttrain {

// The phase's settings FMT uses unless told otherwise: the library's
// PipelineOptions with q = 80.
PipelineOptions DefaultFmtPipeline();

struct FmtOptions {
  std::string variant = "fmt";
  // The encoded data set (required): train for the marginals and slicing,
  // validation for the guard.
  std::shared_ptr<const TabularData> data;
  // Generated σ for T and for its guard counterpart (0: as many as the
  // training and the validation rows).
  int64_t pairs = 0;
  int64_t guard_pairs = 0;
  PipelineOptions pipeline = DefaultFmtPipeline();
};

std::vector<std::string> FmtVariantNames();

// Errors (InvalidArgument): an unknown variant (listing the known ones), a
// preset conflict, no data, negative counts.
absl::StatusOr<std::unique_ptr<PostTrainTask>> MakeFmtTask(FmtOptions options);

// Algorithm 2's pairing for the given rows (float [N, d]; their protected
// feature is overwritten): T with references at RegressionView(model, p)'s
// output. `both`: Td (2N samples: the σ' of every pair, then the σ),
// else Ts (N). `swapped`, when given, receives how many pairs swapped.
absl::StatusOr<TuningData> FmtPairs(const torch::nn::Sequential& model, int p,
                                    const at::Tensor& rows,
                                    int64_t protected_feature, bool both,
                                    int64_t* swapped = nullptr);

// `n` rows drawn attribute by attribute: each attribute's encoded value
// from a uniformly drawn training row (its empirical marginal), or, with
// `uniform`, a uniform category or a uniform value in the training range.
// The protected feature is 0 (FmtPairs sets it).
at::Tensor DrawAttributes(const TabularData& data, int64_t n, bool uniform,
                          at::Generator& gen);

}  // namespace posttrain

#endif  // POSTTRAIN_FAIRNESS_FMT_H_

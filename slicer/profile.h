// Profile: the NNSlicer profile of a model (ALGORITHMS.md §1.1; Zhang et al.,
// "Dynamic Slicing for Deep Neural Networks", FSE 2020): mean activation of
// every neuron over a data set, overall and per slice criterion (a class
// label, or a protected-group id).
//
// Profile points are the inputs of the weighted layers (that is, the output
// of the previous weighted layer after its activation and pooling, or the
// model input) and the model's output. A neuron of a 4-D point is a channel,
// its value for one input the mean over positions; a neuron of a 2-D point is
// an element (so the Linear after a Flatten sees per-position values).
// Sums and counts are float64 / int64 running totals in one flat tensor each,
// so profiles merge by addition and ranks can all-reduce them.
//
// Example:
//   PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(model));
//   PT_ASSIGN_OR_RETURN(Profile profile,
//                       Profile::Create(view, images.slice(0, 0, 1), 10));
//   PT_RETURN_IF_ERROR(profile.AddBatch(view, images, labels));
//   PT_ASSIGN_OR_RETURN(at::Tensor mean, profile.Mean(0));  // first point
//
// Thread safety: not thread-safe; one writer at a time.
#ifndef POSTTRAIN_SLICER_PROFILE_H_
#define POSTTRAIN_SLICER_PROFILE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_view.h"
#include "slicer/profile.pb.h"

namespace torch::nn {
class Sequential;
}  // namespace torch::nn

namespace posttrain {

class Profile {
 public:
  // An empty profile of `view`'s points, with `num_criteria` criteria
  // (criterion ids 0 .. num_criteria - 1). The feature counts are found by
  // one forward of `example_input` (one sample, batch dimension included).
  static absl::StatusOr<Profile> Create(const ModelView& view,
                                        const at::Tensor& example_input,
                                        int num_criteria);

  // Every forward here runs each layer in eval mode (no grad) and restores
  // its mode.
  // Adds a batch: runs `view` on `inputs` (no grad) and adds every sample to
  // the overall row and to the row of its criterion (`criteria`: int64 [B],
  // -1 = none). Errors: NaN or infinite activations (naming the point),
  // criterion ids out of range, shape mismatches.
  absl::Status AddBatch(const ModelView& view, const at::Tensor& inputs,
                        const at::Tensor& criteria);
  // Adds activations already tapped at the points (one tensor per point,
  // [B, ...]).
  absl::Status AddActivations(const std::vector<at::Tensor>& points,
                              const at::Tensor& criteria);
  // The neuron values of every point for `inputs` (no grad): float64
  // [B, features] each, as profiled (channels averaged over positions).
  absl::StatusOr<std::vector<at::Tensor>> NeuronValues(
      const ModelView& view, const at::Tensor& inputs) const;
  // Adds another profile of the same points and criteria.
  absl::Status Merge(const Profile& other);

  int num_points() const { return static_cast<int>(points_.size()); }
  const pb::ProfilePoint& point(int i) const { return points_[i]; }
  int num_criteria() const { return num_criteria_; }
  // Samples counted overall, and for criterion c.
  int64_t count() const;
  int64_t criterion_count(int c) const;
  // Mean activation of every neuron of point `p`, float64 [features]:
  // overall, or over the samples of criterion c. FailedPrecondition when no
  // sample was counted there.
  absl::StatusOr<at::Tensor> Mean(int p) const;
  absl::StatusOr<at::Tensor> CriterionMean(int p, int c) const;

  // The running totals, for all-reduce across ranks (sum both, in place).
  at::Tensor& sums() { return sums_; }
  at::Tensor& counts() { return counts_; }
  const at::Tensor& sums() const { return sums_; }
  const at::Tensor& counts() const { return counts_; }

  pb::Profile ToProto() const;
  // Validates sizes and values; errors name the problem.
  static absl::StatusOr<Profile> FromProto(const pb::Profile& proto);

 private:
  Profile() = default;
  absl::StatusOr<at::Tensor> RowMean(int row, int p) const;

  std::vector<pb::ProfilePoint> points_;
  std::vector<int64_t> offset_;  // first feature of each point
  int64_t total_features_ = 0;
  int num_criteria_ = 0;
  at::Tensor sums_;    // float64 [1 + num_criteria, total_features]
  at::Tensor counts_;  // int64 [1 + num_criteria]
};

// The exact offline profile: one pass of `model` (eval mode, no grad) over
// `inputs` in batches of `batch_size`, sample i counted for criterion
// criteria[i] (int64 [N], -1: overall only).
absl::StatusOr<Profile> ProfileModel(const torch::nn::Sequential& model,
                                     const at::Tensor& inputs,
                                     const at::Tensor& criteria,
                                     int num_criteria,
                                     int64_t batch_size = 256);

}  // namespace posttrain

#endif  // POSTTRAIN_SLICER_PROFILE_H_

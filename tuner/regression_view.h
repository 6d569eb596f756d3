// RegressionView: the isomorphic regression model M_T of a classifier M
// (paper §3.1.2; ALGORITHMS.md §2). With M's weighted layers l1..lr, M_T
// keeps l1..l(r−p) and outputs the post-activation output of l(r−p): the
// layers of M up to (not including) weighted layer l(r−p+1), so the ReLU,
// pooling or Dropout after l(r−p) belong to it. Counting weighted layers
// makes "step back over layers without parameters" automatic. p = 0 keeps
// the whole model and outputs the softmax probability of the true class.
//
// The view runs the user's (or a copy's) modules through a ModelView; it
// never re-implements a layer.
//
// Example:
//   PT_ASSIGN_OR_RETURN(RegressionView m_t, RegressionView::Create(model));
//   PT_ASSIGN_OR_RETURN(at::Tensor y, m_t.Forward(images));  // [B, 64]
//
// Thread safety: as ModelView.
#ifndef POSTTRAIN_TUNER_REGRESSION_VIEW_H_
#define POSTTRAIN_TUNER_REGRESSION_VIEW_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_view.h"

namespace posttrain {

class RegressionView {
 public:
  // Errors: p < 0, p >= the number of weighted layers (nothing would be
  // kept), an unsupported layer.
  static absl::StatusOr<RegressionView> Create(
      const torch::nn::Sequential& model, int p = 1);

  const ModelView& view() const { return view_; }
  int p() const { return p_; }
  // M_T runs layers [0, end()) of view().
  int end() const { return end_; }
  // Index into view().weighted_layers() of l(r−p) (p = 0: the last).
  int target() const { return target_; }
  // Width of the output: neurons of l(r−p) times positions for a conv
  // output (p >= 1), 1 for p = 0.
  int64_t outputs() const { return outputs_; }
  // Output elements per neuron of l(r−p) (positions of a conv feature map,
  // 1 for a Linear and for p = 0).
  int64_t per_neuron() const { return per_neuron_; }
  // Names of the layers of M_T (state-dict prefixes), for sync.
  std::vector<std::string> layer_names() const;

  // The regression output, [B, outputs()]. p = 0 needs `labels` (int64
  // [B]) and gives the softmax probability of each sample's label.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& inputs,
                                     const at::Tensor& labels = {}) const;

 private:
  RegressionView(ModelView view, int p) : view_(std::move(view)), p_(p) {}
  ModelView view_;
  int p_ = 1;
  int end_ = 0;
  int target_ = 0;
  int64_t outputs_ = 0;
  int64_t per_neuron_ = 1;
};

}  // namespace posttrain

#endif  // POSTTRAIN_TUNER_REGRESSION_VIEW_H_

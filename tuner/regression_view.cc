#include "tuner/regression_view.h"

#include <torch/torch.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {

absl::StatusOr<RegressionView> RegressionView::Create(
    const torch::nn::Sequential& model, int p) {
  if (p < 0) return absl::InvalidArgumentError("p must be >= 0");
  PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(model));
  const std::vector<int>& weighted = view.weighted_layers();
  const int r = static_cast<int>(weighted.size());
  if (p >= r) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model has ", r, " weighted layer(s); p = ", p,
                     " would keep none"));
  }
  RegressionView m(std::move(view), p);
  m.target_ = r - 1 - p;
  m.end_ = p == 0 ? m.view_.size() : weighted[r - p];
  const pb::LayerSpec& spec = m.view_.layers()[weighted[m.target_]].spec;
  const int64_t neurons = spec.kind() == pb::LayerSpec::LINEAR
                              ? spec.out_features()
                              : spec.out_channels();
  if (p == 0) {
    m.outputs_ = 1;
    m.per_neuron_ = 1;
  } else {
    // The output is what the next weighted layer takes in: a Linear's
    // in_features (neurons × positions after a Flatten).
    const pb::LayerSpec& next = m.view_.layers()[weighted[r - p]].spec;
    if (next.kind() == pb::LayerSpec::LINEAR) {
      m.outputs_ = next.in_features();
      if (m.outputs_ % neurons != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "layer '", m.view_.layers()[weighted[m.target_]].name,
            "': ", neurons, " neurons cannot feed ", m.outputs_, " inputs"));
      }
      m.per_neuron_ = m.outputs_ / neurons;
    } else {
      return absl::UnimplementedError(
          absl::StrCat("regression output before the Conv2d '",
                       m.view_.layers()[weighted[r - p]].name,
                       "': choose p so that l(r-p) feeds a Linear"));
    }
  }
  return m;
}

std::vector<std::string> RegressionView::layer_names() const {
  std::vector<std::string> names;
  for (int i = 0; i < end_; ++i) names.push_back(view_.layers()[i].name);
  return names;
}

absl::StatusOr<at::Tensor> RegressionView::Forward(
    const at::Tensor& inputs, const at::Tensor& labels) const {
  PT_ASSIGN_OR_RETURN(at::Tensor out, view_.Forward(inputs, end_));
  at::Tensor y;
  absl::Status status;
  PT_RETURN_IF_ERROR(CallTorch("regression output", [&] {
    if (p_ > 0) {
      y = out.reshape({out.size(0), -1});
      return;
    }
    if (!labels.defined() || labels.numel() != out.size(0)) {
      status = absl::InvalidArgumentError(
          "p = 0 needs one label per input (the true class)");
      return;
    }
    y = torch::softmax(out, 1).gather(
        1, labels.to(out.device(), torch::kLong).reshape({-1, 1}));
  }));
  PT_RETURN_IF_ERROR(status);
  return y;
}

}  // namespace posttrain

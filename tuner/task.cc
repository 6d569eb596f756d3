#include "tuner/task.h"

#include <torch/torch.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

std::string Show(bool v) { return v ? "true" : "false"; }
std::string Show(int v) { return absl::StrCat(v); }

template <typename T>
absl::Status Merge(const std::string& variant, const char* field,
                   const std::optional<T>& preset, const T& default_value,
                   T* value) {
  if (!preset.has_value() || *value == *preset) return absl::OkStatus();
  if (*value == default_value) {
    *value = *preset;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "variant '", variant, "' presets ", field, " = ", Show(*preset), ", but ",
      field, " = ", Show(*value),
      " was set; leave it at its default or choose another variant"));
}

}  // namespace

absl::StatusOr<PipelineOptions> ApplyPresets(const std::string& variant,
                                             const VariantPresets& presets,
                                             const PipelineOptions& user) {
  const PipelineOptions d;
  PipelineOptions o = user;
  PT_RETURN_IF_ERROR(
      Merge(variant, "tuner.p", presets.p, d.tuner.p, &o.tuner.p));
  PT_RETURN_IF_ERROR(Merge(variant, "slice", presets.slice, d.slice, &o.slice));
  PT_RETURN_IF_ERROR(Merge(variant, "transform", presets.transform, d.transform,
                           &o.transform));
  return o;
}

absl::StatusOr<at::Tensor> ForwardFirstInput(const torch::nn::Sequential& model,
                                             const at::Tensor& inputs,
                                             const std::string& what) {
  if (!inputs.defined() || inputs.dim() == 0 || inputs.size(0) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": no inputs"));
  }
  at::Tensor out;
  absl::Status fits = CallTorch("", [&] {
    torch::NoGradGuard no_grad;
    torch::nn::Sequential m = model;
    EvalModeGuard eval(*m);
    at::Device device(torch::kCPU);
    if (!m->parameters().empty()) device = m->parameters()[0].device();
    out = m->forward(inputs.narrow(0, 0, 1).to(device));
  });
  if (!fits.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": the inputs (", absl::StrJoin(inputs.sizes().vec(), "x"),
        ") do not fit the model: ", fits.message()));
  }
  return out;
}

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

GuardSpec AccuracyGuard(LabelledData data) {
  GuardSpec g;
  g.metric = "accuracy";
  g.data = data;
  g.evaluate = AccuracyOn(std::move(data));
  return g;
}

SlicingPlan ClassSlicingPlan(const LabelledData& data, int64_t classes) {
  SlicingPlan plan;
  plan.inputs = data.inputs;
  plan.criteria = data.labels;
  for (int64_t c = 0; c < classes; ++c) plan.outputs.push_back(c);
  return plan;
}

}  // namespace posttrain

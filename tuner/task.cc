#include "tuner/task.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

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
      "variant '", variant, "' presets ", field, " = ", Show(*preset),
      ", but ", field, " = ", Show(*value),
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
  PT_RETURN_IF_ERROR(
      Merge(variant, "transform", presets.transform, d.transform, &o.transform));
  return o;
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

#include "slicer/profile.h"

#include <torch/torch.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

constexpr uint32_t kProfileVersion = 1;

// Per-sample neuron values of one point: [B, C] for 4-D (mean over
// positions), [B, F] otherwise, as float64.
// Reduced on the tensor's device, then moved to the CPU (a profile lives on
// the CPU whatever device the model trains on).
at::Tensor Neurons(const at::Tensor& t) {
  if (t.dim() == 4) return t.to(torch::kDouble).mean({2, 3}).cpu();
  return t.to(torch::kDouble).reshape({t.size(0), -1}).cpu();
}

// The layer whose output a point is: the one before the weighted layer (-1:
// the model input), or the last layer for the output point.
int TapOf(const pb::ProfilePoint& point, const ModelView& view) {
  return point.layer_index() < 0 ? view.size() - 1 : point.layer_index() - 1;
}

// Runs `view` on `inputs` and returns the value of every point.
absl::StatusOr<std::vector<at::Tensor>> PointValues(
    const std::vector<pb::ProfilePoint>& points, const ModelView& view,
    const at::Tensor& inputs) {
  std::vector<int> taps;
  for (const auto& point : points) {
    const int t = TapOf(point, view);
    if (t >= view.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "profile point '", point.layer(), "' is not in this model"));
    }
    if (t >= 0) taps.push_back(t);
  }
  std::vector<at::Tensor> tapped;
  torch::NoGradGuard no_grad;
  // Profiles and slices describe the model as it predicts: BatchNorm with
  // its running statistics (which must not move), no Dropout.
  std::vector<std::unique_ptr<EvalModeGuard>> eval;
  for (int i = 0; i < view.size(); ++i) {
    eval.push_back(std::make_unique<EvalModeGuard>(view.module(i)));
  }
  PT_ASSIGN_OR_RETURN(at::Tensor out,
                      view.Forward(inputs, view.size(), taps, &tapped));
  (void)out;
  std::vector<at::Tensor> values;
  size_t next = 0;
  for (const auto& point : points) {
    values.push_back(TapOf(point, view) < 0 ? inputs : tapped[next++]);
  }
  return values;
}

}  // namespace

absl::StatusOr<Profile> Profile::Create(const ModelView& view,
                                        const at::Tensor& example_input,
                                        int num_criteria) {
  if (num_criteria < 0) {
    return absl::InvalidArgumentError("num_criteria must be >= 0");
  }
  Profile p;
  p.num_criteria_ = num_criteria;
  for (int w : view.weighted_layers()) {
    pb::ProfilePoint point;
    point.set_layer(view.layers()[w].name);
    point.set_layer_index(w);
    p.points_.push_back(point);
  }
  pb::ProfilePoint output;
  output.set_layer("output");
  output.set_layer_index(-1);
  p.points_.push_back(output);
  PT_ASSIGN_OR_RETURN(std::vector<at::Tensor> values,
                      PointValues(p.points_, view, example_input));
  for (size_t i = 0; i < p.points_.size(); ++i) {
    const at::Tensor& v = values[i];
    const int64_t features = v.dim() == 4 ? v.size(1) : v.numel() / v.size(0);
    p.points_[i].set_features(features);
    p.offset_.push_back(p.total_features_);
    p.total_features_ += features;
  }
  p.sums_ = torch::zeros({1 + num_criteria, p.total_features_}, torch::kDouble);
  p.counts_ = torch::zeros({1 + num_criteria}, torch::kLong);
  return p;
}

absl::Status Profile::AddBatch(const ModelView& view, const at::Tensor& inputs,
                               const at::Tensor& criteria) {
  PT_ASSIGN_OR_RETURN(std::vector<at::Tensor> values,
                      PointValues(points_, view, inputs));
  return AddActivations(values, criteria);
}

absl::StatusOr<std::vector<at::Tensor>> Profile::NeuronValues(
    const ModelView& view, const at::Tensor& inputs) const {
  PT_ASSIGN_OR_RETURN(std::vector<at::Tensor> values,
                      PointValues(points_, view, inputs));
  std::vector<at::Tensor> out;
  PT_RETURN_IF_ERROR(CallTorch("computing neuron values", [&] {
    for (const at::Tensor& v : values) out.push_back(Neurons(v));
  }));
  return out;
}

absl::Status Profile::AddActivations(const std::vector<at::Tensor>& values,
                                     const at::Tensor& criteria) {
  if (values.size() != points_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", points_.size(), " point tensors, got ", values.size()));
  }
  absl::Status status;
  PT_RETURN_IF_ERROR(CallTorch("adding to the profile", [&] {
    const int64_t batch = criteria.size(0);
    std::vector<at::Tensor> parts;
    for (size_t i = 0; i < values.size(); ++i) {
      at::Tensor n = Neurons(values[i]);
      if (n.size(0) != batch || n.size(1) != points_[i].features()) {
        status = absl::InvalidArgumentError(
            absl::StrCat("point '", points_[i].layer(), "': expected [", batch,
                         ", ", points_[i].features(), "] neurons, got [",
                         n.size(0), ", ", n.size(1), "]"));
        return;
      }
      if (!torch::isfinite(n).all().item<bool>()) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "point '", points_[i].layer(), "': NaN or infinite activations"));
        return;
      }
      parts.push_back(n);
    }
    at::Tensor c = criteria.to(torch::kCPU, torch::kLong);
    if (batch > 0 && (c.min().item<int64_t>() < -1 ||
                      c.max().item<int64_t>() >= num_criteria_)) {
      status = absl::InvalidArgumentError(
          absl::StrCat("criterion ids must be in [-1, ", num_criteria_, ")"));
      return;
    }
    at::Tensor all = torch::cat(parts, 1);  // [B, total]
    sums_[0] += all.sum(0);
    counts_[0] += batch;
    at::Tensor has = c.ge(0);
    if (has.any().item<bool>()) {
      at::Tensor rows = c.masked_select(has) + 1;
      sums_.index_add_(0, rows, all.index({has}));
      counts_.index_add_(0, rows, torch::ones_like(rows));
    }
  }));
  return status;
}

absl::Status Profile::Merge(const Profile& other) {
  if (other.num_criteria_ != num_criteria_ ||
      other.total_features_ != total_features_ ||
      other.points_.size() != points_.size()) {
    return absl::InvalidArgumentError(
        "cannot merge profiles of different points or criteria");
  }
  for (size_t i = 0; i < points_.size(); ++i) {
    if (points_[i].SerializeAsString() !=
        other.points_[i].SerializeAsString()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot merge: point ", i, " differs ('", points_[i].layer(),
          "' vs '", other.points_[i].layer(), "')"));
    }
  }
  sums_ += other.sums_;
  counts_ += other.counts_;
  return absl::OkStatus();
}

int64_t Profile::count() const { return counts_[0].item<int64_t>(); }

int64_t Profile::criterion_count(int c) const {
  if (c < 0 || c >= num_criteria_) return 0;
  return counts_[1 + c].item<int64_t>();
}

absl::StatusOr<at::Tensor> Profile::RowMean(int row, int p) const {
  if (p < 0 || p >= num_points()) {
    return absl::InvalidArgumentError(absl::StrCat("no profile point ", p));
  }
  const int64_t n = counts_[row].item<int64_t>();
  if (n == 0) {
    return absl::FailedPreconditionError(
        row == 0 ? std::string("the profile has no samples")
                 : absl::StrCat("criterion ", row - 1, " has no samples"));
  }
  return sums_[row].narrow(0, offset_[p], points_[p].features()) /
         static_cast<double>(n);
}

absl::StatusOr<at::Tensor> Profile::Mean(int p) const { return RowMean(0, p); }

absl::StatusOr<at::Tensor> Profile::CriterionMean(int p, int c) const {
  if (c < 0 || c >= num_criteria_) {
    return absl::InvalidArgumentError(absl::StrCat("no criterion ", c));
  }
  return RowMean(1 + c, p);
}

pb::Profile Profile::ToProto() const {
  pb::Profile out;
  out.set_version(kProfileVersion);
  for (const auto& p : points_) *out.add_points() = p;
  out.set_num_criteria(num_criteria_);
  at::Tensor s = sums_.contiguous();
  const double* sp = s.data_ptr<double>();
  out.mutable_sums()->Add(sp, sp + s.numel());
  at::Tensor c = counts_.contiguous();
  const int64_t* cp = c.data_ptr<int64_t>();
  out.mutable_counts()->Add(cp, cp + c.numel());
  return out;
}

absl::StatusOr<Profile> Profile::FromProto(const pb::Profile& proto) {
  if (proto.version() != kProfileVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("profile version ", proto.version(), " is not supported"));
  }
  if (proto.num_criteria() < 0 || proto.points_size() == 0) {
    return absl::InvalidArgumentError("profile has no points or bad criteria");
  }
  Profile p;
  p.num_criteria_ = proto.num_criteria();
  for (const auto& point : proto.points()) {
    if (point.features() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("profile point '", point.layer(), "' has no features"));
    }
    // Every feature needs a stored sum: a count beyond them is not
    // trusted (nor summed, which could overflow).
    if (point.features() > proto.sums_size() - p.total_features_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "profile point '", point.layer(), "' declares ", point.features(),
          " features; the profile holds ", proto.sums_size(), " sums"));
    }
    p.points_.push_back(point);
    p.offset_.push_back(p.total_features_);
    p.total_features_ += point.features();
  }
  const int64_t rows = 1 + static_cast<int64_t>(p.num_criteria_);
  // total_features_ <= sums_size() (above), so the product fits.
  if (rows > proto.sums_size() ||
      proto.sums_size() != rows * p.total_features_ ||
      proto.counts_size() != rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "profile holds ", proto.sums_size(), " sums and ", proto.counts_size(),
        " counts; its points need ", rows * p.total_features_, " and ", rows));
  }
  for (int64_t c : proto.counts()) {
    if (c < 0) return absl::InvalidArgumentError("negative profile count");
  }
  p.sums_ = torch::from_blob(const_cast<double*>(proto.sums().data()),
                             {rows, p.total_features_}, torch::kDouble)
                .clone();
  p.counts_ = torch::from_blob(const_cast<int64_t*>(proto.counts().data()),
                               {rows}, torch::kLong)
                  .clone();
  return p;
}

absl::StatusOr<Profile> ProfileModel(const torch::nn::Sequential& model,
                                     const at::Tensor& inputs,
                                     const at::Tensor& criteria,
                                     int num_criteria, int64_t batch_size) {
  if (batch_size <= 0) {
    return absl::InvalidArgumentError("batch_size must be positive");
  }
  if (!inputs.defined() || inputs.dim() == 0 || inputs.size(0) == 0) {
    return absl::InvalidArgumentError("no inputs to profile");
  }
  if (!criteria.defined() || criteria.numel() != inputs.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(inputs.size(0), " inputs need as many criterion ids"));
  }
  PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(model));
  at::Tensor device_inputs = inputs;
  PT_RETURN_IF_ERROR(CallTorch("moving inputs to the model's device", [&] {
    auto params = model->parameters();
    if (!params.empty()) device_inputs = inputs.to(params[0].device());
  }));
  PT_ASSIGN_OR_RETURN(
      Profile profile,
      Profile::Create(view, device_inputs.narrow(0, 0, 1), num_criteria));
  const int64_t n = inputs.size(0);
  for (int64_t b = 0; b < n; b += batch_size) {
    const int64_t len = std::min(batch_size, n - b);
    PT_RETURN_IF_ERROR(profile.AddBatch(view, device_inputs.narrow(0, b, len),
                                        criteria.narrow(0, b, len)));
  }
  return profile;
}

}  // namespace posttrain

#include "fairness/fmt.h"

#include <torch/torch.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model_view.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "tuner/regression_view.h"

namespace posttrain {
namespace {

struct FmtVariant {
  std::string name;
  VariantPresets presets;
  bool both = true;
  bool uniform = false;
};

std::vector<FmtVariant> Variants() {
  VariantPresets no_slice, no_transform, last;
  no_slice.slice = false;
  no_transform.slice = false;
  no_transform.transform = false;
  last.p = 0;
  return {{"fmt", {}, true, false},
          {"fmt_single", {}, false, false},
          {"fmt_random", {}, true, true},
          {"fmt_no_slice", no_slice, true, false},
          {"fmt_no_transform", no_transform, true, false},
          {"fmt_last", last, true, false}};
}

at::Device DeviceOf(const torch::nn::Sequential& model) {
  auto params = model->parameters();
  return params.empty() ? at::Device(torch::kCPU) : params[0].device();
}

class FmtTask : public PostTrainTask {
 public:
  FmtTask(FmtOptions options, FmtVariant variant, PipelineOptions settings)
      : options_(std::move(options)),
        variant_(std::move(variant)),
        settings_(std::move(settings)) {}

  std::string name() const override { return variant_.name; }
  const PipelineOptions& settings() const override { return settings_; }

  std::vector<std::pair<std::string, std::string>> Describe() const override {
    const TabularData& d = *options_.data;
    return {{"variant", JsonQuote(variant_.name)},
            {"data_set", JsonQuote(d.name)},
            {"protected_attribute", JsonQuote(d.protected_name)},
            {"pairs", absl::StrCat(Pairs())},
            {"guard_pairs", absl::StrCat(GuardPairs())},
            {"strategy", variant_.both ? "\"double\"" : "\"single\""},
            {"attributes", variant_.uniform ? "\"uniform\"" : "\"marginals\""}};
  }

  ProfileCriteria profile_criteria() const override {
    ProfileCriteria c;
    c.num_criteria = 2;
    const int64_t pf = options_.data->protected_feature;
    c.of_batch = [pf](const at::Tensor& inputs, const at::Tensor&) {
      return inputs.select(1, pf).round().to(torch::kLong);
    };
    return c;
  }

  absl::Status Check(const torch::nn::Sequential& model) const override {
    const TabularData& d = *options_.data;
    PT_ASSIGN_OR_RETURN(
        at::Tensor out,
        ForwardFirstInput(model, d.train.x,
                          absl::StrCat("FMT: the encoded '", d.name, "'")));
    if (out.dim() != 2 || out.size(1) != 2) {
      return absl::InvalidArgumentError(
          "FMT: the model must output 2 logits (unfavourable, favourable)");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<GuardSpec> MakeGuard(const TaskContext&) override {
    const TabularData& d = *options_.data;
    return AccuracyGuard({d.validation.x, d.validation.y});
  }

  absl::StatusOr<Augmentation> Augment(const TaskContext& ctx, int p) override {
    const TabularData& d = *options_.data;
    at::Generator gen = at::detail::createCPUGenerator(settings_.seed);
    Augmentation a;
    int64_t swapped = 0, guard_swapped = 0;
    ReportProgress(ctx.progress, "pairing", 0, 2, "sets");
    at::Tensor rows = DrawAttributes(d, Pairs(), variant_.uniform, gen);
    PT_ASSIGN_OR_RETURN(a.train,
                        FmtPairs(ctx.model, p, rows, d.protected_feature,
                                 variant_.both, &swapped));
    ReportProgress(ctx.progress, "pairing", 1, 2, "sets");
    at::Tensor guard_rows =
        DrawAttributes(d, GuardPairs(), variant_.uniform, gen);
    PT_ASSIGN_OR_RETURN(a.validation,
                        FmtPairs(ctx.model, p, guard_rows, d.protected_feature,
                                 variant_.both, &guard_swapped));
    ReportProgress(ctx.progress, "pairing", 2, 2, "sets");
    a.figures["pairs"] = static_cast<double>(Pairs());
    a.figures["swapped"] = static_cast<double>(swapped);
    a.figures["T"] = static_cast<double>(a.train.size());
    a.figures["guard_T"] = static_cast<double>(a.validation.size());
    return a;
  }

  absl::StatusOr<SlicingPlan> PlanSlicing(const TaskContext&) override {
    const TabularData& d = *options_.data;
    SlicingPlan plan;
    plan.inputs = d.train.x;
    plan.criteria = d.train.a;
    plan.outputs = {1, 1};  // each group, at the favourable logit
    return plan;
  }

 private:
  int64_t Pairs() const {
    return options_.pairs > 0 ? options_.pairs : options_.data->train.size();
  }
  int64_t GuardPairs() const {
    return options_.guard_pairs > 0 ? options_.guard_pairs
                                    : options_.data->validation.size();
  }
  FmtOptions options_;
  FmtVariant variant_;
  PipelineOptions settings_;
};

}  // namespace

PipelineOptions DefaultFmtPipeline() {
  PipelineOptions o;
  o.slicer.q = 80;
  return o;
}

std::vector<std::string> FmtVariantNames() {
  std::vector<std::string> names;
  for (const FmtVariant& v : Variants()) names.push_back(v.name);
  return names;
}

absl::StatusOr<std::unique_ptr<PostTrainTask>> MakeFmtTask(FmtOptions options) {
  const FmtVariant* variant = nullptr;
  const std::vector<FmtVariant> all = Variants();
  for (const FmtVariant& v : all) {
    if (v.name == options.variant) variant = &v;
  }
  if (variant == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown FMT variant '", options.variant,
                     "'; known: ", absl::StrJoin(FmtVariantNames(), ", ")));
  }
  if (options.data == nullptr || options.data->train.size() == 0 ||
      options.data->validation.size() == 0) {
    return absl::InvalidArgumentError("FMT: no data (FmtOptions::data)");
  }
  if (options.pairs < 0 || options.guard_pairs < 0) {
    return absl::InvalidArgumentError("FMT: pairs must be >= 0");
  }
  PT_ASSIGN_OR_RETURN(
      PipelineOptions settings,
      ApplyPresets(variant->name, variant->presets, options.pipeline));
  return std::unique_ptr<PostTrainTask>(
      new FmtTask(std::move(options), *variant, std::move(settings)));
}

static absl::StatusOr<TuningData> FmtPairsImpl(
    const torch::nn::Sequential& model, int p, const at::Tensor& rows,
    int64_t protected_feature, bool both, int64_t* swapped) {
  if (!rows.defined() || rows.dim() != 2 || rows.size(0) == 0 ||
      protected_feature < 0 || protected_feature >= rows.size(1)) {
    return absl::InvalidArgumentError(
        "FMT pairs: rows must be float [N, d] with the protected feature "
        "inside d");
  }
  PT_ASSIGN_OR_RETURN(RegressionView view, RegressionView::Create(model, p));
  torch::NoGradGuard no_grad;
  torch::nn::Sequential m = model;
  EvalModeGuard eval(*m);
  const at::Device device = DeviceOf(model);
  at::Tensor x1 = rows.to(device, torch::kFloat).clone();
  at::Tensor x0 = x1.clone();
  x1.select(1, protected_feature).fill_(1.0);  // σ: privileged
  x0.select(1, protected_feature).fill_(0.0);  // σ': unprivileged
  const at::Tensor c1 = std::get<0>(torch::softmax(m->forward(x1), 1).max(1));
  const at::Tensor c0 = std::get<0>(torch::softmax(m->forward(x0), 1).max(1));
  const at::Tensor swap = c1.lt(c0).reshape({-1, 1});  // conf(σ) < conf(σ')
  const at::Tensor sigma = torch::where(swap, x0, x1);
  const at::Tensor sigma_prime = torch::where(swap, x1, x0);
  if (swapped != nullptr) *swapped = swap.sum().item<int64_t>();
  const at::Tensor label = m->forward(sigma).argmax(1);
  PT_ASSIGN_OR_RETURN(at::Tensor y, view.Forward(sigma, label));
  y = y.detach().to(torch::kFloat);
  TuningData t;
  if (both) {
    t.inputs = torch::cat({sigma_prime, sigma});
    t.references = torch::cat({y, y});
    t.labels = torch::cat({label, label});
  } else {
    t.inputs = sigma_prime;
    t.references = y;
    t.labels = label;
  }
  t.criteria = t.inputs.select(1, protected_feature).round().to(torch::kLong);
  t.labels = t.labels.to(torch::kLong);
  return t;
}

absl::StatusOr<TuningData> FmtPairs(const torch::nn::Sequential& model, int p,
                                    const at::Tensor& rows,
                                    int64_t protected_feature, bool both,
                                    int64_t* swapped) {
  try {
    return FmtPairsImpl(model, p, rows, protected_feature, both, swapped);
  } catch (...) {
    return StatusFromCurrentException("FMT pairs");
  }
}

at::Tensor DrawAttributes(const TabularData& data, int64_t n, bool uniform,
                          at::Generator& gen) {
  at::Tensor x = torch::zeros({n, data.features}, torch::kFloat);
  const at::Tensor& train = data.train.x;
  for (const FeatureBlock& b : data.blocks) {
    if (b.kind == FeatureBlock::Kind::kProtected) continue;
    at::Tensor block = x.narrow(1, b.start, b.width);
    if (!uniform) {
      const at::Tensor rows =
          torch::randint(0, train.size(0), {n}, gen, torch::kLong);
      block.copy_(train.narrow(1, b.start, b.width).index_select(0, rows));
    } else if (b.kind == FeatureBlock::Kind::kNumeric) {
      block.copy_(torch::rand({n, 1}, gen));
    } else if (b.width > 0) {
      const at::Tensor k =
          torch::randint(0, b.width, {n, 1}, gen, torch::kLong);
      block.scatter_(1, k, 1.0);
    }
  }
  return x;
}

}  // namespace posttrain

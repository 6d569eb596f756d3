#include "robustness/adversarial_training.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model_view.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "tuner/progress.h"

namespace posttrain {
namespace {

int64_t NumClasses(const ModelView& view) {
  return view.weighted_layers().empty()
             ? 0
             : view.Weight(view.weighted_layers().back()).size(0);
}

// `n` inputs of `d` (a seeded sample; all when n < 0 or n >= size).
LabelledData Sample(const LabelledData& d, int64_t n, uint64_t seed) {
  const int64_t size = d.inputs.size(0);
  if (n < 0 || n >= size) return d;
  if (n == 0) return {d.inputs.narrow(0, 0, 0), d.labels.narrow(0, 0, 0)};
  auto gen = at::detail::createCPUGenerator(seed);
  const at::Tensor rows = torch::randperm(size, gen).narrow(0, 0, n);
  return {d.inputs.index_select(0, rows.to(d.inputs.device())),
          d.labels.index_select(0, rows.to(d.labels.device()))};
}

class AdversarialTrainingTask : public PostTrainTask {
 public:
  AdversarialTrainingTask(AdversarialTrainingOptions options,
                          PipelineOptions settings)
      : options_(std::move(options)), settings_(std::move(settings)) {}

  std::string name() const override { return options_.method; }
  const PipelineOptions& settings() const override { return settings_; }

  std::vector<std::pair<std::string, std::string>> Describe() const override {
    AttackOptions linf = options_.linf;
    linf.seed = settings_.seed;
    std::string attack;
    if (options_.method == "cw_at") attack = options_.cw.Describe();
    if (options_.method == "jsma_at") attack = options_.jsma.Describe();
    if (options_.method == "fgsm_at") attack = linf.Describe("fgsm");
    if (options_.method == "pgd_at") attack = linf.Describe("pgd");
    return {{"method", JsonQuote(options_.method)},
            {"crafting", attack},
            {"crafting_seeds",
             absl::StrCat("{\"tuning_set\": ", settings_.seed,
                          ", \"validation_set\": ", settings_.seed + 1,
                          options_.method == "jsma_at"
                              ? ", \"targets\": \"RandomTargets, the same "
                                "seeds\""
                              : "",
                          "}")},
            {"samples", absl::StrCat(options_.samples)},
            {"validation_samples", absl::StrCat(options_.validation_samples)},
            {"guard_fraction", absl::StrCat(options_.guard_fraction)}};
  }

  absl::Status Check(const torch::nn::Sequential& model) const override {
    return ForwardFirstInput(model, options_.train.inputs,
                             absl::StrCat(options_.method, ": `train`"))
        .status();
  }

  absl::StatusOr<GuardSpec> MakeGuard(const TaskContext& ctx) override {
    (void)ctx;
    PT_ASSIGN_OR_RETURN(GuardSplit split,
                        SplitForGuard(options_.validation,
                                      options_.guard_fraction, settings_.seed));
    guard_ = std::move(split.guard);
    split_ = true;
    return AccuracyGuard(guard_);
  }

  absl::StatusOr<Augmentation> Augment(const TaskContext& ctx,
                                       int /*p*/) override {
    if (!split_) PT_RETURN_IF_ERROR(MakeGuard(ctx).status());
    const auto t0 = std::chrono::steady_clock::now();
    LabelledData train, val;
    PT_RETURN_IF_ERROR(CallTorch("sampling", [&] {
      train = Sample(options_.train, options_.samples, settings_.seed);
      val = Sample(guard_, options_.validation_samples, settings_.seed + 1);
    }));
    Augmentation a;
    if (train.inputs.size(0) == 0 || val.inputs.size(0) == 0) {
      return a;  // nothing to tune on: the pipeline keeps the original
    }
    PT_ASSIGN_OR_RETURN(at::Tensor adv_train, Craft(ctx, train, 0));
    PT_ASSIGN_OR_RETURN(at::Tensor adv_val, Craft(ctx, val, 1));
    a.train.inputs = adv_train;
    a.train.labels = train.labels.to(torch::kLong);
    a.validation.inputs = adv_val;
    a.validation.labels = val.labels.to(torch::kLong);
    a.figures["T"] = static_cast<double>(a.train.size());
    a.figures["guard_T"] = static_cast<double>(a.validation.size());
    a.figures["crafting_seconds"] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    return a;
  }

  absl::StatusOr<SlicingPlan> PlanSlicing(const TaskContext& ctx) override {
    // Not used (slice = false); the class plan, for completeness.
    PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(ctx.model));
    return ClassSlicingPlan(options_.train, NumClasses(view));
  }

 private:
  absl::StatusOr<at::Tensor> Craft(const TaskContext& ctx,
                                   const LabelledData& d, uint64_t salt) {
    const std::string& m = options_.method;
    AttackOptions linf = options_.linf;
    linf.seed = settings_.seed + salt;
    ReportProgress(ctx.progress, "crafting", 0, d.inputs.size(0), "inputs");
    absl::StatusOr<at::Tensor> out;
    if (m == "fgsm_at") out = Fgsm(ctx.model, d.inputs, d.labels, linf);
    if (m == "pgd_at") out = Pgd(ctx.model, d.inputs, d.labels, linf);
    if (m == "cw_at")
      out = CarliniWagnerL2(ctx.model, d.inputs, d.labels, options_.cw);
    if (m == "jsma_at") {
      PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(ctx.model));
      PT_ASSIGN_OR_RETURN(
          at::Tensor targets,
          RandomTargets(d.labels, NumClasses(view), settings_.seed + salt));
      out = Jsma(ctx.model, d.inputs, targets, options_.jsma);
    }
    ReportProgress(ctx.progress, "crafting", d.inputs.size(0), d.inputs.size(0),
                   "inputs");
    return out;
  }

  AdversarialTrainingOptions options_;
  PipelineOptions settings_;
  bool split_ = false;
  LabelledData guard_;
};

}  // namespace

CwOptions CheapCwForTraining() {
  CwOptions cw;
  cw.binary_search_steps = 2;
  cw.iterations = 50;
  return cw;
}

std::vector<std::string> AdversarialTrainingNames() {
  return {"cw_at", "fgsm_at", "jsma_at", "pgd_at"};
}

absl::StatusOr<std::unique_ptr<PostTrainTask>> MakeAdversarialTrainingTask(
    AdversarialTrainingOptions options) {
  const std::vector<std::string> names = AdversarialTrainingNames();
  if (std::find(names.begin(), names.end(), options.method) == names.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown adversarial-training method '", options.method,
                     "'; known: ", absl::StrJoin(names, ", ")));
  }
  VariantPresets presets;
  presets.slice = false;
  presets.transform = false;
  PT_ASSIGN_OR_RETURN(PipelineOptions settings,
                      ApplyPresets(options.method, presets, options.pipeline));
  for (const auto& [d, what] :
       {std::make_pair(&options.train, "train"),
        std::make_pair(&options.validation, "validation")}) {
    if (!d->inputs.defined() || d->inputs.dim() == 0 || d->inputs.size(0) < 2 ||
        !d->labels.defined() || d->labels.dim() != 1 ||
        d->labels.size(0) != d->inputs.size(0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          options.method, ": `", what,
          "` needs at least 2 inputs and one class label ([N]) per input"));
    }
  }
  if (options.samples < -1 || options.validation_samples < -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.method,
        ": samples and validation_samples must be >= 0, or -1 for all"));
  }
  return std::unique_ptr<PostTrainTask>(
      new AdversarialTrainingTask(std::move(options), std::move(settings)));
}

}  // namespace posttrain

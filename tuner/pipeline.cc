#include "tuner/pipeline.h"

#include <torch/torch.h>

#include <chrono>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/allocator.h"
#include "common/model_view.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t)
      .count();
}

absl::StatusOr<double> CrossEntropy(const torch::nn::Sequential& model,
                                    const TuningData& data) {
  torch::NoGradGuard no_grad;
  torch::nn::Sequential m = model;
  at::Device device(torch::kCPU);
  if (!m->parameters().empty()) device = m->parameters()[0].device();
  double sum = 0;
  PT_RETURN_IF_ERROR(CallTorch("validation cross-entropy", [&] {
    for (int64_t b = 0; b < data.size(); b += 512) {
      const int64_t len = std::min<int64_t>(512, data.size() - b);
      sum += torch::nn::functional::cross_entropy(
                 m->forward(data.inputs.narrow(0, b, len).to(device)),
                 data.labels.narrow(0, b, len).to(device),
                 torch::nn::functional::CrossEntropyFuncOptions().reduction(
                     torch::kSum))
                 .item<double>();
    }
  }));
  return sum / static_cast<double>(data.size());
}

}  // namespace

static absl::StatusOr<TuneReport> TuneCrossEntropyImpl(
    torch::nn::Sequential& model, const TuningData& train,
    const TuningData& validation, const ModelMetric& guard,
    const TunerOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (train.size() == 0 || validation.size() == 0 || !train.labels.defined() ||
      !validation.labels.defined()) {
    return absl::InvalidArgumentError(
        "cross-entropy tuning needs labelled training and validation sets");
  }
  if (options.learning_rates.empty() || options.max_epochs < 1 ||
      options.batch_size < 1 || options.patience < 1) {
    return absl::InvalidArgumentError("bad tuner options");
  }
  at::Device device(torch::kCPU);
  if (!model->parameters().empty()) device = model->parameters()[0].device();
  auto make = [&](torch::nn::Sequential& copy,
                  double lr) -> absl::StatusOr<LearningRateCandidate> {
    auto adam = std::make_shared<torch::optim::Adam>(
        copy->parameters(),
        torch::optim::AdamOptions(lr).weight_decay(options.weight_decay));
    auto gen = std::make_shared<at::Generator>(
        at::detail::createCPUGenerator(options.seed));
    LearningRateCandidate candidate;
    candidate.validation_loss = [copy, &validation]() {
      return CrossEntropy(copy, validation);
    };
    candidate.train_epoch = [=, &train, &options](int epoch) mutable {
      return CallTorch("cross-entropy tuning", [&] {
        at::Tensor order = torch::randperm(train.size(), *gen);
        for (int64_t b = 0; b < train.size(); b += options.batch_size) {
          at::Tensor rows = order.narrow(
              0, b, std::min(options.batch_size, train.size() - b));
          adam->zero_grad();
          torch::nn::functional::cross_entropy(
              copy->forward(
                  train.inputs.index_select(0, rows.to(train.inputs.device()))
                      .to(device)),
              train.labels.index_select(0, rows.to(train.labels.device()))
                  .to(device))
              .backward();
          adam->step();
          if (options.on_step) {
            TuneStep step;
            step.lr = lr;
            step.epoch = epoch;
            step.params = nullptr;
            options.on_step(step);
          }
        }
      });
    };
    return candidate;
  };
  PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(model));
  std::vector<std::string> all_layers;
  for (const ModelView::Layer& l : view.layers()) all_layers.push_back(l.name);
  PT_ASSIGN_OR_RETURN(
      TuneReport report,
      SearchLearningRates(model, guard, options, all_layers, make));
  report.seconds = Since(start);
  return report;
}

static absl::Status CheckSettings(const PipelineOptions& o) {
  const TunerOptions& t = o.tuner;
  if (!(o.slicer.q > 0.0 && o.slicer.q <= 100.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("slicer.q must be in (0, 100], got ", o.slicer.q));
  }
  if (o.slicer.batch_size <= 0) {
    return absl::InvalidArgumentError("slicer.batch_size must be positive");
  }
  if (o.max_slice_inputs < 0) {
    return absl::InvalidArgumentError("max_slice_inputs must be >= 0");
  }
  if (t.learning_rates.empty()) {
    return absl::InvalidArgumentError("tuner.learning_rates is empty");
  }
  for (double lr : t.learning_rates) {
    if (!(lr > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tuner.learning_rates: ", lr, " is not positive"));
    }
  }
  if (t.max_epochs < 1 || t.batch_size < 1 || t.patience < 1) {
    return absl::InvalidArgumentError(
        "tuner.max_epochs, tuner.batch_size and tuner.patience must be "
        "positive");
  }
  if (t.search == TunerOptions::Search::kSuccessiveHalving &&
      (t.halving_min_epochs < 1 || t.halving_factor < 2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tuner.halving_min_epochs must be >= 1 and "
                     "tuner.halving_factor >= 2, got ",
                     t.halving_min_epochs, " and ", t.halving_factor));
  }
  if (t.p < 0) return absl::InvalidArgumentError("tuner.p must be >= 0");
  if (t.seed != TunerOptions{}.seed && t.seed != o.seed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tuner.seed = ", t.seed, " conflicts with the phase's seed ", o.seed,
        "; set only PipelineOptions::seed (it seeds the tuner too)"));
  }
  return absl::OkStatus();
}

static absl::Status CheckPipelineImpl(const torch::nn::Sequential& model,
                                      const PostTrainTask& task) {
  if (model.is_empty()) {
    return absl::InvalidArgumentError("the model is an empty holder");
  }
  const PipelineOptions& o = task.settings();
  PT_RETURN_IF_ERROR(
      Annotate(CheckSettings(o), absl::StrCat("task '", task.name(), "'")));
  PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(model));
  if (view.weighted_layers().empty()) {
    return absl::InvalidArgumentError("the model has no weighted layer");
  }
  if (o.transform) {
    PT_RETURN_IF_ERROR(
        Annotate(RegressionView::Create(model, o.tuner.p).status(),
                 absl::StrCat("the regression model (p = ", o.tuner.p, ")")));
  }
  return Annotate(task.Check(model), absl::StrCat("task '", task.name(), "'"));
}

static absl::StatusOr<PipelineResult> RunPipelineImpl(PostTrainTask& task,
                                                      const TaskContext& ctx) {
  // At 1 thread a third of the phase went to page faults without it
  // (common/allocator.h).
  KeepFreedMemory();
  torch::nn::Sequential model = ctx.model;
  PT_RETURN_IF_ERROR(CheckPipelineImpl(model, task));
  const PipelineOptions& options = task.settings();
  TunerOptions tuner = options.tuner;
  tuner.seed = options.seed;
  if (tuner.progress == nullptr) tuner.progress = ctx.progress;
  PipelineResult result;
  result.task = task.name();
  result.settings = options;
  result.settings.tuner.seed = options.seed;
  PT_ASSIGN_OR_RETURN(GuardSpec guard, task.MakeGuard(ctx));
  if (!guard.evaluate) {
    return absl::InvalidArgumentError(
        absl::StrCat("task '", task.name(), "' gave a guard without a metric"));
  }
  result.guard_metric = guard.metric;
  const int p = options.transform ? tuner.p : 1;
  auto t = std::chrono::steady_clock::now();
  PT_ASSIGN_OR_RETURN(Augmentation aug, task.Augment(ctx, p));
  result.augment_seconds = Since(t);
  result.augmentation.figures = aug.figures;
  if (aug.train.size() == 0 || aug.validation.size() == 0) {
    PT_ASSIGN_OR_RETURN(result.tune.guard_accuracy_before,
                        guard.evaluate(model));
    result.tune.guard_accuracy_after = result.tune.guard_accuracy_before;
    result.tune.reason = absl::StrCat("the task found ", aug.train.size(),
                                      " training and ", aug.validation.size(),
                                      " validation samples; original kept");
    return result;
  }
  if (!options.transform) {
    t = std::chrono::steady_clock::now();
    PT_ASSIGN_OR_RETURN(result.tune,
                        TuneCrossEntropy(model, aug.train, aug.validation,
                                         guard.evaluate, tuner));
    result.tune_seconds = Since(t);
    return result;
  }
  if (options.slice) {
    t = std::chrono::steady_clock::now();
    PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(model));
    PT_ASSIGN_OR_RETURN(SlicingPlan plan, task.PlanSlicing(ctx));
    at::Tensor x = plan.inputs, y = plan.criteria;
    if (!x.defined() || x.dim() == 0 || x.size(0) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "task '", task.name(), "': the slicing plan has no inputs"));
    }
    if (!y.defined() || y.dim() != 1 || y.size(0) != x.size(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("task '", task.name(),
                       "': the slicing plan needs one criterion id per input "
                       "(int64 [N])"));
    }
    if (plan.outputs.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "task '", task.name(), "': the slicing plan names no output"));
    }
    if (options.max_slice_inputs > 0 && x.size(0) > options.max_slice_inputs) {
      auto gen = at::detail::createCPUGenerator(options.seed);
      at::Tensor rows = torch::randperm(x.size(0), gen)
                            .narrow(0, 0, options.max_slice_inputs);
      x = x.index_select(0, rows.to(x.device()));
      y = y.index_select(0, rows.to(y.device()));
    }
    result.slice_inputs = x.size(0);
    ReportProgress(ctx.progress, "slicing", 0, x.size(0), "inputs");
    const Profile* profile = ctx.profile;
    // The aggregated reading needs the profile's per-criterion means, so
    // an online profile of other criteria (a user's own profiler) is
    // replaced by the exact offline one.
    if (profile != nullptr && options.slicer.aggregated &&
        profile->num_criteria() != static_cast<int>(plan.outputs.size())) {
      profile = nullptr;
    }
    std::optional<Profile> offline;
    if (profile == nullptr) {
      PT_ASSIGN_OR_RETURN(
          offline,
          ProfileModel(model, x, y, static_cast<int>(plan.outputs.size())));
      profile = &*offline;
    } else {
      result.profile_online = true;
    }
    PT_ASSIGN_OR_RETURN(
        result.slices,
        SliceCriteria(view, *profile, x, y, plan.outputs, options.slicer));
    ReportProgress(ctx.progress, "slicing", x.size(0), x.size(0), "inputs");
    result.slice_seconds = Since(t);
  }
  t = std::chrono::steady_clock::now();
  PT_ASSIGN_OR_RETURN(result.tune,
                      TuneModel(model, result.slices, aug.train, aug.validation,
                                guard.evaluate, tuner));
  result.tune_seconds = Since(t);
  return result;
}

absl::StatusOr<TuneReport> TuneCrossEntropy(torch::nn::Sequential& model,
                                            const TuningData& train,
                                            const TuningData& validation,
                                            const ModelMetric& guard,
                                            const TunerOptions& options) {
  try {
    return TuneCrossEntropyImpl(model, train, validation, guard, options);
  } catch (...) {
    return StatusFromCurrentException("cross-entropy tuning");
  }
}

absl::Status CheckPipeline(const torch::nn::Sequential& model,
                           const PostTrainTask& task) {
  try {
    return CheckPipelineImpl(model, task);
  } catch (...) {
    return StatusFromCurrentException("checking the post-training phase");
  }
}

absl::StatusOr<PipelineResult> RunPipeline(PostTrainTask& task,
                                           const TaskContext& ctx) {
  try {
    return RunPipelineImpl(task, ctx);
  } catch (...) {
    return StatusFromCurrentException("post-training pipeline");
  }
}

}  // namespace posttrain

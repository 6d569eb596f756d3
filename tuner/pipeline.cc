#include "tuner/pipeline.h"

#include <torch/torch.h>

#include <chrono>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
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
    const TuningData& validation, const LabelledData& guard,
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
    candidate.train_epoch = [=, &train]() mutable {
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

static absl::StatusOr<PipelineResult> RunPipelineImpl(
    torch::nn::Sequential& model, Augmenter& augmenter, const Profile* profile,
    const at::Tensor& slice_inputs, const at::Tensor& slice_labels,
    const LabelledData& guard, const PipelineOptions& options) {
  PipelineResult result;
  result.augmenter = augmenter.name();
  const int p = options.transform ? options.tuner.p : 1;
  auto t = std::chrono::steady_clock::now();
  PT_ASSIGN_OR_RETURN(Augmentation aug, augmenter.Augment(model, p));
  result.augment_seconds = Since(t);
  result.augmentation.figures = aug.figures;
  if (aug.train.size() == 0 || aug.validation.size() == 0) {
    PT_ASSIGN_OR_RETURN(result.tune.guard_accuracy_before,
                        ClassifierAccuracy(model, guard));
    result.tune.guard_accuracy_after = result.tune.guard_accuracy_before;
    result.tune.reason = absl::StrCat("the augmenter found ", aug.train.size(),
                                      " training and ", aug.validation.size(),
                                      " validation samples; original kept");
    return result;
  }
  if (!options.transform) {
    t = std::chrono::steady_clock::now();
    PT_ASSIGN_OR_RETURN(
        result.tune, TuneCrossEntropy(model, aug.train, aug.validation, guard,
                                      options.tuner));
    result.tune_seconds = Since(t);
    return result;
  }
  if (options.slice) {
    t = std::chrono::steady_clock::now();
    PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(model));
    at::Tensor x = slice_inputs, y = slice_labels;
    if (!x.defined() || !y.defined() || x.size(0) == 0) {
      return absl::InvalidArgumentError("slicing needs inputs and labels");
    }
    if (options.max_slice_inputs > 0 && x.size(0) > options.max_slice_inputs) {
      auto gen = at::detail::createCPUGenerator(options.seed);
      at::Tensor rows = torch::randperm(x.size(0), gen)
                            .narrow(0, 0, options.max_slice_inputs);
      x = x.index_select(0, rows.to(x.device()));
      y = y.index_select(0, rows.to(y.device()));
    }
    result.slice_inputs = x.size(0);
    const int64_t classes =
        view.weighted_layers().empty()
            ? 0
            : view.Weight(view.weighted_layers().back()).size(0);
    std::vector<int64_t> outputs;
    for (int64_t c = 0; c < classes; ++c) outputs.push_back(c);
    std::optional<Profile> offline;
    if (profile == nullptr) {
      PT_ASSIGN_OR_RETURN(offline,
                          ProfileModel(model, x, y, static_cast<int>(classes)));
      profile = &*offline;
    } else {
      result.profile_online = true;
    }
    PT_ASSIGN_OR_RETURN(result.slices, SliceCriteria(view, *profile, x, y,
                                                     outputs, options.slicer));
    result.slice_seconds = Since(t);
  }
  t = std::chrono::steady_clock::now();
  PT_ASSIGN_OR_RETURN(result.tune,
                      TuneModel(model, result.slices, aug.train, aug.validation,
                                guard, options.tuner));
  result.tune_seconds = Since(t);
  return result;
}

absl::StatusOr<TuneReport> TuneCrossEntropy(torch::nn::Sequential& model,
                                            const TuningData& train,
                                            const TuningData& validation,
                                            const LabelledData& guard,
                                            const TunerOptions& options) {
  try {
    return TuneCrossEntropyImpl(model, train, validation, guard, options);
  } catch (...) {
    return StatusFromCurrentException("cross-entropy tuning");
  }
}

absl::StatusOr<PipelineResult> RunPipeline(
    torch::nn::Sequential& model, Augmenter& augmenter, const Profile* profile,
    const at::Tensor& slice_inputs, const at::Tensor& slice_labels,
    const LabelledData& guard, const PipelineOptions& options) {
  try {
    return RunPipelineImpl(model, augmenter, profile, slice_inputs,
                           slice_labels, guard, options);
  } catch (...) {
    return StatusFromCurrentException("post-training pipeline");
  }
}

}  // namespace posttrain

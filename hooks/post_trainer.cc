#include "hooks/post_trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "history/env.h"
#include "robustness/dare.h"

namespace posttrain {
namespace {

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  return absl::StrFormat("%.6g", v);
}

std::string JsonString(const std::string& s) {
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

std::string LrList(const TunerOptions& t) {
  std::string out;
  for (size_t i = 0; i < t.learning_rates.size(); ++i) {
    absl::StrAppend(&out, i ? ", " : "", JsonNumber(t.learning_rates[i]));
  }
  return out;
}

std::string ReportJson(const std::string& variant, const PipelineResult& r,
                       const PostTrainerOptions& o, int64_t stored_epoch) {
  const TuneReport& t = r.tune;
  std::string j = "{\n";
  absl::StrAppend(&j, "  \"variant\": ", JsonString(variant), ",\n");
  absl::StrAppend(&j, "  \"accepted\": ", t.accepted ? "true" : "false",
                  ",\n  \"reason\": ", JsonString(t.reason), ",\n");
  absl::StrAppend(&j, "  \"stored_epoch\": ", stored_epoch, ",\n");
  absl::StrAppend(
      &j, "  \"parameters\": {\"p\": ", o.pipeline.tuner.p,
      ", \"slice\": ", o.pipeline.slice ? "true" : "false",
      ", \"transform\": ", o.pipeline.transform ? "true" : "false",
      ", \"q\": ", JsonNumber(o.pipeline.slicer.q),
      ", \"slice_inputs\": ", r.slice_inputs,
      ", \"profile\": ", JsonString(r.profile_online ? "online" : "offline"),
      ", \"guard_fraction\": ", JsonNumber(o.guard_fraction),
      ", \"max_mine_inputs\": ", o.max_mine_inputs,
      ", \"max_epochs\": ", o.pipeline.tuner.max_epochs,
      ", \"patience\": ", o.pipeline.tuner.patience,
      ", \"batch_size\": ", o.pipeline.tuner.batch_size,
      ", \"max_accuracy_drop\": ",
      JsonNumber(o.pipeline.tuner.max_accuracy_drop), ", \"learning_rates\": [",
      LrList(o.pipeline.tuner), "], \"optimizer\": ",
      JsonString(o.pipeline.tuner.optimizer == TunerOptions::Optimizer::kAdam
                     ? "adam"
                     : "sgd_momentum"),
      ", \"momentum\": ", JsonNumber(o.pipeline.tuner.momentum),
      ", \"weight_decay\": ", JsonNumber(o.pipeline.tuner.weight_decay),
      ", \"max_slice_inputs\": ", o.max_slice_inputs, ", \"global_ranking\": ",
      o.pipeline.slicer.global_ranking ? "true" : "false",
      ", \"aggregated\": ", o.pipeline.slicer.aggregated ? "true" : "false",
      ", \"seed\": ", o.seed, "},\n");
  j += "  \"augmentation\": {";
  bool first = true;
  for (const auto& [k, v] : r.augmentation.figures) {
    absl::StrAppend(&j, first ? "" : ", ", JsonString(k), ": ", JsonNumber(v));
    first = false;
  }
  j += "},\n";
  absl::StrAppend(
      &j, "  \"seconds\": {\"augment\": ", JsonNumber(r.augment_seconds),
      ", \"slice\": ", JsonNumber(r.slice_seconds),
      ", \"tune\": ", JsonNumber(r.tune_seconds), "},\n");
  absl::StrAppend(
      &j, "  \"tuning\": {\"lr\": ", JsonNumber(t.lr),
      ", \"best_epoch\": ", t.best_epoch, ", \"epochs_run\": ", t.epochs_run,
      ", \"validation_loss_before\": ", JsonNumber(t.validation_loss_before),
      ", \"validation_loss_after\": ", JsonNumber(t.validation_loss_after),
      ", \"guard_accuracy_before\": ", JsonNumber(t.guard_accuracy_before),
      ", \"guard_accuracy_after\": ", JsonNumber(t.guard_accuracy_after),
      ", \"trials\": [");
  for (size_t i = 0; i < t.trials.size(); ++i) {
    const LearningRateTrial& tr = t.trials[i];
    absl::StrAppend(
        &j, i ? ", " : "", "{\"lr\": ", JsonNumber(tr.lr),
        ", \"best_epoch\": ", tr.best_epoch,
        ", \"best_validation_loss\": ", JsonNumber(tr.best_validation_loss),
        ", \"guard_accuracy\": ", JsonNumber(tr.guard_accuracy),
        ", \"passes_guard\": ", tr.passes_guard ? "true" : "false", "}");
  }
  j += "]}\n}\n";
  return j;
}

std::string ReportMarkdown(const std::string& variant,
                           const PipelineResult& r) {
  const TuneReport& t = r.tune;
  std::string m = absl::StrCat("# posttrain report: ", variant, "\n\n");
  absl::StrAppend(
      &m, t.accepted
              ? "The tuned model passed the accuracy guard and "
                "is now in the model.\n\n"
              : absl::StrCat("**Original model kept:** ", t.reason, "\n\n"));
  m += "| figure | before | after |\n|---|---|---|\n";
  absl::StrAppend(
      &m, absl::StrFormat("| guard accuracy | %.4f | %.4f |\n",
                          t.guard_accuracy_before, t.guard_accuracy_after));
  absl::StrAppend(
      &m, absl::StrFormat("| validation loss (tuning) | %.5g | "
                          "%.5g |\n\n",
                          t.validation_loss_before, t.validation_loss_after));
  m += "| step | seconds |\n|---|---|\n";
  absl::StrAppend(
      &m, absl::StrFormat("| augment | %.2f |\n| slice | %.2f |\n"
                          "| tune | %.2f |\n\n",
                          r.augment_seconds, r.slice_seconds, r.tune_seconds));
  m += "Augmentation:\n\n";
  for (const auto& [k, v] : r.augmentation.figures) {
    absl::StrAppend(&m, "- ", k, ": ", absl::StrFormat("%.6g", v), "\n");
  }
  absl::StrAppend(&m, "\nTuning: lr ", absl::StrFormat("%g", t.lr),
                  ", best epoch ", t.best_epoch, ", ", t.epochs_run,
                  " epochs run over ", t.trials.size(), " learning rate(s).\n");
  return m;
}

}  // namespace

PostTrainer::PostTrainer(const torch::nn::Sequential& model,
                         std::shared_ptr<HistoryRecorder> recorder,
                         std::shared_ptr<SliceProfiler> profiler,
                         PostTrainerOptions options)
    : model_(model.is_empty() ? nullptr : model.ptr()),
      recorder_(std::move(recorder)),
      profiler_(std::move(profiler)),
      options_(std::move(options)) {}

PostTrainer::~PostTrainer() = default;

const PipelineResult* PostTrainer::result() const {
  return result_.has_value() ? &*result_ : nullptr;
}

absl::Status PostTrainer::CheckOptions() const {
  if (model_ == nullptr) {
    return absl::InvalidArgumentError("PostTrainer: empty model holder");
  }
  if (recorder_ == nullptr || recorder_->store() == nullptr) {
    return absl::FailedPreconditionError(
        "PostTrainer: needs a HistoryRecorder whose store is open (add the "
        "PostTrainer after it)");
  }
  const LabelledData& val = options_.validation;
  if (!val.inputs.defined() || val.inputs.size(0) < 2 ||
      !val.labels.defined() || val.labels.numel() != val.inputs.size(0)) {
    return absl::InvalidArgumentError(
        "PostTrainer: `validation` needs at least 2 labelled inputs");
  }
  if (!(options_.guard_fraction > 0 && options_.guard_fraction < 1)) {
    return absl::InvalidArgumentError(
        "PostTrainer: guard_fraction must be in (0, 1)");
  }
  return DareVariantByName(options_.variant).status();
}

absl::Status PostTrainer::OnTrainBegin() { return CheckOptions(); }

absl::Status PostTrainer::OnTrainEnd() {
  PT_RETURN_IF_ERROR(CheckOptions());
  const LabelledData& val = options_.validation;
  PT_ASSIGN_OR_RETURN(DareVariant variant, DareVariantByName(options_.variant));
  // The seeded mining / guard split of the validation half.
  LabelledData mine, guard;
  PT_RETURN_IF_ERROR(CallTorch("splitting the validation data", [&] {
    auto gen = at::detail::createCPUGenerator(options_.seed);
    const int64_t n = val.inputs.size(0);
    // At least one guard input and at least one to mine.
    const int64_t n_guard = std::clamp<int64_t>(
        std::llround(n * options_.guard_fraction), 1, n - 1);
    at::Tensor order = torch::randperm(n, gen);
    at::Tensor g = order.narrow(0, 0, n_guard).to(val.inputs.device());
    at::Tensor d =
        order.narrow(0, n_guard, n - n_guard).to(val.inputs.device());
    guard = {val.inputs.index_select(0, g),
             val.labels.index_select(0, g.to(val.labels.device()))};
    if (options_.max_mine_inputs > 0 && d.numel() > options_.max_mine_inputs) {
      d = d.narrow(0, 0, options_.max_mine_inputs);
    }
    mine = {val.inputs.index_select(0, d),
            val.labels.index_select(0, d.to(val.labels.device()))};
  }));
  MinerOptions miner;
  miner.mode = variant.mode;
  miner.seed = options_.seed;
  DareAugmenter dare(*recorder_->store(), mine, guard, miner);
  PipelineOptions pipeline = variant.Apply(options_.pipeline);
  pipeline.max_slice_inputs = options_.max_slice_inputs;
  pipeline.seed = options_.seed;
  pipeline.tuner.seed = options_.seed;
  const LabelledData& slice =
      options_.slice_data.inputs.defined() ? options_.slice_data : mine;
  const Profile* profile =
      profiler_ != nullptr ? profiler_->profile() : nullptr;
  torch::nn::Sequential model(model_);
  PT_ASSIGN_OR_RETURN(PipelineResult r,
                      RunPipeline(model, dare, profile, slice.inputs,
                                  slice.labels, guard, pipeline));
  int64_t stored_epoch = -1;
  if (r.tune.accepted && options_.store_improved) {
    HistoryStore* store = recorder_->store();
    EpochMetadata meta;
    meta.epoch = store->last_epoch() + 1;
    meta.step = store->last_step();
    meta.metrics[kPostTrainMetric] = 1;
    meta.metrics["guard_accuracy"] = r.tune.guard_accuracy_after;
    PT_ASSIGN_OR_RETURN(NamedTensors state, CopyModuleState(*model));
    for (NamedTensor& t : state) t.tensor = t.tensor.cpu().contiguous();
    PT_RETURN_IF_ERROR(Annotate(store->Append(meta, std::move(state)),
                                "PostTrainer: storing the improved model"));
    stored_epoch = meta.epoch;
  }
  const std::string dir = options_.report_dir.empty()
                              ? recorder_->store()->dir()
                              : options_.report_dir;
  markdown_ = ReportMarkdown(options_.variant, r);
  PipelineOptions recorded = pipeline;
  PostTrainerOptions report_options = options_;
  report_options.pipeline = recorded;
  const std::string json =
      ReportJson(options_.variant, r, report_options, stored_epoch);
  PT_RETURN_IF_ERROR(WriteFileAtomically(Env::Default(), dir + "/report.json",
                                         {json}, true, true));
  PT_RETURN_IF_ERROR(WriteFileAtomically(Env::Default(), dir + "/report.md",
                                         {markdown_}, true, true));
  // The tensors are not kept: the figures are.
  r.augmentation.train = {};
  r.augmentation.validation = {};
  result_ = std::move(r);
  return absl::OkStatus();
}

}  // namespace posttrain

#include "hooks/post_trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "history/env.h"

namespace posttrain {
namespace {

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  return absl::StrFormat("%.6g", v);
}

std::string LrList(const TunerOptions& t) {
  std::string out;
  for (size_t i = 0; i < t.learning_rates.size(); ++i) {
    absl::StrAppend(&out, i ? ", " : "", JsonNumber(t.learning_rates[i]));
  }
  return out;
}

std::string Bool(bool b) { return b ? "true" : "false"; }

// Every value the phase ran with: the settings, then the task's own.
std::string SettingsJson(const PipelineResult& r, const PostTrainTask& task) {
  const PipelineOptions& o = r.settings;
  const TunerOptions& t = o.tuner;
  std::string j = "{";
  absl::StrAppend(
      &j, "\"p\": ", t.p, ", \"slice\": ", Bool(o.slice),
      ", \"transform\": ", Bool(o.transform),
      ", \"q\": ", JsonNumber(o.slicer.q),
      ", \"global_ranking\": ", Bool(o.slicer.global_ranking),
      ", \"aggregated\": ", Bool(o.slicer.aggregated),
      ", \"slice_batch_size\": ", o.slicer.batch_size,
      ", \"max_slice_inputs\": ", o.max_slice_inputs,
      ", \"slice_inputs\": ", r.slice_inputs,
      ", \"profile\": ", JsonQuote(r.profile_online ? "online" : "offline"),
      ", \"optimizer\": ",
      JsonQuote(t.optimizer == TunerOptions::Optimizer::kAdam ? "adam"
                                                              : "sgd_momentum"),
      ", \"learning_rates\": [", LrList(t), "]",
      ", \"max_epochs\": ", t.max_epochs, ", \"patience\": ", t.patience,
      ", \"lr_search\": ",
      JsonQuote(t.search == TunerOptions::Search::kGrid ? "grid"
                                                        : "successive_halving"),
      ", \"halving_min_epochs\": ", t.halving_min_epochs,
      ", \"halving_factor\": ", t.halving_factor,
      ", \"batch_size\": ", t.batch_size,
      ", \"momentum\": ", JsonNumber(t.momentum),
      ", \"weight_decay\": ", JsonNumber(t.weight_decay),
      ", \"guard_metric\": ", JsonQuote(r.guard_metric),
      ", \"max_accuracy_drop\": ", JsonNumber(t.max_accuracy_drop),
      ", \"seed\": ", o.seed);
  for (const auto& [k, v] : task.Describe()) {
    absl::StrAppend(&j, ", ", JsonQuote(k), ": ", v);
  }
  return j + "}";
}

// "epoch 3 loss" for every non-finite metric of a training epoch: recorded
// as given, and flagged in the report.
std::vector<std::string> NonFiniteMetrics(const HistoryStore& store) {
  std::vector<std::string> out;
  for (const pb::EpochEntry& e : store.Epochs()) {
    if (e.metrics().contains(kPostTrainMetric)) continue;
    std::vector<std::string> names;
    for (const auto& [k, v] : e.metrics()) {
      if (!std::isfinite(v)) names.push_back(k);
    }
    std::sort(names.begin(), names.end());
    for (const std::string& k : names) {
      out.push_back(absl::StrCat("epoch ", e.epoch(), " ", k));
    }
  }
  return out;
}

// The phase refuses a model holding NaN or infinite weights: tuning from
// them is meaningless, and the error names the first such tensor.
absl::Status CheckFinite(const torch::nn::Module& model,
                         absl::string_view prefix, absl::string_view suffix) {
  PT_ASSIGN_OR_RETURN(NamedTensors state, CopyModuleState(model));
  absl::Status status;
  PT_RETURN_IF_ERROR(CallTorch("checking the model's weights", [&] {
    for (const NamedTensor& t : state) {
      if (!t.tensor.is_floating_point()) continue;
      const at::Tensor bad = torch::isfinite(t.tensor).logical_not();
      if (!bad.any().item<bool>()) continue;
      const int64_t first = bad.flatten().nonzero()[0][0].item<int64_t>();
      status = absl::InvalidArgumentError(
          absl::StrCat(prefix, ": tensor '", t.name, "' of the model holds ",
                       bad.sum().item<int64_t>(),
                       " NaN or infinite value(s) (first at flat index ", first,
                       ")", suffix));
      return;
    }
  }));
  return status;
}

std::string ReportJson(const PipelineResult& r, const PostTrainTask& task,
                       int64_t stored_epoch,
                       const std::vector<std::string>& nonfinite) {
  const TuneReport& t = r.tune;
  std::string j = "{\n";
  absl::StrAppend(&j, "  \"task\": ", JsonQuote(r.task), ",\n");
  absl::StrAppend(&j, "  \"accepted\": ", Bool(t.accepted),
                  ",\n  \"reason\": ", JsonQuote(t.reason), ",\n");
  absl::StrAppend(&j, "  \"stored_epoch\": ", stored_epoch, ",\n");
  j += "  \"nonfinite_metrics\": [";
  for (size_t i = 0; i < nonfinite.size(); ++i) {
    absl::StrAppend(&j, i ? ", " : "", JsonQuote(nonfinite[i]));
  }
  j += "],\n";
  absl::StrAppend(&j, "  \"parameters\": ", SettingsJson(r, task), ",\n");
  j += "  \"augmentation\": {";
  bool first = true;
  for (const auto& [k, v] : r.augmentation.figures) {
    absl::StrAppend(&j, first ? "" : ", ", JsonQuote(k), ": ", JsonNumber(v));
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
      ", \"guard_before\": ", JsonNumber(t.guard_accuracy_before),
      ", \"guard_after\": ", JsonNumber(t.guard_accuracy_after),
      ", \"trials\": [");
  for (size_t i = 0; i < t.trials.size(); ++i) {
    const LearningRateTrial& tr = t.trials[i];
    absl::StrAppend(
        &j, i ? ", " : "", "{\"lr\": ", JsonNumber(tr.lr),
        ", \"best_epoch\": ", tr.best_epoch,
        ", \"best_validation_loss\": ", JsonNumber(tr.best_validation_loss),
        ", \"guard\": ", JsonNumber(tr.guard_accuracy),
        ", \"passes_guard\": ", Bool(tr.passes_guard),
        ", \"epochs\": ", tr.epochs, ", \"eliminated\": ", Bool(tr.eliminated),
        "}");
  }
  j += "]}\n}\n";
  return j;
}

std::string ReportMarkdown(const PipelineResult& r,
                           const std::vector<std::string>& nonfinite) {
  const TuneReport& t = r.tune;
  std::string m = absl::StrCat("# posttrain report: ", r.task, "\n\n");
  if (!nonfinite.empty()) {
    absl::StrAppend(&m, "**Warning:** non-finite training metrics (",
                    absl::StrJoin(nonfinite, ", "),
                    "); they are stored as given.\n\n");
  }
  absl::StrAppend(
      &m, t.accepted
              ? "The tuned model passed the accuracy guard and "
                "is now in the model.\n\n"
              : absl::StrCat("**Original model kept:** ", t.reason, "\n\n"));
  m += "| figure | before | after |\n|---|---|---|\n";
  absl::StrAppend(
      &m, absl::StrFormat("| guard %s | %.4f | %.4f |\n", r.guard_metric,
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
                         std::shared_ptr<PostTrainTask> task,
                         PostTrainerOptions options)
    : model_(model.is_empty() ? nullptr : model.ptr()),
      recorder_(std::move(recorder)),
      profiler_(std::move(profiler)),
      task_(std::move(task)),
      options_(std::move(options)) {}

PostTrainer::~PostTrainer() = default;

const PipelineResult* PostTrainer::result() const {
  return result_.has_value() ? &*result_ : nullptr;
}

absl::Status PostTrainer::OnTrainBegin() {
  begin_status_ = [&]() -> absl::Status {
    if (model_ == nullptr) {
      return absl::InvalidArgumentError("PostTrainer: empty model holder");
    }
    if (recorder_ == nullptr) {
      return absl::InvalidArgumentError(
          "PostTrainer: needs the HistoryRecorder whose store is the history");
    }
    if (task_ == nullptr) {
      return absl::InvalidArgumentError("PostTrainer: no task");
    }
    return Annotate(CheckPipeline(torch::nn::Sequential(model_), *task_),
                    "PostTrainer");
  }();
  return begin_status_;
}

absl::Status PostTrainer::CheckNewestEpoch(const HistoryStore& store) const {
  const std::vector<pb::EpochEntry> epochs = store.Epochs();
  const pb::EpochEntry* newest = nullptr;
  for (const pb::EpochEntry& e : epochs) {
    if (!e.metrics().contains(kPostTrainMetric)) newest = &e;
  }
  if (newest == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("PostTrainer: the history '", store.dir(),
                     "' holds no training epoch"));
  }
  PT_ASSIGN_OR_RETURN(NamedTensors stored, store.ReadEpoch(newest->epoch()));
  PT_ASSIGN_OR_RETURN(NamedTensors now, CopyModuleState(*model_));
  const bool lossy = newest->codec() == pb::CODEC_LOSSY;
  const double bound = lossy ? newest->max_abs_error() : 0.0;
  auto mismatch = [&](const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PostTrainer: the model given to it is not the newest training epoch ",
        newest->epoch(), " of '", store.dir(), "': ", what,
        ". Record the final epoch (OnEpochEnd) before OnTrainEnd, and give "
        "the PostTrainer the model the recorder records"));
  };
  if (stored.size() != now.size()) {
    return mismatch(absl::StrCat(stored.size(), " stored tensors, ", now.size(),
                                 " in the model"));
  }
  absl::Status status;
  PT_RETURN_IF_ERROR(CallTorch("comparing the model with its history", [&] {
    for (size_t i = 0; i < now.size() && status.ok(); ++i) {
      const at::Tensor a = now[i].tensor.cpu();
      const at::Tensor& b = stored[i].tensor;
      if (now[i].name != stored[i].name || !a.sizes().equals(b.sizes()) ||
          a.scalar_type() != b.scalar_type()) {
        status = mismatch(absl::StrCat("tensor '", now[i].name,
                                       "' differs in name, shape or type"));
        break;
      }
      if (!lossy || !a.is_floating_point()) {
        if (!torch::equal(a, b)) {
          status = mismatch(absl::StrCat("tensor '", now[i].name,
                                         "' differs (lossless codec)"));
        }
        continue;
      }
      const double err = a.numel() == 0
                             ? 0.0
                             : (a.to(torch::kDouble) - b.to(torch::kDouble))
                                   .abs()
                                   .max()
                                   .item<double>();
      // A relative slack of 1e-6 for the float rounding of the bound.
      if (!(err <= bound * (1 + 1e-6) + 1e-12)) {
        status = mismatch(absl::StrFormat(
            "tensor '%s' differs by %.3g, above the recorded lossy error "
            "%.3g",
            now[i].name, err, bound));
      }
    }
  }));
  return status;
}

absl::Status PostTrainer::OnTrainEnd() {
  result_.reset();
  markdown_.clear();
  stored_epoch_ = -1;
  if (!begin_status_.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PostTrainer: the phase did not run: ", begin_status_.message()));
  }
  // The recorder's pending writes first, whatever the order of the list:
  // the final training epoch must be stored (under its own number) before
  // the history is read or the improved model appended.
  const absl::Status flushed = recorder_->Flush();
  HistoryStore* store = recorder_->store();
  if (store == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PostTrainer: the phase did not run: the HistoryRecorder has no open "
        "store (",
        flushed.message(), ")"));
  }
  // Before the comparison with the history: NaN never equals itself.
  PT_RETURN_IF_ERROR(CheckFinite(*model_, "PostTrainer: the phase did not run",
                                 "; nothing was tuned or stored"));
  {
    absl::Status newest = CheckNewestEpoch(*store);
    if (!newest.ok() && !flushed.ok()) {
      return Annotate(newest, absl::StrCat("after a failed snapshot (",
                                           flushed.message(), ")"));
    }
    PT_RETURN_IF_ERROR(newest);
  }
  const std::vector<std::string> nonfinite = NonFiniteMetrics(*store);
  const Profile* profile = nullptr;
  if (profiler_ != nullptr) {
    // All-reduced and saved once, whatever the order of the list. Without
    // a usable online profile (no batch profiled, a failed all-reduce) the
    // pipeline profiles offline, and the report says "offline".
    if (profiler_->OnTrainEnd().ok()) profile = profiler_->profile();
  }
  TaskContext ctx;
  ctx.model = torch::nn::Sequential(model_);
  ctx.history = store;
  ctx.profile = profile;
  ctx.progress = options_.progress;
  PT_ASSIGN_OR_RETURN(PipelineResult r, RunPipeline(*task_, ctx));
  // The result is kept even when storing or reporting fails below: the
  // model already holds it, and the error says so.
  result_ = r;
  result_->augmentation.train = {};
  result_->augmentation.validation = {};
  const std::string applied = r.tune.accepted
                                  ? "the model holds the tuned weights"
                                  : "the model is unchanged";
  if (r.tune.accepted) {
    // A tuned model that diverged is never stored (argmax ranks NaN first,
    // so the guard alone does not catch it).
    PT_RETURN_IF_ERROR(CheckFinite(
        *model_, "PostTrainer: the tuned model (in the model now) diverged",
        "; it was not stored"));
  }
  if (r.tune.accepted && options_.store_improved) {
    EpochMetadata meta;
    meta.epoch = store->last_epoch() + 1;
    meta.step = store->last_step();
    meta.metrics[kPostTrainMetric] = 1;
    meta.metrics["guard_" + r.guard_metric] = r.tune.guard_accuracy_after;
    PT_ASSIGN_OR_RETURN(NamedTensors state, CopyModuleState(*model_));
    for (NamedTensor& t : state) t.tensor = t.tensor.cpu().contiguous();
    PT_RETURN_IF_ERROR(Annotate(store->Append(meta, std::move(state)),
                                absl::StrCat("PostTrainer (", applied,
                                             "): storing the improved model")));
    stored_epoch_ = meta.epoch;
  }
  const std::string dir =
      options_.report_dir.empty() ? store->dir() : options_.report_dir;
  markdown_ = ReportMarkdown(r, nonfinite);
  const std::string json = ReportJson(r, *task_, stored_epoch_, nonfinite);
  const std::string context =
      absl::StrCat("PostTrainer (", applied, "): writing the reports to ", dir);
  PT_RETURN_IF_ERROR(
      Annotate(WriteFileAtomically(Env::Default(), dir + "/report.json", {json},
                                   true, true),
               context));
  PT_RETURN_IF_ERROR(
      Annotate(WriteFileAtomically(Env::Default(), dir + "/report.md",
                                   {markdown_}, true, true),
               context));
  return absl::OkStatus();
}

}  // namespace posttrain

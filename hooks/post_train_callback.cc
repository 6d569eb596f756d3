#include "hooks/post_train_callback.h"

#include <torch/nn/modules/container/sequential.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "history/env.h"

namespace posttrain {
namespace {

// Runs `fn` as one part's event: exceptions become statuses, and the
// status names the part.
template <typename Fn>
absl::Status Part(const char* part, const char* event, Fn&& fn) {
  absl::Status s;
  absl::Status thrown =
      CallTorch(absl::StrCat(part, ".", event), [&] { s = fn(); });
  if (!thrown.ok()) return thrown;
  if (s.ok()) return s;
  return absl::Status(s.code(),
                      absl::StrCat(part, ".", event, ": ", s.message()));
}

void Keep(absl::Status* first, absl::Status s) {
  if (first->ok() && !s.ok()) *first = std::move(s);
}

}  // namespace

PostTrainCallback::PostTrainCallback(const torch::nn::Sequential& model,
                                     std::shared_ptr<PostTrainTask> task,
                                     PostTrainCallbackOptions options)
    : options_(std::move(options)), task_(std::move(task)) {
  recorder_ = std::make_shared<HistoryRecorder>(model, options_.directory,
                                                options_.history);
  parts_.Add(recorder_);
  if (options_.profile_online) {
    SliceProfilerOptions p = options_.profiler;
    if (task_ != nullptr) {
      ProfileCriteria criteria = task_->profile_criteria();
      p.num_criteria = criteria.num_criteria;
      if (criteria.of_batch) {
        p.criteria = [of = criteria.of_batch](const BatchEnd& b) {
          return of(b.inputs, b.targets);
        };
      }
    }
    if (!options_.profile_file.empty() && !options_.directory.empty()) {
      profile_path_ = JoinPath(options_.directory, options_.profile_file);
      p.save_path = profile_path_;
    }
    profiler_ = std::make_shared<SliceProfiler>(model, std::move(p));
    parts_.Add(profiler_);
  }
  PostTrainerOptions phase = options_.phase;
  phase.progress = options_.progress;
  trainer_ = std::make_shared<PostTrainer>(model, recorder_, profiler_, task_,
                                           std::move(phase));
}

PostTrainCallback::~PostTrainCallback() = default;

absl::Status PostTrainCallback::CheckOptions() const {
  if (options_.directory.empty()) {
    return absl::InvalidArgumentError(
        "PostTrainCallback: `directory` (the history store) is empty");
  }
  if (task_ == nullptr && options_.run_phase) {
    return absl::InvalidArgumentError(
        "PostTrainCallback: no task (give one, or set run_phase = false)");
  }
  const SliceProfilerOptions& p = options_.profiler;
  if (p.criteria || p.num_criteria != 0 || !p.save_path.empty()) {
    return absl::InvalidArgumentError(
        "PostTrainCallback: profiler.criteria, profiler.num_criteria and "
        "profiler.save_path are set by the callback (the task gives the "
        "criteria, profile_file the file); leave them unset");
  }
  if (options_.phase.progress != nullptr) {
    return absl::InvalidArgumentError(
        "PostTrainCallback: set `progress`, not phase.progress");
  }
  return absl::OkStatus();
}

absl::Status PostTrainCallback::OnTrainBegin() {
  epoch_ = 0;
  batch_ = 0;
  PT_RETURN_IF_ERROR(CheckOptions());
  absl::Status first;
  // The phase's checks first, so their error is the one returned; the
  // parts still start, so that a loop that goes on regardless still
  // records its history.
  const bool phase_here = options_.run_phase && options_.history.is_writer;
  if (phase_here) {
    Keep(&first, Part("PostTrainer", "OnTrainBegin",
                      [&] { return trainer_->OnTrainBegin(); }));
  }
  Keep(&first, parts_.OnTrainBegin());
  return first;
}

absl::Status PostTrainCallback::OnEpochBegin(int64_t epoch) {
  epoch_ = epoch;
  batch_ = 0;
  ReportProgress(options_.progress, absl::StrCat("epoch ", epoch), 0,
                 last_epoch_batches_, "batches");
  return parts_.OnEpochBegin(epoch);
}

absl::Status PostTrainCallback::OnBatchEnd(const BatchEnd& batch) {
  absl::Status s = parts_.OnBatchEnd(batch);
  ++batch_;
  // The total is the previous epoch's length; it is never shown as done
  // before OnEpochEnd.
  if (options_.progress != nullptr) {
    const int64_t total =
        last_epoch_batches_ > batch_ ? last_epoch_batches_ : 0;
    ReportProgress(options_.progress, absl::StrCat("epoch ", epoch_), batch_,
                   total, "batches");
  }
  return s;
}

absl::Status PostTrainCallback::OnEpochEnd(int64_t epoch,
                                           const Metrics& metrics) {
  absl::Status s = parts_.OnEpochEnd(epoch, metrics);
  if (batch_ > 0) {
    ReportProgress(options_.progress, absl::StrCat("epoch ", epoch), batch_,
                   batch_, "batches");
    last_epoch_batches_ = batch_;
  }
  epoch_ = epoch + 1;
  batch_ = 0;
  return s;
}

absl::Status PostTrainCallback::OnTrainEnd() {
  absl::Status first;
  // Flush the history, all-reduce and save the profile, then the phase.
  Keep(&first, parts_.OnTrainEnd());
  if (options_.run_phase && options_.history.is_writer) {
    Keep(&first, Part("PostTrainer", "OnTrainEnd",
                      [&] { return trainer_->OnTrainEnd(); }));
  }
  return first;
}

}  // namespace posttrain

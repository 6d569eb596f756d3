#include "hooks/slice_profiler.h"

#include <torch/nn/modules/container/sequential.h>
#include <torch/utils.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "history/env.h"

namespace posttrain {

SliceProfiler::SliceProfiler(const torch::nn::Sequential& model,
                             SliceProfilerOptions options)
    : model_(model.is_empty() ? nullptr : model.ptr()),
      options_(std::move(options)) {}

SliceProfiler::~SliceProfiler() = default;

absl::Status SliceProfiler::EnsureView() {
  if (view_.has_value()) return absl::OkStatus();
  if (model_ == nullptr) {
    return absl::InvalidArgumentError(
        "SliceProfiler: the model is an empty Sequential holder");
  }
  if (options_.every_n_batches < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("SliceProfiler: every_n_batches must be >= 1, got ",
                     options_.every_n_batches));
  }
  if (options_.num_criteria < 0) {
    return absl::InvalidArgumentError(
        "SliceProfiler: num_criteria must be >= 0");
  }
  PT_ASSIGN_OR_RETURN(ModelView view,
                      ModelView::Create(torch::nn::Sequential(model_)));
  view_ = std::move(view);
  return absl::OkStatus();
}

absl::Status SliceProfiler::OnTrainBegin() {
  end_status_.reset();
  epoch_ = 0;
  return EnsureView();
}

absl::Status SliceProfiler::OnEpochBegin(int64_t epoch) {
  epoch_ = epoch;
  return absl::OkStatus();
}

absl::Status SliceProfiler::OnBatchEnd(const BatchEnd& batch) {
  const int64_t index = batch_in_epoch_++;
  const int64_t n = options_.every_n_batches;
  if (n < 1) return EnsureView();  // the error
  if (options_.final_epoch >= 0 && epoch_ < options_.final_epoch) {
    return absl::OkStatus();
  }
  bool profile = index % n == 0;
  if (options_.sampling == SliceProfilerOptions::Sampling::kEpochTail &&
      last_epoch_batches_ > 0) {
    profile =
        index >= last_epoch_batches_ - (last_epoch_batches_ + n - 1) / n &&
        index < last_epoch_batches_;  // bounded if this epoch is longer
  }
  if (!profile) return absl::OkStatus();
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = ProfileBatch(batch);
  seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return s;
}

absl::Status SliceProfiler::ProfileBatch(const BatchEnd& batch) {
  PT_RETURN_IF_ERROR(EnsureView());
  if (!batch.inputs.defined() || batch.inputs.dim() == 0 ||
      batch.inputs.size(0) == 0) {
    return absl::InvalidArgumentError("SliceProfiler: the batch is empty");
  }
  at::Tensor criteria;
  PT_RETURN_IF_ERROR(CallTorch("SliceProfiler: criterion ids", [&] {
    criteria = options_.criteria ? options_.criteria(batch) : batch.targets;
  }));
  if (!criteria.defined() || criteria.numel() != batch.inputs.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SliceProfiler: one criterion id per sample needed (",
                     batch.inputs.size(0), " samples)"));
  }
  if (!profile_.has_value() || restart_pending_) {
    int num_criteria = options_.num_criteria;
    if (num_criteria == 0) {
      // One per model output: the width of the output point.
      PT_ASSIGN_OR_RETURN(
          Profile probe,
          Profile::Create(*view_, batch.inputs.narrow(0, 0, 1), 0));
      num_criteria =
          static_cast<int>(probe.point(probe.num_points() - 1).features());
    }
    PT_ASSIGN_OR_RETURN(
        Profile fresh,
        Profile::Create(*view_, batch.inputs.narrow(0, 0, 1), num_criteria));
    profile_ = std::move(fresh);
    restart_pending_ = false;
    profiled_batches_ = 0;
  }
  // The user's inputs may need grad (adversarial training): no graph here.
  PT_RETURN_IF_ERROR(
      profile_->AddBatch(*view_, batch.inputs.detach(), criteria));
  ++profiled_batches_;
  return absl::OkStatus();
}

absl::Status SliceProfiler::OnEpochEnd(int64_t epoch, const Metrics& metrics) {
  (void)metrics;
  epoch_ = epoch + 1;  // until OnEpochBegin says otherwise
  last_epoch_batches_ = batch_in_epoch_;
  batch_in_epoch_ = 0;
  if (options_.restart_each_epoch) restart_pending_ = true;
  return absl::OkStatus();
}

absl::Status SliceProfiler::OnTrainEnd() {
  // Once per run: a second call (the PostTrainer's and the list's) returns
  // the first one's status without reducing again.
  if (!end_status_.has_value()) end_status_ = FinishRun();
  return *end_status_;
}

absl::Status SliceProfiler::FinishRun() {
  if (!profile_.has_value() && options_.final_epoch >= 0) {
    return absl::OkStatus();  // stopped before final_epoch: no profile
  }
  if (!profile_.has_value()) {
    return absl::FailedPreconditionError(
        "SliceProfiler: no batch was profiled (OnBatchEnd never called)");
  }
  if (options_.all_reduce) {
    absl::Status reduced;
    PT_RETURN_IF_ERROR(CallTorch("SliceProfiler: all_reduce", [&] {
      reduced = options_.all_reduce(profile_->sums(), profile_->counts());
    }));
    PT_RETURN_IF_ERROR(Annotate(reduced, "SliceProfiler: all_reduce"));
  }
  if (!options_.save_path.empty()) {
    std::string bytes;
    if (!profile_->ToProto().SerializeToString(&bytes)) {
      return absl::InternalError("SliceProfiler: cannot serialize the profile");
    }
    PT_RETURN_IF_ERROR(Annotate(
        WriteFileAtomically(Env::Default(), options_.save_path, {bytes},
                            /*sync_file=*/true, /*sync_dir=*/true),
        absl::StrCat("SliceProfiler: saving ", options_.save_path)));
  }
  return absl::OkStatus();
}

const Profile* SliceProfiler::profile() const {
  return profile_.has_value() ? &*profile_ : nullptr;
}

}  // namespace posttrain

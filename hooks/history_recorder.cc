#include "hooks/history_recorder.h"

#include <torch/nn/modules/container/sequential.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/model_spec.h"
#include "common/module_state.h"
#include "common/status.h"

namespace posttrain {

HistoryRecorder::HistoryRecorder(const torch::nn::Sequential& model,
                                 std::string directory,
                                 HistoryRecorderOptions options)
    : model_(model.is_empty() ? nullptr : model.ptr()),
      directory_(std::move(directory)),
      options_(std::move(options)) {}

HistoryRecorder::~HistoryRecorder() {
  writer_.reset();  // drains the queue before the store closes
}

absl::Status HistoryRecorder::EnsureOpen() {
  if (store_ != nullptr) return absl::OkStatus();
  if (model_ == nullptr) {
    return absl::InvalidArgumentError(
        "HistoryRecorder: the model is an empty Sequential holder");
  }
  PT_ASSIGN_OR_RETURN(pb::ModelSpec spec, DescribeSequential(*model_));
  if (!options_.resume) {
    // Looked at read-only first: a refused store is not touched at all.
    auto existing = HistoryStore::OpenReadOnly(directory_, options_.store.env);
    if (existing.ok() && !(*existing)->Epochs().empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "HistoryRecorder: '", directory_, "' already holds ",
          (*existing)->Epochs().size(), " epoch(s), the newest epoch ",
          (*existing)->last_epoch(),
          ", from an earlier run; set HistoryRecorderOptions::resume to "
          "continue it, or record into a new directory"));
    }
  }
  PT_ASSIGN_OR_RETURN(std::unique_ptr<HistoryStore> store,
                      HistoryStore::Open(directory_, options_.store, spec));
  if (options_.async) {
    PT_ASSIGN_OR_RETURN(
        writer_, AsyncHistoryWriter::Create(store.get(), options_.max_pending,
                                            options_.store.env));
  }
  store_ = std::move(store);
  last_epoch_ = store_->last_epoch();
  step_ = store_->last_step();
  return absl::OkStatus();
}

absl::Status HistoryRecorder::OnTrainBegin() {
  if (!options_.is_writer) return absl::OkStatus();
  open_status_ = EnsureOpen();
  return open_status_;
}

absl::Status HistoryRecorder::OnBatchEnd(const BatchEnd& batch) {
  (void)batch;
  ++step_;
  return absl::OkStatus();
}

absl::Status HistoryRecorder::OnEpochEnd(int64_t epoch,
                                         const Metrics& metrics) {
  if (!options_.is_writer || stopped_) return absl::OkStatus();
  PT_RETURN_IF_ERROR(open_status_);
  if (epoch <= last_epoch_) {
    return absl::FailedPreconditionError(
        absl::StrCat("HistoryRecorder: epoch ", epoch,
                     " is not after the last recorded "
                     "epoch ",
                     last_epoch_, " of '", directory_,
                     "'; stored epochs are never overwritten"));
  }
  EpochMetadata meta;
  meta.epoch = epoch;
  meta.step = step_;
  meta.metrics = metrics;
  meta.seed = options_.seed;
  absl::StatusOr<NamedTensors> state = CopyModuleState(*model_);
  absl::Status s = state.status();
  if (s.ok() && writer_) {
    // Queued: the epoch number is taken even if the write fails later.
    last_epoch_ = epoch;
    s = writer_->Submit(std::move(meta), std::move(*state));
    // An error here is an earlier epoch's, already counted by the writer.
    if (!s.ok() && options_.stop_on_error) stopped_ = true;
    return s;
  }
  if (s.ok()) {
    s = store_->Append(meta, std::move(*state));
    if (s.ok()) {
      last_epoch_ = epoch;
      ++sync_written_;
      return s;
    }
  }
  // The snapshot of this epoch failed (copy or synchronous write).
  s = Annotate(s, absl::StrCat("HistoryRecorder: epoch ", epoch));
  ++own_failed_;
  if (first_own_error_.ok()) first_own_error_ = s;
  if (options_.stop_on_error) stopped_ = true;
  return s;
}

absl::Status HistoryRecorder::OnTrainEnd() { return Flush(); }

absl::Status HistoryRecorder::Flush() {
  if (!options_.is_writer) return absl::OkStatus();
  PT_RETURN_IF_ERROR(open_status_);
  absl::Status written = writer_ ? writer_->Flush() : absl::OkStatus();
  return first_own_error_.ok() ? written : first_own_error_;
}

size_t HistoryRecorder::snapshots_written() const {
  return writer_ ? writer_->written() : sync_written_;
}

size_t HistoryRecorder::snapshots_failed() const {
  return (writer_ ? writer_->failed() : 0) + own_failed_;
}

}  // namespace posttrain

// HistoryRecorder: the callback that snapshots the model into a history
// store at the end of every epoch.
//
// The training thread only copies the parameters and buffers (a memcpy per
// tensor); compression and file writes run on a background thread
// (AsyncHistoryWriter). A failed snapshot is returned by the next event and
// by OnTrainEnd, and training goes on; set stop_on_error to stop recording
// after the first failure instead.
//
// A failed synchronous snapshot does not take the epoch number: the same
// epoch may be retried once the cause (a full disk) is gone.
//
// A directory that already holds epochs is refused at OnTrainBegin (a store
// left from an earlier run would otherwise be mined as this run's history),
// with an error naming the directory and its newest epoch; nothing in it is
// touched.
//
// Resuming is explicit: with `resume = true`, constructed again over the
// same directory (after the user's loop restarted from its own checkpoint),
// the recorder continues the store's history: last_epoch() and last_step()
// say where it ended, the step counter continues, and an epoch at or below
// last_epoch() is refused (never overwritten).
//
// Example:
//   posttrain::HistoryRecorderOptions options;
//   options.resume = true;  // continue the store after a restart
//   posttrain::HistoryRecorder recorder(model, "runs/fmnist/history",
//                                       options);
//   if (auto s = recorder.OnTrainBegin(); !s.ok()) {
//     std::fprintf(stderr, "%s\n", s.ToString().c_str());
//   }
//   for (int64_t epoch = recorder.last_epoch() + 1; epoch < 10; ++epoch) {
//     // ... train ...
//     recorder.OnEpochEnd(epoch, {{"loss", loss}}).IgnoreError();
//   }
//   recorder.OnTrainEnd().IgnoreError();
//
// Thread safety: events from one thread at a time (the training thread).
#ifndef POSTTRAIN_HOOKS_HISTORY_RECORDER_H_
#define POSTTRAIN_HOOKS_HISTORY_RECORDER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "history/async_writer.h"
#include "history/store.h"
#include "hooks/callback.h"

namespace torch::nn {
class SequentialImpl;
class Sequential;
}  // namespace torch::nn

namespace posttrain {

struct HistoryRecorderOptions {
  // Codec, retention, Env and durability of the store.
  HistoryOptions store;
  // Write on a background thread (true) or inside OnEpochEnd (false).
  bool async = true;
  // Async: snapshots that may wait for the writer before OnEpochEnd blocks.
  size_t max_pending = 2;
  // Recorded with every epoch, so a run can be reproduced.
  uint64_t seed = 0;
  // In a torch.distributed job only one rank writes the history; set false
  // on the others (every event is then a no-op).
  bool is_writer = true;
  // After the first failed snapshot, skip the remaining ones.
  bool stop_on_error = false;
  // Continue a store that already holds epochs (false: such a store is
  // refused at OnTrainBegin).
  bool resume = false;
};

class HistoryRecorder : public Callback {
 public:
  // `model` is shared, not copied: the recorder snapshots whatever weights it
  // holds at each OnEpochEnd.
  HistoryRecorder(const torch::nn::Sequential& model, std::string directory,
                  HistoryRecorderOptions options = {});
  ~HistoryRecorder() override;

  std::string name() const override { return "HistoryRecorder"; }
  // Opens (or creates) the store. Errors: unsupported layer, another
  // architecture in the store, I/O.
  absl::Status OnTrainBegin() override;
  // Counts optimizer steps.
  absl::Status OnBatchEnd(const BatchEnd& batch) override;
  // Snapshots the model as epoch `epoch`.
  absl::Status OnEpochEnd(int64_t epoch, const Metrics& metrics) override;
  // Waits for pending writes; returns the first error of the run, if any.
  absl::Status OnTrainEnd() override;
  // The same as OnTrainEnd, at any time: after it returns, every snapshot
  // submitted so far is in the store (or failed). Readers of the store in
  // this process (the PostTrainer) call it first.
  absl::Status Flush();

  // After OnTrainBegin: the last epoch and step already in the store
  // (-1 and 0 for a new store), i.e. where a resumed loop continues.
  int64_t last_epoch() const { return last_epoch_; }
  int64_t last_step() const { return step_; }
  // Snapshots written and failed so far (after OnTrainEnd: all of them).
  size_t snapshots_written() const;
  size_t snapshots_failed() const;
  // The open store (null before OnTrainBegin), for readers in this process.
  HistoryStore* store() const { return store_.get(); }

 private:
  absl::Status EnsureOpen();

  std::shared_ptr<torch::nn::SequentialImpl> model_;
  std::string directory_;
  HistoryRecorderOptions options_;
  std::unique_ptr<HistoryStore> store_;
  std::unique_ptr<AsyncHistoryWriter> writer_;
  absl::Status open_status_ = absl::FailedPreconditionError(
      "HistoryRecorder: OnTrainBegin was not called");
  int64_t last_epoch_ = -1;
  int64_t step_ = 0;
  size_t sync_written_ = 0;
  // Failures seen here (copying the state, synchronous writes); the async
  // writer counts its own.
  size_t own_failed_ = 0;
  absl::Status first_own_error_;
  bool stopped_ = false;
};

}  // namespace posttrain

#endif  // POSTTRAIN_HOOKS_HISTORY_RECORDER_H_

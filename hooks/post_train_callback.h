// PostTrainCallback: the one object a training loop adds. It owns the three
// parts and runs their events in the right order whatever the loop does:
//  - HistoryRecorder: snapshots every epoch into the history store;
//  - SliceProfiler: records the NNSlicer profile online (criteria from the
//    task), saved beside the history at OnTrainEnd for the offline command;
//  - PostTrainer: at OnTrainEnd, runs the task's post-training phase on the
//    model and leaves the result in it, with report.json and report.md.
//
// Order of the parts: OnTrainBegin checks the phase first (the task, the
// settings, the whole architecture: an unsupported model fails before the
// first batch, and the phase will not run), then opens the store (a
// directory holding an earlier run's epochs is refused unless
// history.resume), then the profiler. OnTrainEnd flushes the recorder,
// all-reduces and saves the profile, then runs the phase. Every event runs
// every part even when one fails, returns the first error (naming the
// part), and never throws. (Bad options of the callback itself, such as an
// empty directory, fail OnTrainBegin before any part starts.)
//
// torch.distributed: construct it on every rank with history.is_writer set
// on one rank only and profiler.all_reduce set on all; only the writer rank
// records and runs the phase (every rank must call OnTrainEnd, for the
// all-reduce).
//
// The parts stay usable alone (hooks/history_recorder.h,
// hooks/slice_profiler.h, hooks/post_trainer.h) for loops that need only
// one of them.
//
// Example (README's integration):
//   absl::StatusOr<std::unique_ptr<posttrain::PostTrainTask>> task =
//       posttrain::MakeDareTask(dare);
//   if (!task.ok()) return task.status();
//   posttrain::PostTrainCallbackOptions options;
//   options.directory = "runs/my_model/history";
//   posttrain::PostTrainCallback post(model, std::move(*task), options);
//   post.OnTrainBegin().IgnoreError();
//
// Thread safety: events from the training thread, one at a time.
#ifndef POSTTRAIN_HOOKS_POST_TRAIN_CALLBACK_H_
#define POSTTRAIN_HOOKS_POST_TRAIN_CALLBACK_H_

#include <cstdint>
#include <memory>
#include <string>

#include "hooks/callback.h"
#include "hooks/history_recorder.h"
#include "hooks/post_trainer.h"
#include "hooks/slice_profiler.h"
#include "tuner/progress.h"
#include "tuner/task.h"

namespace posttrain {

struct PostTrainCallbackOptions {
  // The history store's directory (required). The profile and the reports
  // are written there too (unless phase.report_dir says otherwise).
  std::string directory;
  // The store's codec, retention and Env, async writing, `resume` (continue
  // a store that already holds epochs), and `is_writer` (false on all but
  // one rank of a torch.distributed job).
  HistoryRecorderOptions history;
  // Record the NNSlicer profile online (false: the phase profiles the
  // task's slicing inputs offline when training ends).
  bool profile_online = true;
  // The online profile's sampling and all_reduce. Its criteria come from
  // the task (PostTrainTask::profile_criteria); setting `criteria`,
  // `num_criteria` or `save_path` here is an error.
  SliceProfilerOptions profiler;
  // The profile's file name inside `directory` ("" : not saved).
  std::string profile_file = "profile.pb";
  // Run the phase at OnTrainEnd (false: record only, for the offline
  // command to improve later).
  bool run_phase = true;
  // The PostTrainer's options: report_dir, store_improved. Its `progress`
  // must stay null (use `progress` below).
  PostTrainerOptions phase;
  // Receives the progress of training epochs and of the phase (e.g. a
  // ProgressBar, hooks/progress_bar.h); null: none. Not owned.
  ProgressSink* progress = nullptr;
};

class PostTrainCallback : public Callback {
 public:
  // `model` is shared, not copied; `task` is required unless
  // options.run_phase is false.
  PostTrainCallback(const torch::nn::Sequential& model,
                    std::shared_ptr<PostTrainTask> task,
                    PostTrainCallbackOptions options);
  ~PostTrainCallback() override;

  std::string name() const override { return "PostTrainCallback"; }
  absl::Status OnTrainBegin() override;
  absl::Status OnEpochBegin(int64_t epoch) override;
  absl::Status OnBatchEnd(const BatchEnd& batch) override;
  absl::Status OnEpochEnd(int64_t epoch, const Metrics& metrics) override;
  absl::Status OnTrainEnd() override;

  // The parts (the profiler is null when profile_online is false).
  HistoryRecorder& recorder() const { return *recorder_; }
  SliceProfiler* profiler() const { return profiler_.get(); }
  PostTrainer& post_trainer() const { return *trainer_; }
  // After OnTrainBegin: where a resumed loop continues (recorder's).
  int64_t last_epoch() const { return recorder_->last_epoch(); }
  // The phase's result after OnTrainEnd; nullptr before, on error, or when
  // the phase did not run.
  const PipelineResult* result() const { return trainer_->result(); }
  // Where the profile is saved ("" when it is not).
  const std::string& profile_path() const { return profile_path_; }

 private:
  absl::Status CheckOptions() const;

  PostTrainCallbackOptions options_;
  std::shared_ptr<PostTrainTask> task_;
  std::string profile_path_;
  std::shared_ptr<HistoryRecorder> recorder_;
  std::shared_ptr<SliceProfiler> profiler_;
  std::shared_ptr<PostTrainer> trainer_;
  CallbackList parts_;  // recorder, profiler
  int64_t epoch_ = 0;
  int64_t batch_ = 0;
  int64_t last_epoch_batches_ = 0;
};

}  // namespace posttrain

#endif  // POSTTRAIN_HOOKS_POST_TRAIN_CALLBACK_H_

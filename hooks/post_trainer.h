// PostTrainer: the callback that runs the post-training phase when training
// ends (paper §3): it hosts a task (tuner/task.h; Dare, FMT or a user's own)
// and runs the pipeline on the user's model with the HistoryRecorder's store
// as the history and the SliceProfiler's online profile. It leaves the
// improved weights in the model (or the original ones when the guard
// rejects the result or the task found nothing to tune on, saying so),
// appends the improved model to the history store as one more epoch marked
// with the metric "posttrain" (so later mining skips it), and writes
// report.json and report.md.
//
// Order does not matter: at OnTrainEnd the PostTrainer first flushes the
// recorder's pending writes, whatever the order of the CallbackList, so the
// final training epoch is stored under its own number before the improved
// model takes the next one. Before mining it checks that the newest stored
// training epoch holds the model it was given (bit for bit, or within the
// recorded error for the lossy codec), and names both when not.
//
// It is meant for the end of training: the same recorder cannot go on
// recording training epochs after it (start a new recorder with resume,
// which continues after the improved model). With a retention policy that
// keeps the last N, that extra epoch counts as one of them. In a
// torch.distributed job run it on the writer rank. Most users get it inside
// the one callback, hooks/post_train_callback.h.
//
// Example:
//   absl::StatusOr<std::unique_ptr<posttrain::PostTrainTask>> task =
//       posttrain::MakeDareTask(dare_options);
//   if (!task.ok()) return task.status();
//   callbacks.Add(std::make_shared<posttrain::PostTrainer>(
//       model, recorder, profiler, std::move(*task)));
//
// Thread safety: events from the training thread.
#ifndef POSTTRAIN_HOOKS_POST_TRAINER_H_
#define POSTTRAIN_HOOKS_POST_TRAINER_H_

#include <memory>
#include <optional>
#include <string>

#include "hooks/callback.h"
#include "hooks/history_recorder.h"
#include "hooks/slice_profiler.h"
#include "tuner/pipeline.h"
#include "tuner/progress.h"
#include "tuner/task.h"

namespace posttrain {

struct PostTrainerOptions {
  // Where report.json and report.md go; empty: the history directory.
  std::string report_dir;
  // Append the accepted model to the history store (marked "posttrain").
  bool store_improved = true;
  // Receives the phase's progress; null: none (the library never prints).
  ProgressSink* progress = nullptr;
};

class PostTrainer : public Callback {
 public:
  // `recorder` is required (its store is the history); `profiler` may be
  // null (then slicing profiles the model offline over the task's slicing
  // inputs); `task` is required.
  PostTrainer(const torch::nn::Sequential& model,
              std::shared_ptr<HistoryRecorder> recorder,
              std::shared_ptr<SliceProfiler> profiler,
              std::shared_ptr<PostTrainTask> task,
              PostTrainerOptions options = {});
  ~PostTrainer() override;

  std::string name() const override { return "PostTrainer"; }
  // Checks everything that can be checked before training: the task's
  // options and model check, the settings, and the whole architecture
  // (slicer layer support, the regression view). The phase runs at
  // OnTrainEnd only when this succeeded.
  absl::Status OnTrainBegin() override;
  absl::Status OnTrainEnd() override;

  // The phase's result after OnTrainEnd; nullptr before, or when the phase
  // failed before it had one. A failure to store the model or write the
  // reports keeps the result (the model holds it; the error says so).
  const PipelineResult* result() const;
  // report.md's text (empty before OnTrainEnd).
  const std::string& report_markdown() const { return markdown_; }
  // The epoch the improved model was stored as; -1 when none was.
  int64_t stored_epoch() const { return stored_epoch_; }

 private:
  absl::Status CheckNewestEpoch(const HistoryStore& store) const;

  std::shared_ptr<torch::nn::SequentialImpl> model_;
  std::shared_ptr<HistoryRecorder> recorder_;
  std::shared_ptr<SliceProfiler> profiler_;
  std::shared_ptr<PostTrainTask> task_;
  PostTrainerOptions options_;
  absl::Status begin_status_ =
      absl::FailedPreconditionError("PostTrainer: OnTrainBegin was not called");
  std::optional<PipelineResult> result_;
  std::string markdown_;
  int64_t stored_epoch_ = -1;
};

}  // namespace posttrain

#endif  // POSTTRAIN_HOOKS_POST_TRAINER_H_

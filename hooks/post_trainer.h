// PostTrainer: the callback that runs the post-training phase when training
// ends (paper §3-4.1): Dare (or one of its ablations) mined from the
// HistoryRecorder's store, slicing with the SliceProfiler's online profile,
// masked tuning of the regression model, and sync into the user's model.
// It leaves the improved weights in the model (or the original ones when
// the accuracy guard rejects the result, saying so), appends the improved
// model to the history store as one more epoch marked with the metric
// "posttrain" (so later mining skips it), and writes report.json and
// report.md.
//
// Add it to the CallbackList after the HistoryRecorder and the
// SliceProfiler, so their OnTrainEnd (flush, all-reduce) runs first. It is
// meant for the end of training: the stored improved model takes the next
// epoch number, so the same recorder cannot go on recording training epochs
// after it (start a new recorder, which resumes after it). With a
// retention policy that keeps the last N, that extra epoch counts as one
// of them. In a torch.distributed job run it on the writer rank.
//
// Data: `validation` is the held-out half handed to the callback; a seeded
// guard_fraction of it is the guard split (lr choice, early stopping,
// accuracy guard), the rest is D for Algorithm 1. `slice_data` is D'_c
// (the training inputs of each class; at most max_slice_inputs of them, a
// seeded sample).
//
// Example:
//   posttrain::PostTrainerOptions post;
//   post.validation = {val_images, val_labels};
//   post.slice_data = {train_images, train_labels};
//   callbacks.Add(std::make_shared<posttrain::PostTrainer>(
//       model, recorder, profiler, post));
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

namespace posttrain {

struct PostTrainerOptions {
  // dare, dare_no_slice, dare_no_transform, dare_last or dare_random.
  std::string variant = "dare";
  LabelledData validation;
  double guard_fraction = 0.1;
  // At most this many inputs of D are mined (a seeded sample; 0: all).
  int64_t max_mine_inputs = 0;
  LabelledData slice_data;  // empty: the mining split
  int64_t max_slice_inputs = 10000;
  PipelineOptions pipeline;  // slicer and tuner settings
  // Where report.json and report.md go; empty: the history directory.
  std::string report_dir;
  bool store_improved = true;
  uint64_t seed = 1;
};

class PostTrainer : public Callback {
 public:
  // `recorder` is required (its store is the history); `profiler` may be
  // null (then slicing profiles the model offline over slice_data).
  PostTrainer(const torch::nn::Sequential& model,
              std::shared_ptr<HistoryRecorder> recorder,
              std::shared_ptr<SliceProfiler> profiler,
              PostTrainerOptions options);
  ~PostTrainer() override;

  std::string name() const override { return "PostTrainer"; }
  // Checks the options (variant, data, fractions) before training starts.
  absl::Status OnTrainBegin() override;
  absl::Status OnTrainEnd() override;

  // The phase's result after OnTrainEnd; nullptr before or on error.
  const PipelineResult* result() const;
  // report.md's text (empty before OnTrainEnd).
  const std::string& report_markdown() const { return markdown_; }

 private:
  std::shared_ptr<torch::nn::SequentialImpl> model_;
  std::shared_ptr<HistoryRecorder> recorder_;
  std::shared_ptr<SliceProfiler> profiler_;
  PostTrainerOptions options_;
  absl::Status CheckOptions() const;
  std::optional<PipelineResult> result_;
  std::string markdown_;
};

}  // namespace posttrain

#endif  // POSTTRAIN_HOOKS_POST_TRAINER_H_

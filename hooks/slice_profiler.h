// SliceProfiler: the callback that records the NNSlicer profile (mean
// activation of every neuron, overall and per criterion; ALGORITHMS.md §1.1)
// while the user's loop trains, so the post-training phase needs no extra
// pass over the training data to get ȳ(D).
//
// How: after an optimizer step the profiler runs the model once more on that
// batch's inputs, in eval mode and without grad (the user's forward ran in
// train mode, where BatchNorm and Dropout behave differently), and adds the
// activations. It does so for 1 batch in `every_n_batches` (default 32), by
// default the last 1/32 of each epoch's batches (the epoch length is
// learned from the previous epoch): the model there is closest to the final
// one, and on the example that raised the key-synapse agreement with the
// exact offline profile from 98.1% (every 32nd batch) to 99.3% at the same
// cost, about 1.3% of training time (docs/BENCHMARKS.md). The profile
// restarts with every epoch, so when training ends it describes the final
// epoch's model. A loop that knows its last epoch sets `final_epoch`, and
// only that epoch is profiled: the earlier epochs' profiles would be
// discarded anyway, so this cuts the profiler's cost by the number of
// epochs without changing the profile. every_n_batches = 1 profiles every
// batch (about 40% more compute per step). The mode of every submodule is
// restored after the extra forward; no random numbers are drawn.
//
// torch.distributed: each rank profiles its own batches; set `all_reduce` to
// sum the sums and counts across ranks at OnTrainEnd (every rank must then
// call OnTrainEnd).
//
// Example:
//   auto profiler = std::make_shared<posttrain::SliceProfiler>(model);
//   callbacks.Add(profiler);
//   // ... the loop calls callbacks.OnBatchEnd({x, y}) and OnEpochEnd ...
//   callbacks.OnTrainEnd().IgnoreError();
//   const posttrain::Profile* profile = profiler->profile();
//
// Thread safety: events from one thread at a time (the training thread).
#ifndef POSTTRAIN_HOOKS_SLICE_PROFILER_H_
#define POSTTRAIN_HOOKS_SLICE_PROFILER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/model_view.h"
#include "hooks/callback.h"
#include "slicer/profile.h"

namespace torch::nn {
class SequentialImpl;
class Sequential;
}  // namespace torch::nn

namespace posttrain {

struct SliceProfilerOptions {
  // Criteria (ids 0 .. num_criteria - 1); 0: one per model output (a class).
  int num_criteria = 0;
  // The criterion id of every sample of a batch (int64 [B], -1: none);
  // default: the batch's targets (its class labels). FMT passes the
  // protected-group ids here.
  std::function<at::Tensor(const BatchEnd&)> criteria;
  // Profile one batch in this many: 1/n of the batches. Default chosen by
  // measurement, see docs/BENCHMARKS.md.
  int every_n_batches = 32;
  // Which batches. kEveryNth: the first of each group of n. kEpochTail: the
  // last 1/n of each epoch's batches (the epoch length is taken from the
  // previous epoch; the first epoch uses kEveryNth), whose model is closest
  // to the epoch's final one. An epoch shorter than the one before by more
  // than its tail gets no profiled batch; the profile then stays the
  // previous epoch's.
  enum class Sampling { kEveryNth, kEpochTail };
  Sampling sampling = Sampling::kEpochTail;
  // Restart the profile at every epoch (true: the profile is the last
  // epoch's). false: accumulate over the whole run.
  bool restart_each_epoch = true;
  // The number of the loop's last epoch (as passed to OnEpochBegin and
  // OnEpochEnd), when the loop knows it; -1: unknown, every epoch is
  // profiled. When set, batches of earlier epochs are not profiled (with
  // restart_each_epoch their profiles would be discarded). A loop that never
  // calls OnEpochBegin is followed by OnEpochEnd's numbers (the run's first
  // epoch counts as epoch 0 until its end). If the run ends before
  // final_epoch (early stopping), there is no profile: OnTrainEnd succeeds,
  // profile() stays null, and the PostTrainer profiles offline (exact, one
  // more forward pass over the slicing inputs).
  int64_t final_epoch = -1;
  // torch.distributed: sums `sums` (float64) and `counts` (int64) across
  // ranks in place, e.g. with c10d's allreduce. Called at OnTrainEnd.
  std::function<absl::Status(at::Tensor& sums, at::Tensor& counts)> all_reduce;
  // When set, OnTrainEnd writes the profile there (protobuf, written to a
  // temporary file and renamed), for the offline tool.
  std::string save_path;
};

class SliceProfiler : public Callback {
 public:
  // `model` is shared, not copied.
  explicit SliceProfiler(const torch::nn::Sequential& model,
                         SliceProfilerOptions options = {});
  ~SliceProfiler() override;

  std::string name() const override { return "SliceProfiler"; }
  // Checks the model (an unsupported layer is an error naming it).
  absl::Status OnTrainBegin() override;
  absl::Status OnEpochBegin(int64_t epoch) override;
  absl::Status OnBatchEnd(const BatchEnd& batch) override;
  absl::Status OnEpochEnd(int64_t epoch, const Metrics& metrics) override;
  // All-reduces (when set) and saves (when set) the profile, once per run:
  // a second call returns the first one's status (the PostTrainer calls it
  // before reading the profile, whatever the order of the list).
  absl::Status OnTrainEnd() override;

  // The profile so far (of the current epoch, or of the last finished one
  // before the next epoch's first profiled batch); nullptr before the first
  // profiled batch.
  const Profile* profile() const;
  // Batches and samples profiled since the profile last restarted.
  int64_t profiled_batches() const { return profiled_batches_; }
  // Wall time spent inside OnBatchEnd over the whole run, in seconds.
  double seconds() const { return seconds_; }

 private:
  absl::Status EnsureView();
  absl::Status ProfileBatch(const BatchEnd& batch);
  absl::Status FinishRun();

  std::shared_ptr<torch::nn::SequentialImpl> model_;
  SliceProfilerOptions options_;
  std::optional<ModelView> view_;
  std::optional<Profile> profile_;
  bool restart_pending_ = false;
  int64_t batch_in_epoch_ = 0;
  int64_t last_epoch_batches_ = 0;  // 0: no epoch finished yet
  int64_t epoch_ = 0;  // the current epoch's number (for final_epoch)
  int64_t profiled_batches_ = 0;
  double seconds_ = 0;
  std::optional<absl::Status> end_status_;  // set by the run's OnTrainEnd
};

}  // namespace posttrain

#endif  // POSTTRAIN_HOOKS_SLICE_PROFILER_H_

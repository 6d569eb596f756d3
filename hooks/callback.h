// Callback: the events of a user's training loop, observed by posttrain.
//
// Modelled on google/benchmark's BenchmarkReporter and Keras callbacks: every
// event has a no-op default, returns absl::Status, and never throws into the
// loop (CallbackList converts any exception into a status). A failing
// callback never stops training by itself: the loop decides what to do with
// the status (log it, or stop).
//
// Example (the whole integration into an existing loop):
//   posttrain::HistoryRecorder recorder(model, "run/history");
//   recorder.OnTrainBegin().IgnoreError();          // or log it
//   for (int epoch = start; epoch < epochs; ++epoch) {
//     // ... the user's own batches, each followed by OnBatchEnd ...
//     recorder.OnEpochEnd(epoch, {{"loss", loss}}).IgnoreError();
//   }
//   recorder.OnTrainEnd().IgnoreError();
//
// Thread safety: events are called from the training thread, one at a time.
#ifndef POSTTRAIN_HOOKS_CALLBACK_H_
#define POSTTRAIN_HOOKS_CALLBACK_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace posttrain {

// Metrics handed in at the end of an epoch, e.g. {"loss", 0.31}.
using Metrics = std::map<std::string, double>;

// One finished optimizer step.
struct BatchEnd {
  const at::Tensor& inputs;   // the batch as fed to the model
  const at::Tensor& targets;  // class labels, int64 [B]
  // Optional: the model's outputs and the loss of this step, when the loop
  // has them at hand (undefined tensor / NaN otherwise). Callbacks that need
  // logits compute them only when absent.
  at::Tensor logits = {};
  double loss = std::numeric_limits<double>::quiet_NaN();
};

class Callback {
 public:
  virtual ~Callback() = default;

  // A short name for messages ("HistoryRecorder").
  virtual std::string name() const = 0;

  // Once, before the first epoch of this run (also after a resume).
  virtual absl::Status OnTrainBegin() { return absl::OkStatus(); }
  // Before every epoch; `epoch` is the user's epoch number.
  virtual absl::Status OnEpochBegin(int64_t epoch) {
    (void)epoch;
    return absl::OkStatus();
  }
  // After every optimizer step (every batch), following optimizer.step().
  virtual absl::Status OnBatchEnd(const BatchEnd& batch) {
    (void)batch;
    return absl::OkStatus();
  }
  // After the last step of every epoch, with whatever metrics the loop has.
  virtual absl::Status OnEpochEnd(int64_t epoch, const Metrics& metrics) {
    (void)epoch;
    (void)metrics;
    return absl::OkStatus();
  }
  // Once, after the last epoch. Asynchronous work of the callback (pending
  // writes) is complete when it returns.
  virtual absl::Status OnTrainEnd() { return absl::OkStatus(); }
};

// Calls its callbacks in the order added. Every callback sees every event
// even when an earlier one fails; the first failure is returned, prefixed
// with the callback's name. Exceptions become Internal statuses.
class CallbackList : public Callback {
 public:
  CallbackList() = default;
  explicit CallbackList(std::vector<std::shared_ptr<Callback>> callbacks)
      : callbacks_(std::move(callbacks)) {}
  void Add(std::shared_ptr<Callback> callback) {
    callbacks_.push_back(std::move(callback));
  }
  size_t size() const { return callbacks_.size(); }

  std::string name() const override { return "CallbackList"; }
  absl::Status OnTrainBegin() override;
  absl::Status OnEpochBegin(int64_t epoch) override;
  absl::Status OnBatchEnd(const BatchEnd& batch) override;
  absl::Status OnEpochEnd(int64_t epoch, const Metrics& metrics) override;
  absl::Status OnTrainEnd() override;

 private:
  template <typename Fn>
  absl::Status ForEach(const char* event, Fn&& fn);
  std::vector<std::shared_ptr<Callback>> callbacks_;
};

}  // namespace posttrain

#endif  // POSTTRAIN_HOOKS_CALLBACK_H_

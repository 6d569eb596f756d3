// ProgressSink: where the post-training phase (and the one callback, for
// training epochs) reports how far it is. The library never prints; a host
// that wants a progress line adds a sink (hooks/progress_bar.h writes one to
// a terminal or a log).
//
// Stages, in the order a run reports them: "epoch <n>" (training batches of
// epoch n; total = the previous epoch's batches, 0 while unknown), then the
// phase's "mining" (history epochs visited), "slicing" (inputs sliced),
// "tuning" (tuning epochs, over every learning rate) and "evaluation"
// (guard evaluations). A stage may be reported many times; done == total
// marks its end.
//
// Example:
//   class Log : public posttrain::ProgressSink {
//    public:
//     void Update(const posttrain::ProgressUpdate& u) override {
//       if (u.done == u.total) std::fprintf(stderr, "%s done\n",
//                                           u.stage.c_str());
//     }
//   };
//
// Thread safety: Update is called from the thread that runs the phase (the
// training thread), one call at a time.
#ifndef POSTTRAIN_TUNER_PROGRESS_H_
#define POSTTRAIN_TUNER_PROGRESS_H_

#include <cstdint>
#include <string>
#include <utility>

namespace posttrain {

struct ProgressUpdate {
  std::string stage;  // "epoch 3", "mining", "slicing", "tuning", ...
  int64_t done = 0;   // units finished in this stage
  int64_t total = 0;  // units in the stage; 0: unknown
  std::string unit;   // "batches", "epochs", "inputs", ...
};

class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  virtual void Update(const ProgressUpdate& update) = 0;
};

// Calls sink->Update when `sink` is not null.
inline void ReportProgress(ProgressSink* sink, std::string stage, int64_t done,
                           int64_t total, std::string unit) {
  if (sink == nullptr) return;
  ProgressUpdate u;
  u.stage = std::move(stage);
  u.done = done;
  u.total = total;
  u.unit = std::move(unit);
  sink->Update(u);
}

}  // namespace posttrain

#endif  // POSTTRAIN_TUNER_PROGRESS_H_

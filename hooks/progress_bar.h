// ProgressBar: the progress callback. It writes the progress of training
// epochs and of each step of the post-training phase (mining, slicing,
// tuning, evaluation) to a stream (stderr by default):
//  - on a terminal, one line updated in place, with the rate and the ETA;
//  - otherwise (a log file, CI), plain lines: one when a stage starts, one
//    every `interval_seconds` while it runs, and one when it ends.
// Nothing is printed unless a ProgressBar is added; the library never
// prints by itself.
//
// Example:
//   posttrain::ProgressBar bar;  // stderr
//   posttrain::PostTrainCallbackOptions options;
//   options.directory = "runs/my_model/history";
//   options.progress = &bar;
//
// Thread safety: Update from one thread at a time.
#ifndef POSTTRAIN_HOOKS_PROGRESS_BAR_H_
#define POSTTRAIN_HOOKS_PROGRESS_BAR_H_

#include <cstdio>
#include <functional>
#include <optional>
#include <string>

#include "tuner/progress.h"

namespace posttrain {

struct ProgressBarOptions {
  // Where the lines go; null: stderr.
  std::FILE* out = nullptr;
  // Update one line in place (true) or write plain lines (false); unset:
  // whether `out` is a terminal.
  std::optional<bool> terminal;
  // Plain lines: at most one per stage in this many seconds (besides the
  // start and end lines). Terminal: the line is redrawn at most this often
  // (0: every update).
  double interval_seconds = 10.0;
  double redraw_seconds = 0.1;
  // Seconds from any fixed origin; default: a steady clock.
  std::function<double()> clock;
};

class ProgressBar : public ProgressSink {
 public:
  explicit ProgressBar(ProgressBarOptions options = {});
  ~ProgressBar() override;
  void Update(const ProgressUpdate& update) override;

  // The text of an update as the bar shows it ("mining: 3/4 epochs,
  // 1.5 epochs/s, ETA 1s"), for tests and custom sinks.
  std::string Format(const ProgressUpdate& update, double elapsed) const;

 private:
  ProgressBarOptions options_;
  bool terminal_ = false;
  std::string stage_;
  double stage_start_ = 0;
  double last_print_ = -1e300;
  bool open_line_ = false;  // terminal: a line without its newline yet
};

}  // namespace posttrain

#endif  // POSTTRAIN_HOOKS_PROGRESS_BAR_H_

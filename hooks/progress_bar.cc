#include "hooks/progress_bar.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace posttrain {
namespace {

double SteadySeconds() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = std::llround(s);
  if (t < 60) return absl::StrCat(t, "s");
  if (t < 3600) return absl::StrFormat("%dm%02ds", t / 60, t % 60);
  return absl::StrFormat("%dh%02dm", t / 3600, (t / 60) % 60);
}

}  // namespace

ProgressBar::ProgressBar(ProgressBarOptions options)
    : options_(std::move(options)) {
  if (options_.out == nullptr) options_.out = stderr;
  if (!options_.clock) options_.clock = SteadySeconds;
  terminal_ = options_.terminal.has_value() ? *options_.terminal
                                            : isatty(fileno(options_.out)) == 1;
}

ProgressBar::~ProgressBar() {
  if (open_line_) std::fputc('\n', options_.out);
}

std::string ProgressBar::Format(const ProgressUpdate& u, double elapsed) const {
  std::string line = absl::StrCat(u.stage, ": ", u.done);
  if (u.total > 0) absl::StrAppend(&line, "/", u.total);
  if (!u.unit.empty()) absl::StrAppend(&line, " ", u.unit);
  if (u.total > 0 && u.done >= u.total) {
    absl::StrAppend(&line, ", done in ", Duration(elapsed));
    return line;
  }
  if (elapsed > 0 && u.done > 0) {
    const double rate = u.done / elapsed;
    absl::StrAppend(&line, absl::StrFormat(", %.3g %s/s", rate,
                                           u.unit.empty() ? "units" : u.unit));
    if (u.total > 0) {
      absl::StrAppend(&line, ", ETA ", Duration((u.total - u.done) / rate));
    }
  }
  return line;
}

void ProgressBar::Update(const ProgressUpdate& u) {
  const double now = options_.clock();
  const bool new_stage = u.stage != stage_;
  if (new_stage) {
    if (open_line_) {
      std::fputc('\n', options_.out);
      open_line_ = false;
    }
    stage_ = u.stage;
    stage_start_ = now;
    last_print_ = -1e300;
  }
  const bool end = u.total > 0 && u.done >= u.total;
  const double since = now - last_print_;
  const std::string text = Format(u, now - stage_start_);
  if (terminal_) {
    if (!end && !new_stage && since < options_.redraw_seconds) return;
    std::fprintf(options_.out, "\r\033[K%s", text.c_str());
    open_line_ = !end;
    if (end) std::fputc('\n', options_.out);
  } else {
    if (!end && !new_stage && since < options_.interval_seconds) return;
    std::fprintf(options_.out, "%s\n", text.c_str());
  }
  std::fflush(options_.out);
  last_print_ = now;
  if (end) stage_.clear();  // a later update of it starts a new line
}

}  // namespace posttrain

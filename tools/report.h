// The report of a `posttrain improve` run: report.md for a person,
// report.html (self-contained, plain inline SVG charts, no script and no
// network) and report.json (RunReport in protobuf's JSON mapping, for
// machines).
//
// Charts (each an <svg class="chart" data-chart=NAME data-marks=N>, whose N
// marks carry class "mark"):
//   robustness  robust accuracy per attack, ε and protocol, before and after
//               (two bars per figure);
//   fairness    the fairness metrics before and after (two bars per metric);
//   history     the per-epoch metrics of the store (a point per epoch and
//               metric);
//   slices      the share of key synapses per layer and criterion (a bar
//               each);
//   seconds     the time per phase (a bar each).
// A chart without data (no attack run, no fairness data) is left out and
// the page says so.
//
// Plain SVG rather than a JavaScript chart library: five bar and point
// charts need no interaction, the page stays small and renders with
// scripts disabled, and the DOM holds exactly the marks the tests count.
//
// Example:
//   posttrain::pb::RunReport run;
//   run.set_task("dare");
//   std::string html = posttrain::ReportHtml(run);
//   absl::Status s = posttrain::WriteReports(run, "/tmp/run");
//
// Thread safety: free functions.
#ifndef POSTTRAIN_TOOLS_REPORT_H_
#define POSTTRAIN_TOOLS_REPORT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/run.pb.h"

namespace posttrain {

std::string ReportMarkdown(const pb::RunReport& run);
std::string ReportHtml(const pb::RunReport& run);
absl::StatusOr<std::string> ReportJson(const pb::RunReport& run);

// The number of marks each chart of ReportHtml(run) draws (0: left out), in
// the order above, for tests.
struct ChartMarks {
  int robustness = 0, fairness = 0, history = 0, slices = 0, seconds = 0;
};
ChartMarks ExpectedMarks(const pb::RunReport& run);

// Writes report.md, report.html and report.json into `dir` (each through a
// temporary file and a rename).
absl::Status WriteReports(const pb::RunReport& run, const std::string& dir);

// Reads DIR/run.pb. Errors name the file.
absl::StatusOr<pb::RunReport> ReadRunReport(const std::string& dir);

}  // namespace posttrain

#endif  // POSTTRAIN_TOOLS_REPORT_H_

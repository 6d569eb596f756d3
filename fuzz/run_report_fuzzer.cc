// Fuzzes the run record that `posttrain report RUN_DIR` reads (run.pb) and
// the three reports drawn from it: any parsed record renders, and the HTML
// holds exactly the marks ExpectedMarks counts (a NaN, an infinity or a
// missing "before" figure is left out of both).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "tools/report.h"
#include "tools/run.pb.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 is logged
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  posttrain::pb::RunReport run;
  if (!run.ParseFromArray(data, static_cast<int>(size))) return 0;
  const std::string md = posttrain::ReportMarkdown(run);
  const std::string html = posttrain::ReportHtml(run);
  (void)posttrain::ReportJson(run);
  const posttrain::ChartMarks m = posttrain::ExpectedMarks(run);
  const int64_t expected =
      int64_t{m.robustness} + m.fairness + m.history + m.slices + m.seconds;
  int64_t drawn = 0;
  for (size_t at = html.find("class=\"mark\""); at != std::string::npos;
       at = html.find("class=\"mark\"", at + 1)) {
    ++drawn;
  }
  if (drawn != expected) std::abort();
  return 0;
}

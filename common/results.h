// Results: the statistics and tables every benchmark report shares (the
// fairness and the robustness comparisons): mean ± sample standard
// deviation, the paired two-sided Wilcoxon signed-rank test, and Markdown
// tables. No torch.
//
// Wilcoxon, two-sided, as scipy.stats.wilcoxon with zero_method "wilcox"
// (zero differences are dropped) and no continuity correction: the exact
// distribution of the rank sum when at most 50 differences remain and none
// of their absolute values tie, else the normal approximation with the
// tie-corrected variance (scipy 1.10's method="auto" differs in two corner
// cases we do not follow: it switches to the approximation whenever a zero
// difference exists, and in exact mode it truncates a tied statistic).
// Golden values: scripts/golden/wilcoxon.py. With 6 pairs the smallest
// two-sided p is 2 / 2^6 = 0.03125: the fewest pairs for which p < 0.05 is
// possible.
//
// Example:
//   posttrain::MeanStd m = posttrain::Summarize({0.81, 0.83, 0.82});
//   absl::StatusOr<posttrain::WilcoxonResult> w =
//       posttrain::WilcoxonSignedRank({1, 2, 3, 4, 5, 6}, {0, 0, 0, 0, 0, 0});
//   posttrain::MarkdownTable t({"method", "accuracy"});
//   t.AddRow({"fmt", posttrain::FormatMeanStd(m, 3)});
//   std::string markdown = t.ToString();
//
// Thread safety: free functions; a table is used by one thread.
#ifndef POSTTRAIN_COMMON_RESULTS_H_
#define POSTTRAIN_COMMON_RESULTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace posttrain {

struct MeanStd {
  double mean = 0;
  double std = 0;  // sample standard deviation (n − 1); 0 for n = 1
  int n = 0;
};
// Of the finite values (NaNs are skipped and not counted).
MeanStd Summarize(const std::vector<double>& values);
// "0.812 ± 0.004" with `digits` decimals ("n/a" for no values).
std::string FormatMeanStd(const MeanStd& m, int digits);

struct WilcoxonResult {
  int n = 0;             // non-zero differences used
  double statistic = 0;  // min(W+, W−)
  double w_plus = 0;     // rank sum of the positive differences x − y
  double p_value = 1;    // two-sided
  bool exact = false;    // exact distribution (else normal approximation)
};
// Paired test of x against y. Errors: lengths that differ, non-finite
// values. With no non-zero difference, p = 1 and n = 0.
absl::StatusOr<WilcoxonResult> WilcoxonSignedRank(const std::vector<double>& x,
                                                  const std::vector<double>& y);

// A Markdown table: a header row, then rows of cells (padded or cut to the
// header's width).
class MarkdownTable {
 public:
  explicit MarkdownTable(std::vector<std::string> header);
  void AddRow(std::vector<std::string> cells);
  std::string ToString() const;
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace posttrain

#endif  // POSTTRAIN_COMMON_RESULTS_H_

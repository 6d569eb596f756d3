#include "common/results.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace posttrain {

MeanStd Summarize(const std::vector<double>& values) {
  MeanStd m;
  double sum = 0;
  for (double v : values) {
    if (std::isfinite(v)) {
      sum += v;
      ++m.n;
    }
  }
  if (m.n == 0) return m;
  m.mean = sum / m.n;
  if (m.n > 1) {
    double ss = 0;
    for (double v : values) {
      if (std::isfinite(v)) ss += (v - m.mean) * (v - m.mean);
    }
    m.std = std::sqrt(ss / (m.n - 1));
  }
  return m;
}

std::string FormatMeanStd(const MeanStd& m, int digits) {
  if (m.n == 0) return "n/a";
  return absl::StrFormat("%.*f ± %.*f", digits, m.mean, digits, m.std);
}

absl::StatusOr<WilcoxonResult> WilcoxonSignedRank(
    const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Wilcoxon: ", x.size(), " and ", y.size(), " values are not pairs"));
  }
  std::vector<double> d;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("Wilcoxon: pair ", i, " is not finite"));
    }
    if (x[i] != y[i]) d.push_back(x[i] - y[i]);
  }
  WilcoxonResult r;
  r.n = static_cast<int>(d.size());
  if (r.n == 0) return r;
  // Average ranks of |d|.
  std::vector<size_t> order(d.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::fabs(d[a]) < std::fabs(d[b]);
  });
  std::vector<double> rank(d.size());
  bool ties = false;
  double tie_term = 0;  // Σ (t³ − t)
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() &&
           std::fabs(d[order[j + 1]]) == std::fabs(d[order[i]])) {
      ++j;
    }
    const double t = static_cast<double>(j - i + 1);
    if (t > 1) {
      ties = true;
      tie_term += t * t * t - t;
    }
    for (size_t k = i; k <= j; ++k) rank[order[k]] = (i + j) / 2.0 + 1;
    i = j + 1;
  }
  double w_minus = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    (d[i] > 0 ? r.w_plus : w_minus) += rank[i];
  }
  r.statistic = std::min(r.w_plus, w_minus);
  const int n = r.n;
  if (n <= 50 && !ties) {
    // Exact: count the subsets of {1..n} by rank sum.
    const int max_sum = n * (n + 1) / 2;
    std::vector<double> count(max_sum + 1, 0.0);
    count[0] = 1;
    for (int k = 1; k <= n; ++k) {
      for (int s = max_sum; s >= k; --s) count[s] += count[s - k];
    }
    const double total = std::ldexp(1.0, n);
    double below = 0;
    for (int s = 0; s <= static_cast<int>(std::floor(r.statistic)); ++s) {
      below += count[s];
    }
    r.p_value = std::min(1.0, 2.0 * below / total);
    r.exact = true;
    return r;
  }
  const double mean = n * (n + 1) / 4.0;
  const double var = n * (n + 1) * (2.0 * n + 1) / 24.0 - tie_term / 48.0;
  if (!(var > 0)) {
    r.p_value = 1;
    return r;
  }
  const double z = (r.statistic - mean) / std::sqrt(var);
  r.p_value = std::min(1.0, std::erfc(std::fabs(z) / std::sqrt(2.0)));
  return r;
}

MarkdownTable::MarkdownTable(std::vector<std::string> header)
    : header_(std::move(header)) {}

void MarkdownTable::AddRow(std::vector<std::string> cells) {
  cells.resize(header_.size());
  rows_.push_back(std::move(cells));
}

std::string MarkdownTable::ToString() const {
  std::string out = absl::StrCat("| ", absl::StrJoin(header_, " | "), " |\n|");
  for (size_t i = 0; i < header_.size(); ++i) out += "---|";
  out += "\n";
  for (const auto& row : rows_) {
    absl::StrAppend(&out, "| ", absl::StrJoin(row, " | "), " |\n");
  }
  return out;
}

}  // namespace posttrain

// The on-disk cache of the comparison benchmarks (bench/fairness_bench,
// bench/robustness_bench): one small file per finished (case, seed, method)
// holding "key=value ..." on its first line (and free text after), written
// through a temporary file and a rename, so a stopped run resumes where it
// stopped and never reads a torn result. Plus the report cells both
// benchmarks print from it: mean ± std and the paired Wilcoxon p-value
// (common/results.h).
#ifndef POSTTRAIN_BENCH_RESULT_CACHE_H_
#define POSTTRAIN_BENCH_RESULT_CACHE_H_

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/results.h"

namespace posttrain::bench {

// The drivers stop at the first error, naming it.
inline void CheckOk(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    std::exit(1);
  }
}

template <typename T>
T Value(absl::StatusOr<T> s) {
  CheckOk(s.status());
  return *std::move(s);
}

// A report's hand-written Markdown (the --notes file) followed by a blank
// line; "" when `path` is empty.
inline std::string Notes(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream f(path);
  std::stringstream notes;
  notes << f.rdbuf();
  return notes.str() + "\n";
}

// The command line as the report prints it for rerunning: "name" and the
// arguments, each that a POSIX shell would split or expand in single
// quotes (a --flag=value keeps "--flag=" outside them), a quote inside as
// '\''.
inline std::string CommandLine(const char* name, int argc, char** argv) {
  std::string command = name;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.find_first_of(" \t\n'\"\\$`*?[]{}()<>|&;#~!") == std::string::npos) {
      absl::StrAppend(&command, " ", a);
      continue;
    }
    size_t keep = 0;  // "--flag=" stays unquoted
    if (a.rfind("--", 0) == 0) {
      const size_t eq = a.find('=');
      if (eq != std::string::npos && a.find_first_of(" '\"", 0) > eq) {
        keep = eq + 1;
      }
    }
    std::string quoted = "'";
    for (size_t j = keep; j < a.size(); ++j) {
      if (a[j] == '\'') {
        quoted += "'\\''";
      } else {
        quoted += a[j];
      }
    }
    absl::StrAppend(&command, " ", a.substr(0, keep), quoted, "'");
  }
  return command;
}

struct Row {
  std::map<std::string, double> v;
};

class ResultCache {
 public:
  explicit ResultCache(std::string dir) : dir_(std::move(dir)) {}

  // `group` names the case ("adult:sex", "cnn"); ':' becomes '-'.
  std::string Path(const std::string& group, int seed,
                   const std::string& method) const {
    std::string name = group;
    for (char& ch : name) {
      if (ch == ':') ch = '-';
    }
    return absl::StrCat(dir_, "/", name, "/seed", seed, "/", method, ".txt");
  }

  // The row, or nothing when absent or torn (it lacks `required`).
  std::optional<Row> Load(const std::string& group, int seed,
                          const std::string& method,
                          const std::string& required) const {
    std::ifstream f(Path(group, seed, method));
    std::string line;
    if (!f || !std::getline(f, line)) return std::nullopt;
    Row r;
    for (absl::string_view kv : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      std::vector<std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
      double d;
      if (p.size() == 2 && absl::SimpleAtod(p[1], &d)) r.v[p[0]] = d;
    }
    if (!r.v.count(required)) return std::nullopt;
    return r;
  }

  // The free text after the first line ("" when absent).
  std::string Extra(const std::string& group, int seed,
                    const std::string& method) const {
    std::ifstream f(Path(group, seed, method));
    std::string line, out;
    std::getline(f, line);
    while (std::getline(f, line)) absl::StrAppend(&out, line);
    return out;
  }

  void Store(const std::string& group, int seed, const std::string& method,
             const Row& r, const std::string& extra) const {
    const std::string path = Path(group, seed, method);
    std::filesystem::create_directories(
        std::filesystem::path(path).parent_path());
    std::string line;
    for (const auto& [k, v] : r.v) {
      absl::StrAppend(&line, k, "=", absl::StrFormat("%.9g", v), " ");
    }
    const std::string tmp = path + ".tmp";
    {
      std::ofstream f(tmp);
      f << line << "\n" << extra << "\n";
    }
    std::filesystem::rename(tmp, path);
  }

  // One value per seed 1..seeds (NaN where missing).
  std::vector<double> Column(const std::string& group,
                             const std::string& method, const std::string& key,
                             int seeds, const std::string& required) const {
    std::vector<double> out;
    for (int s = 1; s <= seeds; ++s) {
      std::optional<Row> r = Load(group, s, method, required);
      out.push_back(r && r->v.count(key) ? r->v.at(key) : std::nan(""));
    }
    return out;
  }

 private:
  std::string dir_;
};

inline std::string Cell(const std::vector<double>& v, int digits) {
  return FormatMeanStd(Summarize(v), digits);
}

// "p 0.002": the paired two-sided Wilcoxon test over the seeds where both
// are finite; "" with fewer than 2 pairs.
inline std::string PValue(const std::vector<double>& x,
                          const std::vector<double>& y) {
  std::vector<double> a, b;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    if (std::isfinite(x[i]) && std::isfinite(y[i])) {
      a.push_back(x[i]);
      b.push_back(y[i]);
    }
  }
  if (a.size() < 2) return "";
  absl::StatusOr<WilcoxonResult> w = WilcoxonSignedRank(a, b);
  if (!w.ok()) return "";
  return absl::StrFormat("p %.3f", w->p_value);
}

// Seeds where x beats y ("lower" or higher), of those where both exist.
inline std::string Wins(const std::vector<double>& x,
                        const std::vector<double>& y, bool lower_is_better) {
  int wins = 0, n = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) continue;
    ++n;
    if (lower_is_better ? x[i] < y[i] : x[i] > y[i]) ++wins;
  }
  return absl::StrCat(wins, "/", n);
}

}  // namespace posttrain::bench

#endif  // POSTTRAIN_BENCH_RESULT_CACHE_H_

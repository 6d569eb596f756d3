// Small helpers shared by the benchmark drivers: timing, medians, memory.
#ifndef POSTTRAIN_BENCH_BENCH_UTIL_H_
#define POSTTRAIN_BENCH_BENCH_UTIL_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace posttrain::bench {

inline double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since)
      .count();
}

inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// A field of /proc/self/status in KiB ("VmRSS", "VmHWM"); -1 if unknown.
inline int64_t ProcStatusKiB(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string key;
  while (f >> key) {
    if (key == field + ":") {
      int64_t kib;
      f >> kib;
      return kib;
    }
    f.ignore(1 << 20, '\n');
  }
  return -1;
}

// Resets the peak resident set size (VmHWM) to the current RSS (Linux).
inline bool ResetPeakRss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  return static_cast<bool>(f);
}

}  // namespace posttrain::bench

#endif  // POSTTRAIN_BENCH_BENCH_UTIL_H_

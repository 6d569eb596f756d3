// Retention policies of a history store: which epochs stay readable as new
// ones arrive. Dare (ALGORITHMS.md §3) reads the latest ceil(t/2) epochs, so
// KeepLatestHalf() is the smallest policy that serves it.
//
// Example:
//   HistoryOptions options;
//   options.retention = RetentionPolicy::KeepLast(5);
//
// Thread safety: value types.
#ifndef POSTTRAIN_HISTORY_RETENTION_H_
#define POSTTRAIN_HISTORY_RETENTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "history/format.pb.h"

namespace posttrain {

class RetentionPolicy {
 public:
  // Every epoch stays (the default).
  static RetentionPolicy KeepAll();
  // The `n` most recent epochs. REQUIRES: n >= 1.
  static RetentionPolicy KeepLast(int64_t n);
  // The latest ceil(t/2) of the t epochs appended so far.
  static RetentionPolicy KeepLatestHalf();
  // Epochs whose number is a multiple of `k`, plus the `n` most recent.
  // REQUIRES: k >= 1, n >= 0.
  static RetentionPolicy EveryKthPlusLast(int64_t k, int64_t n);
  // From its stored form; InvalidArgument when the parameters are invalid.
  static absl::StatusOr<RetentionPolicy> FromProto(const pb::Retention& p);

  const pb::Retention& proto() const { return proto_; }
  std::string ToString() const;

  // Given the ascending epoch numbers that are visible now (the newest one
  // just appended) and t, the number of epochs ever appended, returns
  // keep[i] for each. The newest epoch is always kept.
  std::vector<bool> Select(const std::vector<int64_t>& epochs,
                           int64_t appended) const;

 private:
  explicit RetentionPolicy(pb::Retention p) : proto_(std::move(p)) {}
  pb::Retention proto_;
};

}  // namespace posttrain

#endif  // POSTTRAIN_HISTORY_RETENTION_H_

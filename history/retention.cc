#include "history/retention.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace posttrain {
namespace {
pb::Retention Make(pb::Retention::Kind kind, int64_t n, int64_t k) {
  pb::Retention p;
  p.set_kind(kind);
  p.set_n(n);
  p.set_k(k);
  return p;
}
}  // namespace

RetentionPolicy RetentionPolicy::KeepAll() {
  return RetentionPolicy(Make(pb::Retention::KEEP_ALL, 0, 0));
}
RetentionPolicy RetentionPolicy::KeepLast(int64_t n) {
  return RetentionPolicy(
      Make(pb::Retention::KEEP_LAST, std::max<int64_t>(n, 1), 0));
}
RetentionPolicy RetentionPolicy::KeepLatestHalf() {
  return RetentionPolicy(Make(pb::Retention::KEEP_LATEST_HALF, 0, 0));
}
RetentionPolicy RetentionPolicy::EveryKthPlusLast(int64_t k, int64_t n) {
  return RetentionPolicy(Make(pb::Retention::EVERY_KTH_PLUS_LAST,
                              std::max<int64_t>(n, 0),
                              std::max<int64_t>(k, 1)));
}

absl::StatusOr<RetentionPolicy> RetentionPolicy::FromProto(
    const pb::Retention& p) {
  switch (p.kind()) {
    case pb::Retention::KEEP_ALL:
    case pb::Retention::KEEP_LATEST_HALF:
      return RetentionPolicy(p);
    case pb::Retention::KEEP_LAST:
      if (p.n() < 1) {
        return absl::InvalidArgumentError("retention keep_last needs n >= 1");
      }
      return RetentionPolicy(p);
    case pb::Retention::EVERY_KTH_PLUS_LAST:
      if (p.k() < 1 || p.n() < 0) {
        return absl::InvalidArgumentError(
            "retention every_kth_plus_last needs k >= 1 and n >= 0");
      }
      return RetentionPolicy(p);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown retention kind ", static_cast<int>(p.kind())));
  }
}

std::string RetentionPolicy::ToString() const {
  switch (proto_.kind()) {
    case pb::Retention::KEEP_ALL:
      return "keep_all";
    case pb::Retention::KEEP_LAST:
      return absl::StrCat("keep_last(", proto_.n(), ")");
    case pb::Retention::KEEP_LATEST_HALF:
      return "keep_latest_half";
    case pb::Retention::EVERY_KTH_PLUS_LAST:
      return absl::StrCat("every_kth_plus_last(k=", proto_.k(),
                          ", n=", proto_.n(), ")");
    default:
      return "unknown";
  }
}

std::vector<bool> RetentionPolicy::Select(const std::vector<int64_t>& epochs,
                                          int64_t appended) const {
  const int64_t size = static_cast<int64_t>(epochs.size());
  std::vector<bool> keep(epochs.size(), true);
  int64_t last_n = size;
  switch (proto_.kind()) {
    case pb::Retention::KEEP_LAST:
      last_n = proto_.n();
      break;
    case pb::Retention::KEEP_LATEST_HALF:
      last_n = (appended + 1) / 2;
      break;
    case pb::Retention::EVERY_KTH_PLUS_LAST:
      last_n = proto_.n();
      break;
    default:
      return keep;
  }
  for (int64_t i = 0; i < size; ++i) {
    const bool recent = i >= size - std::max<int64_t>(last_n, 1);
    const bool kth = proto_.kind() == pb::Retention::EVERY_KTH_PLUS_LAST &&
                     epochs[i] % proto_.k() == 0;
    keep[i] = recent || kth;
  }
  return keep;
}

}  // namespace posttrain

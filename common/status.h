// Status helpers shared by every component.
//
// Debian's Abseil (20220623) has no ABSL_RETURN_IF_ERROR / ASSIGN_OR_RETURN,
// so the project defines its own two macros here.
//
// Example:
//   auto parse_count = [](absl::string_view s) -> absl::StatusOr<int> {
//     if (s.empty()) return absl::InvalidArgumentError("empty count");
//     return static_cast<int>(s.size());
//   };
//   auto use = [&]() -> absl::Status {
//     PT_ASSIGN_OR_RETURN(int n, parse_count("3"));
//     PT_RETURN_IF_ERROR(n > 0 ? absl::OkStatus()
//                              : absl::OutOfRangeError("no count"));
//     return absl::OkStatus();
//   };
#ifndef POSTTRAIN_COMMON_STATUS_H_
#define POSTTRAIN_COMMON_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PT_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::absl::Status _pt_status = (expr);      \
    if (!_pt_status.ok()) return _pt_status; \
  } while (0)

#define PT_STATUS_CONCAT_INNER_(a, b) a##b
#define PT_STATUS_CONCAT_(a, b) PT_STATUS_CONCAT_INNER_(a, b)

#define PT_ASSIGN_OR_RETURN(lhs, rexpr)                                      \
  PT_ASSIGN_OR_RETURN_IMPL_(PT_STATUS_CONCAT_(_pt_statusor_, __LINE__), lhs, \
                            rexpr)

#define PT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)    \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace posttrain {

// Returns `status` with `context` prepended to its message ("context: msg").
// An OK status is returned unchanged.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace posttrain

#endif  // POSTTRAIN_COMMON_STATUS_H_

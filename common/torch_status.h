// The one place that turns exceptions thrown by LibTorch into absl::Status.
//
// Torch ops and module forwards may throw c10::Error; components call them
// through CallTorch at their entry points, not op by op.
//
// Example:
//   absl::Status s = posttrain::CallTorch("forward of layer 3", [&] {
//     out = model->forward(x);
//   });
#ifndef POSTTRAIN_COMMON_TORCH_STATUS_H_
#define POSTTRAIN_COMMON_TORCH_STATUS_H_

#include <exception>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace posttrain {

// Converts the exception currently being handled into a status whose message
// starts with `context`. c10::Error loses its C++ backtrace (kept short).
// REQUIRES: called inside a catch block.
absl::Status StatusFromCurrentException(absl::string_view context);

// Runs fn(); returns OK, or the status of whatever fn threw.
template <typename Fn>
absl::Status CallTorch(absl::string_view context, Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
    return absl::OkStatus();
  } catch (...) {
    return StatusFromCurrentException(context);
  }
}

}  // namespace posttrain

#endif  // POSTTRAIN_COMMON_TORCH_STATUS_H_

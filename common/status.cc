#include "common/status.h"

#include <c10/util/Exception.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/torch_status.h"

namespace posttrain {

absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      absl::StrCat(context, ": ", status.message()));
}

absl::Status StatusFromCurrentException(absl::string_view context) {
  try {
    throw;
  } catch (const c10::Error& e) {
    // what_without_backtrace() keeps the message but drops the C++ stack.
    std::string msg = e.what_without_backtrace();
    absl::StatusCode code = absl::StatusCode::kInvalidArgument;
    return absl::Status(code, absl::StrCat(context, ": torch error: ", msg));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(context, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(context, ": ", e.what()));
  } catch (...) {
    return absl::UnknownError(absl::StrCat(context, ": unknown exception"));
  }
}

}  // namespace posttrain

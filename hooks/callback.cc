#include "hooks/callback.h"

#include "absl/strings/str_cat.h"
#include "common/torch_status.h"

namespace posttrain {

template <typename Fn>
absl::Status CallbackList::ForEach(const char* event, Fn&& fn) {
  absl::Status first;
  for (const auto& cb : callbacks_) {
    absl::Status s;
    absl::Status thrown =
        CallTorch(absl::StrCat(cb->name(), ".", event), [&] { s = fn(*cb); });
    if (!thrown.ok()) {  // already names the callback and event
      if (first.ok()) first = thrown;
      continue;
    }
    if (!s.ok() && first.ok()) {
      first = absl::Status(
          s.code(), absl::StrCat(cb->name(), ".", event, ": ", s.message()));
    }
  }
  return first;
}

absl::Status CallbackList::OnTrainBegin() {
  return ForEach("OnTrainBegin", [](Callback& c) { return c.OnTrainBegin(); });
}
absl::Status CallbackList::OnEpochBegin(int64_t epoch) {
  return ForEach("OnEpochBegin",
                 [&](Callback& c) { return c.OnEpochBegin(epoch); });
}
absl::Status CallbackList::OnBatchEnd(const BatchEnd& batch) {
  return ForEach("OnBatchEnd",
                 [&](Callback& c) { return c.OnBatchEnd(batch); });
}
absl::Status CallbackList::OnEpochEnd(int64_t epoch, const Metrics& metrics) {
  return ForEach("OnEpochEnd",
                 [&](Callback& c) { return c.OnEpochEnd(epoch, metrics); });
}
absl::Status CallbackList::OnTrainEnd() {
  return ForEach("OnTrainEnd", [](Callback& c) { return c.OnTrainEnd(); });
}

}  // namespace posttrain

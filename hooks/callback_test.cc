#include "hooks/callback.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/match.h"

namespace posttrain {
namespace {

class Recording : public Callback {
 public:
  Recording(std::string name, std::vector<std::string>* log, bool fail = false,
            bool throws = false)
      : name_(std::move(name)), log_(log), fail_(fail), throws_(throws) {}
  std::string name() const override { return name_; }
  absl::Status OnTrainBegin() override { return Event("begin"); }
  absl::Status OnEpochEnd(int64_t epoch, const Metrics&) override {
    return Event("epoch" + std::to_string(epoch));
  }

 private:
  absl::Status Event(const std::string& what) {
    log_->push_back(name_ + ":" + what);
    if (throws_) throw std::runtime_error("boom");
    if (fail_) return absl::UnavailableError("disk gone");
    return absl::OkStatus();
  }
  std::string name_;
  std::vector<std::string>* log_;
  bool fail_, throws_;
};

TEST(CallbackList, CallsInOrderAndEveryoneSeesEveryEvent) {
  std::vector<std::string> log;
  CallbackList list;
  list.Add(std::make_shared<Recording>("a", &log));
  list.Add(std::make_shared<Recording>("b", &log, /*fail=*/true));
  list.Add(std::make_shared<Recording>("c", &log, false, /*throws=*/true));
  list.Add(std::make_shared<Recording>("d", &log));
  absl::Status s = list.OnEpochEnd(3, {});
  EXPECT_EQ(log, (std::vector<std::string>{"a:epoch3", "b:epoch3", "c:epoch3",
                                           "d:epoch3"}));
  // The first failure, named; the exception did not escape.
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(s.message(), "b.OnEpochEnd")) << s;
  log.clear();
  CallbackList throwing;
  throwing.Add(std::make_shared<Recording>("c", &log, false, true));
  s = throwing.OnTrainBegin();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(s.message(), "c.OnTrainBegin")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "boom")) << s;
}

TEST(CallbackList, DefaultsAreNoOps) {
  struct Nothing : Callback {
    std::string name() const override { return "nothing"; }
  };
  CallbackList list({std::make_shared<Nothing>()});
  at::Tensor x, y;
  EXPECT_TRUE(list.OnTrainBegin().ok());
  EXPECT_TRUE(list.OnEpochBegin(0).ok());
  EXPECT_TRUE(list.OnBatchEnd({x, y}).ok());
  EXPECT_TRUE(list.OnEpochEnd(0, {{"loss", 1}}).ok());
  EXPECT_TRUE(list.OnTrainEnd().ok());
}

}  // namespace
}  // namespace posttrain

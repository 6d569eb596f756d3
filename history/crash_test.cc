// Crash safety: a child process appends epochs to a store and is SIGKILLed
// at random moments; after every kill the store must open, verify, and
// return every committed epoch bit for bit.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "history/store.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

constexpr int kKills = 30;  // and 20 more at chosen phases (below)

// Starts the writer; returns its pid and the last epoch it found, once the
// store is open. With a phase, also waits until the writer paused there and
// sets *appended to the last epoch whose append had returned.
pid_t StartWriter(const std::string& dir, int64_t* last_epoch,
                  const std::string& phase = "", int n = 0,
                  int64_t* appended = nullptr) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const std::string count = std::to_string(n);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    if (phase.empty()) {
      execl(POSTTRAIN_CRASH_WRITER, POSTTRAIN_CRASH_WRITER, dir.c_str(),
            static_cast<char*>(nullptr));
    } else {
      execl(POSTTRAIN_CRASH_WRITER, POSTTRAIN_CRASH_WRITER, dir.c_str(),
            phase.c_str(), count.c_str(), static_cast<char*>(nullptr));
    }
    _exit(127);
  }
  close(fds[1]);
  FILE* out = fdopen(fds[0], "r");
  long long last = -2;
  EXPECT_EQ(fscanf(out, "ready %lld", &last), 1);
  if (appended != nullptr) {
    long long a = -2;
    EXPECT_EQ(fscanf(out, " paused %lld", &a), 1) << phase << " " << n;
    *appended = a;
  }
  fclose(out);
  *last_epoch = last;
  return pid;
}

// The store after a kill: opens, verifies, every epoch bit for bit,
// retention held, and at least `committed` is there (exactly `exact`, when
// given).
void CheckAfterKill(const std::string& dir, int64_t committed,
                    const std::string& what, int64_t exact = -2) {
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok()) << what << ": " << store.status();
  ASSERT_TRUE((*store)->Verify().ok()) << what;
  const auto epochs = (*store)->Epochs();
  for (const auto& e : epochs) {
    auto state = (*store)->ReadEpoch(e.epoch());
    ASSERT_TRUE(state.ok()) << what << ": " << state.status();
    ASSERT_EQ(
        testing::DiffStates(*state, testing::SyntheticState(e.epoch(), 4)), "")
        << what << " epoch " << e.epoch();
  }
  EXPECT_GE((*store)->last_epoch(), committed) << what;
  if (exact != -2) EXPECT_EQ((*store)->last_epoch(), exact) << what;
  EXPECT_LE(epochs.size(), 6u) << what;
}

// Kills placed by the writer's pausing Env: 5 in each phase of an append
// (blob write, manifest commit, retention drop, the post-trainer's store),
// at seeded call counts.
TEST(HistoryCrash, SigkillInEveryPhaseLosesNoCommittedEpoch) {
  std::mt19937 rng(20261202);
  std::uniform_int_distribution<int> nth(1, 12);
  for (const char* phase : {"blob", "manifest", "drop", "posttrain"}) {
    const std::string dir = testing::MakeTempDir(std::string("phase_") + phase);
    for (int i = 0; i < 5; ++i) {
      const int n = nth(rng);
      int64_t found_last = -2, appended = -2;
      pid_t pid = StartWriter(dir, &found_last, phase, n, &appended);
      ASSERT_GT(pid, 0);
      ASSERT_EQ(kill(pid, SIGKILL), 0);
      int wstatus = 0;
      ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
      ASSERT_TRUE(WIFSIGNALED(wstatus)) << phase << " " << n;
      // SIGKILL keeps the page cache, so where it stopped is exact: after
      // the MANIFEST rename (the directory sync, an even call of
      // "manifest") or at a drop (after the commit), the epoch being
      // appended is in; before the rename, it is not.
      const bool in = (std::string(phase) == "manifest" && n % 2 == 0) ||
                      std::string(phase) == "drop";
      CheckAfterKill(dir, appended,
                     absl::StrCat(phase, " kill ", i, " (call ", n, ")"),
                     appended + (in ? 1 : 0));
    }
  }
}

TEST(HistoryCrash, SigkillAtRandomPointsLosesNoCommittedEpoch) {
  const std::string dir = testing::MakeTempDir("crash");
  std::mt19937 rng(20261126);
  // Kill after 0 to 60 ms of writing: each epoch takes a few ms (three
  // fsyncs), so kills land in every phase of an append.
  std::uniform_int_distribution<int> delay_us(0, 60000);
  int64_t previous_last = -1;
  int progressed = 0;
  for (int kill_no = 0; kill_no < kKills; ++kill_no) {
    int64_t found_last = -2;
    pid_t pid = StartWriter(dir, &found_last);
    ASSERT_GT(pid, 0);
    // The writer found at least what the last check saw committed.
    EXPECT_GE(found_last, previous_last) << "kill " << kill_no;
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(wstatus))
        << "writer exited early, kill " << kill_no;

    auto store = HistoryStore::OpenReadOnly(dir);
    ASSERT_TRUE(store.ok()) << "kill " << kill_no << ": " << store.status();
    ASSERT_TRUE((*store)->Verify().ok()) << "kill " << kill_no;
    const auto epochs = (*store)->Epochs();
    for (const auto& e : epochs) {
      auto state = (*store)->ReadEpoch(e.epoch());
      ASSERT_TRUE(state.ok()) << state.status();
      ASSERT_EQ(
          testing::DiffStates(*state, testing::SyntheticState(e.epoch(), 4)),
          "")
          << "kill " << kill_no << " epoch " << e.epoch();
      EXPECT_EQ(e.step(), e.epoch() * 10);
    }
    const int64_t last = (*store)->last_epoch();
    EXPECT_GE(last, found_last);
    if (last > previous_last) ++progressed;
    // Retention (keep last 6) held through the crashes.
    EXPECT_LE(epochs.size(), 6u);
    if (!epochs.empty()) {
      EXPECT_EQ(epochs.back().epoch(), last);
    }
    previous_last = last;
  }
  // Most kills came after some progress, so they hit real appends.
  EXPECT_GE(progressed, kKills / 2);
  EXPECT_GE(previous_last, 20);

  // A writer that opens the store afterwards removes every leftover: no
  // temporary file and no blob the manifest does not list.
  auto reader = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(reader.ok());
  const pb::ModelSpec spec = (*reader)->model_spec();
  reader->reset();
  HistoryOptions options;
  options.retention = RetentionPolicy::KeepLast(6);
  auto writer = HistoryStore::Open(dir, options, spec);
  ASSERT_TRUE(writer.ok()) << writer.status();
  const pb::Manifest m = (*writer)->manifest();
  auto children = Env::Default()->GetChildren(dir);
  ASSERT_TRUE(children.ok());
  for (const auto& c : *children) {
    EXPECT_FALSE(absl::EndsWith(c, ".tmp")) << c;
    if (absl::EndsWith(c, ".blob")) {
      EXPECT_TRUE(
          std::any_of(m.epochs().begin(), m.epochs().end(),
                      [&](const auto& e) { return e.blob_file() == c; }))
          << "orphan " << c;
    }
  }
  EXPECT_TRUE((*writer)->Verify().ok());
}

}  // namespace
}  // namespace posttrain

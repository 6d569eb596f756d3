// FaultInjectionEnv: an Env that forwards to another Env and fails on demand.
// For tests of the history store's error paths: a full disk, short writes, a
// failing fsync, a failure between writing a file and renaming it.
//
// Example:
//   FaultInjectionEnv env(Env::Default());
//   env.SetWriteBudget(4096);        // the disk fills after 4 KiB more
//   EXPECT_EQ(store->Append(meta, state).code(),
//             absl::StatusCode::kResourceExhausted);
//   env.ClearFaults();
//
// Thread safety: safe for concurrent use.
#ifndef POSTTRAIN_HISTORY_FAULT_INJECTION_ENV_H_
#define POSTTRAIN_HISTORY_FAULT_INJECTION_ENV_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "history/env.h"

namespace posttrain {

class FaultInjectionEnv : public Env {
 public:
  // `base` must outlive this object.
  explicit FaultInjectionEnv(Env* base) : base_(base) {}

  // After `bytes` more bytes have been appended to any file, writes fail with
  // ResourceExhausted ("no space left"); the write that crosses the limit
  // stores the part that fits. Negative: unlimited. With `path_contains`
  // only files whose path contains it count and fail.
  void SetWriteBudget(int64_t bytes, const std::string& path_contains = "");
  // Every Append stores only half its data and fails with DataLoss.
  void SetShortWrites(bool on);
  // Sync fails with Internal.
  void SetFailSync(bool on);
  // RenameFile fails with Internal (after the file was written and synced).
  void SetFailRename(bool on);
  // RemoveFile fails with Internal.
  void SetFailRemove(bool on);
  // StartThread fails with ResourceExhausted.
  void SetFailThreadStart(bool on) { fail_thread_start_ = on; }
  // Back to no faults.
  void ClearFaults();

  // Counts of calls seen, for assertions.
  int64_t renames() const { return renames_.load(); }
  int64_t syncs() const { return syncs_.load(); }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path,
                                       uint64_t max_size) override {
    return base_->ReadFile(path, max_size);
  }
  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
    return base_->GetFileSize(path);
  }
  bool FileExists(const std::string& path) override {
    return base_->FileExists(path);
  }
  absl::Status RenameFile(const std::string& from,
                          const std::string& to) override;
  absl::Status RemoveFile(const std::string& path) override;
  absl::StatusOr<std::vector<std::string>> GetChildren(
      const std::string& dir) override {
    return base_->GetChildren(dir);
  }
  absl::Status CreateDirs(const std::string& dir) override {
    return base_->CreateDirs(dir);
  }
  absl::Status SyncDir(const std::string& dir) override;
  absl::StatusOr<std::unique_ptr<FileLock>> LockFile(
      const std::string& path) override {
    return base_->LockFile(path);
  }
  absl::StatusOr<std::thread> StartThread(std::function<void()> fn) override {
    if (fail_thread_start_) {
      return absl::ResourceExhaustedError(
          "cannot start a thread: injected fault");
    }
    return base_->StartThread(std::move(fn));
  }

 private:
  class File;
  friend class File;

  // Returns how many of `n` bytes may be written now, and whether the write
  // must then fail.
  absl::Status Admit(const std::string& path, size_t n, size_t* allowed);

  Env* const base_;
  std::mutex mu_;
  int64_t write_budget_ = -1;
  std::string budget_filter_;
  bool short_writes_ = false;
  std::atomic<bool> fail_sync_{false};
  std::atomic<bool> fail_rename_{false};
  std::atomic<bool> fail_remove_{false};
  std::atomic<bool> fail_thread_start_{false};
  std::atomic<int64_t> renames_{0};
  std::atomic<int64_t> syncs_{0};
};

}  // namespace posttrain

#endif  // POSTTRAIN_HISTORY_FAULT_INJECTION_ENV_H_

// FaultInjectionEnv: an Env that forwards to another Env and fails on demand.
// For tests of the history store's error paths: a full disk, short writes, a
// failing fsync, a failure between writing a file and renaming it, and a
// power cut that loses whatever was not synced.
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
#include <map>
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
  // Back to no faults (durability tracking and power state are kept).
  void ClearFaults();

  // ---- Power loss, as leveldb's FaultInjectionTestEnv. SIGKILL keeps the
  // page cache, so it never tests a missing fsync; this does. While
  // tracking, the env records what a power cut would keep: each file
  // written through it up to its last Sync only, and each directory change
  // (a file created, renamed over another, or removed) only once that
  // directory was synced.
  void TrackDurability();
  // After `ops` more mutating calls (NewWritableFile, Append, Sync,
  // RenameFile, RemoveFile, SyncDir) the power is off: that call and every
  // later one fail with Unavailable and change nothing, as if the machine
  // had stopped there. Negative: never.
  void SetPowerOffAfter(int64_t ops);
  // Mutating calls seen since tracking started, and the path or directory
  // of the call the power went off at ("" while on).
  int64_t mutating_ops() const;
  std::string power_off_at() const;
  // The call after `ops` more mutating calls fails once with Internal
  // ("injected I/O error") and changes nothing; later calls work.
  void SetFailOnce(int64_t ops);
  // "op path" of every mutating call since tracking started, in order.
  std::vector<std::string> op_log() const;
  // The power cut: every tracked file is cut to its synced length, then the
  // unsynced directory changes are undone, newest first (a created file
  // vanishes, a rename is reverted and the file it replaced comes back, a
  // removed file comes back). seed 0 undoes all of them (leveldb's model);
  // another seed lets each survive with probability 1/2, as a file system
  // that reorders metadata may (per name, only the oldest changes survive:
  // a change to a name an undone change touched is undone too). Then the
  // power is on again and tracking starts afresh.
  // Call with no file of this env open.
  absl::Status SimulatePowerLoss(uint64_t seed = 0);

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
  // Counts a mutating call on `path`; Unavailable once the power is off.
  absl::Status PowerCheck(const char* op, const std::string& path);
  // A file's durable bytes (all of an untracked file). REQUIRES: mu_ held.
  absl::StatusOr<std::string> DurableContent(const std::string& path);
  void FileSynced(const std::string& path, uint64_t size);

  // An unsynced directory change.
  struct DirChange {
    enum Kind { kCreate, kRename, kRemove } kind;
    std::string path;         // created / removed / renamed to
    std::string from;         // kRename
    bool replaced = false;    // kRename over an existing file
    std::string old_content;  // kRename: the replaced file; kRemove: the file
    bool from_tracked = false;
    uint64_t from_synced = 0;
  };

  Env* const base_;
  mutable std::mutex mu_;
  int64_t write_budget_ = -1;
  std::string budget_filter_;
  bool short_writes_ = false;
  std::atomic<bool> fail_sync_{false};
  std::atomic<bool> fail_rename_{false};
  std::atomic<bool> fail_remove_{false};
  std::atomic<bool> fail_thread_start_{false};
  std::atomic<int64_t> renames_{0};
  std::atomic<int64_t> syncs_{0};
  // Power loss (guarded by mu_).
  bool tracking_ = false;
  int64_t power_off_after_ = -1;
  int64_t ops_ = 0;
  int64_t fail_once_at_ = -1;
  std::vector<std::string> log_;
  bool off_ = false;
  std::string off_at_;
  std::map<std::string, uint64_t> synced_;  // tracked file -> durable bytes
  std::vector<DirChange> pending_;
};

}  // namespace posttrain

#endif  // POSTTRAIN_HISTORY_FAULT_INJECTION_ENV_H_

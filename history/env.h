// Env: the small filesystem interface the history store talks to.
//
// The store never calls the OS directly; tests wrap the default Env in a
// FaultInjectionEnv (history/fault_injection_env.h) to exercise disk-full,
// short-write and failed-rename paths without a real full disk.
//
// Example:
//   Env* env = Env::Default();
//   PT_ASSIGN_OR_RETURN(auto file, env->NewWritableFile("/tmp/x.tmp"));
//   PT_RETURN_IF_ERROR(file->Append("bytes"));
//   PT_RETURN_IF_ERROR(file->Sync());
//   PT_RETURN_IF_ERROR(file->Close());
//   PT_RETURN_IF_ERROR(env->RenameFile("/tmp/x.tmp", "/tmp/x"));
//   PT_RETURN_IF_ERROR(env->SyncDir("/tmp"));
//
// Errors: ENOSPC maps to ResourceExhausted, a missing file to NotFound; every
// message names the path.
#ifndef POSTTRAIN_HISTORY_ENV_H_
#define POSTTRAIN_HISTORY_ENV_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace posttrain {

// A file opened for writing. Not thread-safe: one user at a time.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Appends all of `data`, or returns an error (after which the file content
  // is unspecified).
  virtual absl::Status Append(absl::string_view data) = 0;
  // Makes the data durable (fsync).
  virtual absl::Status Sync() = 0;
  // Closes the file; further calls are invalid. Called by the destructor if
  // the user did not.
  virtual absl::Status Close() = 0;
};

// An exclusive, advisory lock on a file, released when destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

// Thread safety: implementations are safe for concurrent use.
class Env {
 public:
  virtual ~Env() = default;

  // The process-wide POSIX Env. Never deleted.
  static Env* Default();

  // Creates or truncates `path`.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) = 0;
  // Reads all of `path`. Fails with DataLoss, before allocating, when the
  // file is larger than `max_size`.
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path,
                                               uint64_t max_size) = 0;
  virtual absl::StatusOr<uint64_t> GetFileSize(const std::string& path) = 0;
  virtual bool FileExists(const std::string& path) = 0;
  // Atomically replaces `to` by `from` (rename(2)).
  virtual absl::Status RenameFile(const std::string& from,
                                  const std::string& to) = 0;
  virtual absl::Status RemoveFile(const std::string& path) = 0;
  // Names (not paths) of the entries of `dir`, without "." and "..".
  virtual absl::StatusOr<std::vector<std::string>> GetChildren(
      const std::string& dir) = 0;
  // Creates `dir` and missing parents; OK if it exists.
  virtual absl::Status CreateDirs(const std::string& dir) = 0;
  // fsyncs the directory, making renames and removals in it durable.
  virtual absl::Status SyncDir(const std::string& dir) = 0;
  // Takes an exclusive lock on `path` (created if missing). Fails with
  // FailedPrecondition when another process or object holds it.
  virtual absl::StatusOr<std::unique_ptr<FileLock>> LockFile(
      const std::string& path) = 0;
  // Starts `fn` on a new thread (as leveldb's Env::StartThread); the caller
  // joins it. ResourceExhausted when the system cannot start one.
  virtual absl::StatusOr<std::thread> StartThread(std::function<void()> fn);
};

// Joins a directory and a file name with one '/'.
std::string JoinPath(absl::string_view dir, absl::string_view name);

// Writes the concatenation of `parts` to `path` through `path`.tmp: append,
// fsync (when `sync_file`), close, rename; then fsyncs the directory (when
// `sync_dir`). Readers see the old file or the new one, never a torn one. On
// failure the temporary file is removed and `path` is untouched.
absl::Status WriteFileAtomically(Env* env, const std::string& path,
                                 std::initializer_list<absl::string_view> parts,
                                 bool sync_file, bool sync_dir);

}  // namespace posttrain

#endif  // POSTTRAIN_HISTORY_ENV_H_

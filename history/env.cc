#include "history/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace posttrain {
namespace {

absl::Status PosixError(absl::string_view op, const std::string& path,
                        int err) {
  std::string msg = absl::StrCat(op, " '", path, "': ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    default:
      return absl::InternalError(msg);
  }
}

class PosixWritableFile : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd)
      : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) Close().IgnoreError();
  }

  absl::Status Append(absl::string_view data) override {
    const char* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return PosixError("write", path_, errno);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    if (::fdatasync(fd_) != 0) return PosixError("fsync", path_, errno);
    return absl::OkStatus();
  }

  absl::Status Close() override {
    if (fd_ < 0) return absl::OkStatus();
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return PosixError("close", path_, errno);
    return absl::OkStatus();
  }

 private:
  std::string path_;
  int fd_;
};

class PosixFileLock : public FileLock {
 public:
  PosixFileLock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFileLock() override;

 private:
  int fd_;
  std::string path_;
};

// flock() locks are per open file description, so two objects of one process
// would not exclude each other; this set does.
std::mutex locked_paths_mu;
std::set<std::string>& LockedPaths() {
  static auto* paths = new std::set<std::string>();
  return *paths;
}

PosixFileLock::~PosixFileLock() {
  ::flock(fd_, LOCK_UN);
  ::close(fd_);
  std::lock_guard<std::mutex> l(locked_paths_mu);
  LockedPaths().erase(path_);
}

class PosixEnv : public Env {
 public:
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) override {
    int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return PosixError("open", path, errno);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }

  absl::StatusOr<std::string> ReadFile(const std::string& path,
                                       uint64_t max_size) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return PosixError("open", path, errno);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      return PosixError("stat", path, err);
    }
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size > max_size) {
      ::close(fd);
      return absl::DataLossError(absl::StrCat("file '", path, "' has ", size,
                                              " bytes, more than the ",
                                              max_size, " expected"));
    }
    std::string out(size, '\0');
    size_t done = 0;
    while (done < size) {
      ssize_t n = ::read(fd, out.data() + done, size - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        return PosixError("read", path, err);
      }
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    ::close(fd);
    out.resize(done);
    return out;
  }

  absl::StatusOr<uint64_t> GetFileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return PosixError("stat", path, errno);
    return static_cast<uint64_t>(st.st_size);
  }

  bool FileExists(const std::string& path) override {
    return ::access(path.c_str(), F_OK) == 0;
  }

  absl::Status RenameFile(const std::string& from,
                          const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return PosixError("rename", absl::StrCat(from, "' to '", to), errno);
    }
    return absl::OkStatus();
  }

  absl::Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return PosixError("unlink", path, errno);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> GetChildren(
      const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return PosixError("opendir", dir, errno);
    std::vector<std::string> out;
    while (struct dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..") out.push_back(std::move(name));
    }
    ::closedir(d);
    return out;
  }

  absl::Status CreateDirs(const std::string& dir) override {
    if (dir.empty()) return absl::InvalidArgumentError("empty directory name");
    for (size_t pos = 1; pos <= dir.size(); ++pos) {
      if (pos != dir.size() && dir[pos] != '/') continue;
      std::string part = dir.substr(0, pos);
      if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) {
        return PosixError("mkdir", part, errno);
      }
    }
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) return PosixError("stat", dir, errno);
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("'", dir, "' exists and is not a directory"));
    }
    return absl::OkStatus();
  }

  absl::Status SyncDir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return PosixError("open", dir, errno);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return PosixError("fsync", dir, err);
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<FileLock>> LockFile(
      const std::string& path) override {
    {
      std::lock_guard<std::mutex> l(locked_paths_mu);
      if (!LockedPaths().insert(path).second) {
        return absl::FailedPreconditionError(absl::StrCat(
            "'", path, "' is locked by another writer in this process"));
      }
    }
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int err = errno;
    if (fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      return std::unique_ptr<FileLock>(new PosixFileLock(fd, path));
    }
    if (fd >= 0) {
      err = errno;
      ::close(fd);
    }
    {
      std::lock_guard<std::mutex> l(locked_paths_mu);
      LockedPaths().erase(path);
    }
    if (fd >= 0 && err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("'", path, "' is locked by another process"));
    }
    return PosixError("lock", path, err);
  }
};

}  // namespace

absl::StatusOr<std::thread> Env::StartThread(std::function<void()> fn) {
  try {
    return std::thread(std::move(fn));
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot start a thread: ", e.what()));
  }
}

Env* Env::Default() {
  static Env* env = new PosixEnv();
  return env;
}

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (dir.empty()) return std::string(name);
  if (dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

absl::Status WriteFileAtomically(Env* env, const std::string& path,
                                 std::initializer_list<absl::string_view> parts,
                                 bool sync_file, bool sync_dir) {
  const std::string tmp = path + ".tmp";
  absl::Status s = [&]() -> absl::Status {
    PT_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f,
                        env->NewWritableFile(tmp));
    for (absl::string_view part : parts) PT_RETURN_IF_ERROR(f->Append(part));
    if (sync_file) PT_RETURN_IF_ERROR(f->Sync());
    PT_RETURN_IF_ERROR(f->Close());
    return env->RenameFile(tmp, path);
  }();
  if (!s.ok()) {
    env->RemoveFile(tmp).IgnoreError();
    return s;
  }
  if (sync_dir) {
    const size_t slash = path.find_last_of('/');
    return env->SyncDir(slash == std::string::npos ? "."
                        : slash == 0               ? "/"
                                                   : path.substr(0, slash));
  }
  return absl::OkStatus();
}

}  // namespace posttrain

#include "history/fault_injection_env.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace posttrain {

class FaultInjectionEnv::File : public WritableFile {
 public:
  File(FaultInjectionEnv* env, std::string path,
       std::unique_ptr<WritableFile> base)
      : env_(env), path_(std::move(path)), base_(std::move(base)) {}

  absl::Status Append(absl::string_view data) override {
    size_t allowed = data.size();
    absl::Status fault = env_->Admit(path_, data.size(), &allowed);
    if (allowed > 0) {
      PT_RETURN_IF_ERROR(base_->Append(data.substr(0, allowed)));
    }
    return fault;
  }
  absl::Status Sync() override {
    env_->syncs_++;
    if (env_->fail_sync_.load()) {
      return absl::InternalError(
          absl::StrCat("fsync '", path_, "': injected I/O error"));
    }
    return base_->Sync();
  }
  absl::Status Close() override { return base_->Close(); }

 private:
  FaultInjectionEnv* env_;
  std::string path_;
  std::unique_ptr<WritableFile> base_;
};

void FaultInjectionEnv::SetWriteBudget(int64_t bytes,
                                       const std::string& path_contains) {
  std::lock_guard<std::mutex> l(mu_);
  write_budget_ = bytes;
  budget_filter_ = path_contains;
}
void FaultInjectionEnv::SetShortWrites(bool on) {
  std::lock_guard<std::mutex> l(mu_);
  short_writes_ = on;
}
void FaultInjectionEnv::SetFailSync(bool on) { fail_sync_ = on; }
void FaultInjectionEnv::SetFailRename(bool on) { fail_rename_ = on; }
void FaultInjectionEnv::SetFailRemove(bool on) { fail_remove_ = on; }
void FaultInjectionEnv::ClearFaults() {
  std::lock_guard<std::mutex> l(mu_);
  write_budget_ = -1;
  budget_filter_.clear();
  short_writes_ = false;
  fail_sync_ = false;
  fail_rename_ = false;
  fail_remove_ = false;
  fail_thread_start_ = false;
}

absl::Status FaultInjectionEnv::Admit(const std::string& path, size_t n,
                                      size_t* allowed) {
  std::lock_guard<std::mutex> l(mu_);
  *allowed = n;
  if (short_writes_ && n > 0) {
    *allowed = n / 2;
    return absl::DataLossError(absl::StrCat("write '", path, "': short write (",
                                            *allowed, " of ", n, " bytes)"));
  }
  if (write_budget_ >= 0 && path.find(budget_filter_) != std::string::npos) {
    if (static_cast<int64_t>(n) > write_budget_) {
      *allowed = static_cast<size_t>(write_budget_);
      write_budget_ = 0;
      return absl::ResourceExhaustedError(
          absl::StrCat("write '", path, "': No space left on device"));
    }
    write_budget_ -= static_cast<int64_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WritableFile>>
FaultInjectionEnv::NewWritableFile(const std::string& path) {
  PT_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> base,
                      base_->NewWritableFile(path));
  return std::unique_ptr<WritableFile>(new File(this, path, std::move(base)));
}

absl::Status FaultInjectionEnv::RenameFile(const std::string& from,
                                           const std::string& to) {
  renames_++;
  if (fail_rename_.load()) {
    return absl::InternalError(
        absl::StrCat("rename '", from, "': injected I/O error"));
  }
  return base_->RenameFile(from, to);
}

absl::Status FaultInjectionEnv::RemoveFile(const std::string& path) {
  if (fail_remove_.load()) {
    return absl::InternalError(
        absl::StrCat("unlink '", path, "': injected I/O error"));
  }
  return base_->RemoveFile(path);
}

absl::Status FaultInjectionEnv::SyncDir(const std::string& dir) {
  syncs_++;
  if (fail_sync_.load()) {
    return absl::InternalError(
        absl::StrCat("fsync '", dir, "': injected I/O error"));
  }
  return base_->SyncDir(dir);
}

}  // namespace posttrain

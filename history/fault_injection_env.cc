#include "history/fault_injection_env.h"

#include <algorithm>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace posttrain {

class FaultInjectionEnv::File : public WritableFile {
 public:
  File(FaultInjectionEnv* env, std::string path,
       std::unique_ptr<WritableFile> base)
      : env_(env), path_(std::move(path)), base_(std::move(base)) {}

  absl::Status Append(absl::string_view data) override {
    PT_RETURN_IF_ERROR(env_->PowerCheck("write", path_));
    size_t allowed = data.size();
    absl::Status fault = env_->Admit(path_, data.size(), &allowed);
    if (allowed > 0) {
      PT_RETURN_IF_ERROR(base_->Append(data.substr(0, allowed)));
      size_ += allowed;
    }
    return fault;
  }
  absl::Status Sync() override {
    PT_RETURN_IF_ERROR(env_->PowerCheck("fsync", path_));
    env_->syncs_++;
    if (env_->fail_sync_.load()) {
      return absl::InternalError(
          absl::StrCat("fsync '", path_, "': injected I/O error"));
    }
    PT_RETURN_IF_ERROR(base_->Sync());
    env_->FileSynced(path_, size_);
    return absl::OkStatus();
  }
  absl::Status Close() override { return base_->Close(); }

 private:
  FaultInjectionEnv* env_;
  std::string path_;
  std::unique_ptr<WritableFile> base_;
  uint64_t size_ = 0;
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
  PT_RETURN_IF_ERROR(PowerCheck("create", path));
  const bool existed = base_->FileExists(path);
  PT_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> base,
                      base_->NewWritableFile(path));
  {
    std::lock_guard<std::mutex> l(mu_);
    if (tracking_) {
      // A new name needs its directory synced; new content needs the
      // file's own fsync (an existing file truncated keeps nothing).
      if (!existed) pending_.push_back({DirChange::kCreate, path});
      synced_[path] = 0;
    }
  }
  return std::unique_ptr<WritableFile>(new File(this, path, std::move(base)));
}

absl::Status FaultInjectionEnv::RenameFile(const std::string& from,
                                           const std::string& to) {
  PT_RETURN_IF_ERROR(PowerCheck("rename", to));
  renames_++;
  if (fail_rename_.load()) {
    return absl::InternalError(
        absl::StrCat("rename '", from, "': injected I/O error"));
  }
  std::lock_guard<std::mutex> l(mu_);
  DirChange change{DirChange::kRename, to, from};
  if (tracking_ && base_->FileExists(to)) {
    PT_ASSIGN_OR_RETURN(change.old_content, DurableContent(to));
    change.replaced = true;
  }
  PT_RETURN_IF_ERROR(base_->RenameFile(from, to));
  if (tracking_) {
    auto it = synced_.find(from);
    change.from_tracked = it != synced_.end();
    synced_.erase(to);
    if (change.from_tracked) {
      change.from_synced = it->second;
      synced_[to] = it->second;
      synced_.erase(it);
    }
    pending_.push_back(std::move(change));
  }
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::RemoveFile(const std::string& path) {
  PT_RETURN_IF_ERROR(PowerCheck("unlink", path));
  if (fail_remove_.load()) {
    return absl::InternalError(
        absl::StrCat("unlink '", path, "': injected I/O error"));
  }
  std::lock_guard<std::mutex> l(mu_);
  DirChange change{DirChange::kRemove, path};
  if (tracking_ && base_->FileExists(path)) {
    PT_ASSIGN_OR_RETURN(change.old_content, DurableContent(path));
  }
  PT_RETURN_IF_ERROR(base_->RemoveFile(path));
  if (tracking_) {
    synced_.erase(path);
    pending_.push_back(std::move(change));
  }
  return absl::OkStatus();
}

absl::Status FaultInjectionEnv::SyncDir(const std::string& dir) {
  PT_RETURN_IF_ERROR(PowerCheck("fsync", dir));
  syncs_++;
  if (fail_sync_.load()) {
    return absl::InternalError(
        absl::StrCat("fsync '", dir, "': injected I/O error"));
  }
  PT_RETURN_IF_ERROR(base_->SyncDir(dir));
  std::lock_guard<std::mutex> l(mu_);
  auto parent = [](const std::string& p) {
    const size_t slash = p.find_last_of('/');
    return slash == std::string::npos ? std::string(".") : p.substr(0, slash);
  };
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  std::vector<DirChange> still;
  for (DirChange& c : pending_) {
    if (parent(c.path) != d) still.push_back(std::move(c));
  }
  pending_ = std::move(still);
  return absl::OkStatus();
}

void FaultInjectionEnv::TrackDurability() {
  std::lock_guard<std::mutex> l(mu_);
  tracking_ = true;
}

void FaultInjectionEnv::SetPowerOffAfter(int64_t ops) {
  std::lock_guard<std::mutex> l(mu_);
  power_off_after_ = ops < 0 ? -1 : ops_ + ops;
}

int64_t FaultInjectionEnv::mutating_ops() const {
  std::lock_guard<std::mutex> l(mu_);
  return ops_;
}

std::string FaultInjectionEnv::power_off_at() const {
  std::lock_guard<std::mutex> l(mu_);
  return off_at_;
}

absl::Status FaultInjectionEnv::PowerCheck(const char* op,
                                           const std::string& path) {
  std::lock_guard<std::mutex> l(mu_);
  if (!off_ && power_off_after_ >= 0 && ops_ >= power_off_after_) {
    off_ = true;
    off_at_ = absl::StrCat(op, " ", path);
  }
  if (off_) {
    return absl::UnavailableError(
        absl::StrCat(op, " '", path, "': the power is off (injected)"));
  }
  if (tracking_) log_.push_back(absl::StrCat(op, " ", path));
  if (ops_++ == fail_once_at_) {
    fail_once_at_ = -1;
    return absl::InternalError(
        absl::StrCat(op, " '", path, "': injected I/O error"));
  }
  return absl::OkStatus();
}

void FaultInjectionEnv::SetFailOnce(int64_t ops) {
  std::lock_guard<std::mutex> l(mu_);
  fail_once_at_ = ops < 0 ? -1 : ops_ + ops;
}

std::vector<std::string> FaultInjectionEnv::op_log() const {
  std::lock_guard<std::mutex> l(mu_);
  return log_;
}

void FaultInjectionEnv::FileSynced(const std::string& path, uint64_t size) {
  std::lock_guard<std::mutex> l(mu_);
  if (tracking_) synced_[path] = size;
}

absl::StatusOr<std::string> FaultInjectionEnv::DurableContent(
    const std::string& path) {
  PT_ASSIGN_OR_RETURN(std::string bytes,
                      base_->ReadFile(path, uint64_t{1} << 34));
  auto it = synced_.find(path);
  if (it != synced_.end() && bytes.size() > it->second) {
    bytes.resize(it->second);
  }
  return bytes;
}

absl::Status FaultInjectionEnv::SimulatePowerLoss(uint64_t seed) {
  std::lock_guard<std::mutex> l(mu_);
  // Which unsynced changes are undone.
  std::vector<bool> undo(pending_.size(), true);
  if (seed != 0) {
    std::mt19937_64 rng(seed);
    // Per name, the surviving changes are the oldest ones: once a change
    // is undone, every later change to a name it touched is undone too.
    std::set<std::string> tainted;
    for (size_t i = 0; i < pending_.size(); ++i) {
      const DirChange& c = pending_[i];
      const bool forced =
          tainted.count(c.path) > 0 ||
          (c.kind == DirChange::kRename && tainted.count(c.from) > 0);
      undo[i] = forced || (rng() & 1) != 0;
      if (undo[i]) {
        tainted.insert(c.path);
        if (c.kind == DirChange::kRename) tainted.insert(c.from);
      }
    }
  }
  auto put = [&](const std::string& path,
                 const std::string& bytes) -> absl::Status {
    PT_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f,
                        base_->NewWritableFile(path));
    PT_RETURN_IF_ERROR(f->Append(bytes));
    return f->Close();
  };
  // Unsynced data first, by the files' current names.
  for (const auto& [path, size] : synced_) {
    if (!base_->FileExists(path)) continue;
    PT_ASSIGN_OR_RETURN(uint64_t now, base_->GetFileSize(path));
    if (now > size) {
      PT_ASSIGN_OR_RETURN(std::string kept, DurableContent(path));
      PT_RETURN_IF_ERROR(put(path, kept));
    }
  }
  // Then the directory changes, newest first.
  for (size_t i = pending_.size(); i-- > 0;) {
    if (!undo[i]) continue;
    const DirChange* c = &pending_[i];
    switch (c->kind) {
      case DirChange::kCreate:
        if (base_->FileExists(c->path)) {
          PT_RETURN_IF_ERROR(base_->RemoveFile(c->path));
        }
        break;
      case DirChange::kRename:
        if (base_->FileExists(c->path)) {
          PT_RETURN_IF_ERROR(base_->RenameFile(c->path, c->from));
        }
        if (c->replaced) PT_RETURN_IF_ERROR(put(c->path, c->old_content));
        break;
      case DirChange::kRemove:
        PT_RETURN_IF_ERROR(put(c->path, c->old_content));
        break;
    }
  }
  pending_.clear();
  synced_.clear();
  log_.clear();
  ops_ = 0;
  fail_once_at_ = -1;
  off_ = false;
  off_at_.clear();
  power_off_after_ = -1;
  return absl::OkStatus();
}

}  // namespace posttrain

#include "history/store.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/model_spec.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "history/codec.h"

namespace posttrain {
namespace {

constexpr char kManifestName[] = "MANIFEST";
constexpr char kLockName[] = "LOCK";
constexpr char kTmpSuffix[] = ".tmp";

double NowSeconds() {
  return std::chrono::duration<double>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::Status CheckOptions(const HistoryOptions& o) {
  if (o.codec == pb::CODEC_UNSPECIFIED || !pb::Codec_IsValid(o.codec)) {
    return absl::InvalidArgumentError("HistoryOptions.codec is not set");
  }
  if (o.keyframe_interval < 1 || o.keyframe_interval > (1u << 16)) {
    return absl::InvalidArgumentError(
        "HistoryOptions.keyframe_interval must be in [1, 65536]");
  }
  if (o.lossy_small_bits != 0 &&
      (o.lossy_small_bits < 2 || o.lossy_small_bits > 16)) {
    return absl::InvalidArgumentError(
        "HistoryOptions.lossy_small_bits must be 0 or in [2, 16]");
  }
  for (int bits : {o.lossy_keyframe_bits, o.lossy_delta_bits}) {
    if (bits < 2 || bits > 16) {
      return absl::InvalidArgumentError(
          "HistoryOptions lossy bits must be in [2, 16]");
    }
  }
  if (o.lossy_kernel_extra_bits < 0 || o.lossy_kernel_extra_bits > 14) {
    return absl::InvalidArgumentError(
        "HistoryOptions.lossy_kernel_extra_bits must be in [0, 14]");
  }
  if (!(o.lossy_delta_step_factor > 0.0 &&
        std::isfinite(o.lossy_delta_step_factor))) {
    return absl::InvalidArgumentError(
        "HistoryOptions.lossy_delta_step_factor must be positive and finite");
  }
  return absl::OkStatus();
}

// Epochs reachable as bases from the visible entries.
absl::flat_hash_set<int64_t> NeededEpochs(const pb::Manifest& m) {
  absl::flat_hash_map<int64_t, int64_t> base_of;
  for (const auto& e : m.epochs()) base_of[e.epoch()] = e.base_epoch();
  absl::flat_hash_set<int64_t> needed;
  for (const auto& e : m.epochs()) {
    if (!e.visible()) continue;
    for (int64_t x = e.epoch(); x != -1 && needed.insert(x).second;) {
      auto it = base_of.find(x);
      x = it == base_of.end() ? -1 : it->second;
    }
  }
  return needed;
}

// True when `s` is well-formed UTF-8 (protobuf refuses to parse a proto3
// string field that is not, so none may reach a committed manifest).
bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t extra;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c >> 5) == 0x6) {
      extra = 1;
      cp = c & 0x1f;
    } else if ((c >> 4) == 0xe) {
      extra = 2;
      cp = c & 0x0f;
    } else if ((c >> 3) == 0x1e) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= extra; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 0x2) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

const pb::EpochEntry* FindEntry(const pb::Manifest& m, int64_t epoch) {
  for (const auto& e : m.epochs()) {
    if (e.epoch() == epoch) return &e;
  }
  return nullptr;
}

}  // namespace

HistoryStore::HistoryStore(std::string dir, Env* env, HistoryOptions options,
                           bool read_only)
    : dir_(std::move(dir)),
      env_(env),
      options_(std::move(options)),
      read_only_(read_only) {}

HistoryStore::~HistoryStore() = default;

absl::StatusOr<std::unique_ptr<HistoryStore>> HistoryStore::Open(
    const std::string& dir, const HistoryOptions& options,
    const pb::ModelSpec& spec) {
  PT_RETURN_IF_ERROR(CheckOptions(options));
  Env* env = options.env ? options.env : Env::Default();
  if (!IsValidUtf8(options.created_by)) {
    return absl::InvalidArgumentError("HistoryOptions.created_by is not UTF-8");
  }
  PT_RETURN_IF_ERROR(env->CreateDirs(dir));
  std::unique_ptr<HistoryStore> store(
      new HistoryStore(dir, env, options, /*read_only=*/false));
  PT_ASSIGN_OR_RETURN(store->lock_, env->LockFile(JoinPath(dir, kLockName)));
  if (env->FileExists(JoinPath(dir, kManifestName))) {
    PT_RETURN_IF_ERROR(store->LoadManifest());
    absl::Status same =
        CheckSameArchitecture(store->manifest_.model_spec(), spec);
    if (!same.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("history store '", dir,
                       "' holds another architecture: ", same.message()));
    }
  } else {
    PT_ASSIGN_OR_RETURN(std::vector<std::string> children,
                        env->GetChildren(dir));
    for (const std::string& name : children) {
      if (absl::StartsWith(name, "epoch-") && absl::EndsWith(name, ".blob")) {
        return absl::DataLossError(
            absl::StrCat("history store '", dir, "' has blob files (", name,
                         ") but no MANIFEST; refusing to overwrite it"));
      }
    }
    pb::Manifest m;
    m.set_format_version(kHistoryFormatVersion);
    *m.mutable_model_spec() = spec;
    m.set_codec(options.codec);
    m.set_keyframe_interval(options.keyframe_interval);
    *m.mutable_retention() = options.retention.proto();
    m.set_created_by(options.created_by);
    PT_RETURN_IF_ERROR(store->CommitManifest(m));
    store->manifest_ = std::move(m);
  }
  PT_RETURN_IF_ERROR(store->RemoveLeftovers());
  return store;
}

absl::StatusOr<std::unique_ptr<HistoryStore>> HistoryStore::OpenReadOnly(
    const std::string& dir, Env* env) {
  if (env == nullptr) env = Env::Default();
  if (!env->FileExists(JoinPath(dir, kManifestName))) {
    return absl::NotFoundError(
        absl::StrCat("'", dir, "' is not a history store (no MANIFEST)"));
  }
  std::unique_ptr<HistoryStore> store(
      new HistoryStore(dir, env, HistoryOptions(), /*read_only=*/true));
  PT_RETURN_IF_ERROR(store->LoadManifest());
  return store;
}

absl::Status HistoryStore::LoadManifest() {
  const std::string path = JoinPath(dir_, kManifestName);
  PT_ASSIGN_OR_RETURN(std::string bytes,
                      env_->ReadFile(path, kMaxManifestBytes + 64));
  PT_ASSIGN_OR_RETURN(pb::Manifest m, DecodeManifestFile(bytes, path));
  std::lock_guard<std::mutex> l(mu_);
  manifest_ = std::move(m);
  return absl::OkStatus();
}

absl::Status HistoryStore::WriteFileAtomically(
    const std::string& name, std::initializer_list<absl::string_view> parts) {
  // The caller syncs the directory.
  return posttrain::WriteFileAtomically(env_, JoinPath(dir_, name), parts,
                                        /*sync_file=*/options_.sync,
                                        /*sync_dir=*/false);
}

absl::Status HistoryStore::CommitManifest(const pb::Manifest& manifest) {
  PT_RETURN_IF_ERROR(
      WriteFileAtomically(kManifestName, {EncodeManifestFile(manifest)}));
  if (options_.sync) PT_RETURN_IF_ERROR(env_->SyncDir(dir_));
  return absl::OkStatus();
}

absl::Status HistoryStore::RemoveLeftovers() {
  PT_ASSIGN_OR_RETURN(std::vector<std::string> children,
                      env_->GetChildren(dir_));
  absl::flat_hash_set<std::string> live;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& e : manifest_.epochs()) live.insert(e.blob_file());
  }
  for (const std::string& name : children) {
    // Only our own temporary files: MANIFEST.tmp and epoch-*.blob.tmp.
    const bool tmp = name == absl::StrCat(kManifestName, kTmpSuffix) ||
                     (absl::StartsWith(name, "epoch-") &&
                      absl::EndsWith(name, absl::StrCat(".blob", kTmpSuffix)));
    const bool orphan = absl::StartsWith(name, "epoch-") &&
                        absl::EndsWith(name, ".blob") && !live.contains(name);
    if (tmp || orphan) {
      PT_RETURN_IF_ERROR(env_->RemoveFile(JoinPath(dir_, name)));
    }
  }
  return absl::OkStatus();
}

absl::Status HistoryStore::Append(const EpochMetadata& meta,
                                  NamedTensors state) {
  // Nothing may throw past this point into a training loop or kill the
  // writer thread: out-of-memory while encoding becomes ResourceExhausted.
  absl::Status result;
  absl::Status thrown =
      CallTorch(absl::StrCat("history store '", dir_, "': epoch ", meta.epoch),
                [&] { result = AppendImpl(meta, std::move(state)); });
  return thrown.ok() ? result : thrown;
}

absl::Status HistoryStore::AppendImpl(const EpochMetadata& meta,
                                      NamedTensors state) {
  if (read_only_) {
    return absl::FailedPreconditionError(
        absl::StrCat("history store '", dir_, "' is open read-only"));
  }
  std::lock_guard<std::mutex> append_lock(append_mu_);
  pb::Manifest m = manifest();
  const pb::EpochEntry* last =
      m.epochs().empty() ? nullptr : &*m.epochs().rbegin();
  if (meta.epoch < 0 || (last && meta.epoch <= last->epoch())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "history store '", dir_, "': cannot append epoch ", meta.epoch,
        last ? absl::StrCat("; epochs up to ", last->epoch(),
                            " are stored and are never overwritten")
             : "; epochs must be >= 0"));
  }
  for (const auto& [key, value] : meta.metrics) {
    if (!IsValidUtf8(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("history store '", dir_, "': epoch ", meta.epoch,
                       ": metric name is not valid UTF-8"));
    }
  }
  const bool chained =
      options_.codec == pb::CODEC_DELTA || options_.codec == pb::CODEC_LOSSY;
  const bool use_base = chained && last && !base_state_.empty() &&
                        base_epoch_ == last->epoch() &&
                        last->chain_depth() + 1 < options_.keyframe_interval;
  BlobEncodeOptions enc;
  enc.codec = options_.codec;
  enc.zstd_level = options_.zstd_level;
  enc.lossy_keyframe_bits = options_.lossy_keyframe_bits;
  enc.lossy_delta_bits = options_.lossy_delta_bits;
  enc.lossy_delta_step = options_.lossy_delta_step;
  enc.lossy_delta_step_factor = options_.lossy_delta_step_factor;
  enc.lossy_min_elements = options_.lossy_min_elements;
  enc.lossy_small_bits = options_.lossy_small_bits;
  enc.lossy_kernel_extra_bits = options_.lossy_kernel_extra_bits;
  enc.lossy_error_diffusion = options_.lossy_error_diffusion;
  NamedTensors recon;
  PT_ASSIGN_OR_RETURN(EncodedBlob blob,
                      EncodeBlob(meta.epoch, std::move(state),
                                 use_base ? &base_state_ : nullptr, base_epoch_,
                                 enc, &buffers_, chained ? &recon : nullptr));
  const std::string blob_name = BlobFileName(meta.epoch);
  absl::Status written =
      WriteFileAtomically(blob_name, {blob.head, blob.payload});
  // The blob's rename must be durable before the MANIFEST that names it.
  if (written.ok() && options_.sync) written = env_->SyncDir(dir_);
  if (!written.ok()) {
    env_->RemoveFile(JoinPath(dir_, blob_name)).IgnoreError();
    return Annotate(written, absl::StrCat("history store '", dir_,
                                          "': writing epoch ", meta.epoch));
  }

  pb::EpochEntry* e = m.add_epochs();
  e->set_epoch(meta.epoch);
  e->set_step(meta.step);
  for (const auto& [k, v] : meta.metrics) (*e->mutable_metrics())[k] = v;
  e->set_wall_time(meta.wall_time != 0 ? meta.wall_time : NowSeconds());
  e->set_seed(meta.seed);
  e->set_blob_file(blob_name);
  e->set_blob_size(blob.size);
  e->set_blob_crc32(blob.crc32);
  e->set_codec(options_.codec);
  e->set_base_epoch(use_base ? last->epoch() : -1);
  e->set_chain_depth(use_base ? last->chain_depth() + 1 : 0);
  e->set_visible(true);
  e->set_max_abs_error(blob.max_abs_error);
  e->set_raw_bytes(blob.raw_bytes);
  m.set_epochs_appended(m.epochs_appended() + 1);
  m.set_sequence(m.sequence() + 1);
  m.set_codec(options_.codec);
  m.set_keyframe_interval(options_.keyframe_interval);
  *m.mutable_retention() = options_.retention.proto();
  m.set_lossy_max_abs_error(
      std::max(m.lossy_max_abs_error(), blob.max_abs_error));

  // Retention: hide dropped epochs, then forget those no chain needs.
  std::vector<int64_t> visible;
  std::vector<pb::EpochEntry*> visible_entries;
  for (auto& x : *m.mutable_epochs()) {
    if (x.visible()) {
      visible.push_back(x.epoch());
      visible_entries.push_back(&x);
    }
  }
  std::vector<bool> keep =
      options_.retention.Select(visible, m.epochs_appended());
  for (size_t i = 0; i < keep.size(); ++i) {
    if (!keep[i]) visible_entries[i]->set_visible(false);
  }
  const absl::flat_hash_set<int64_t> needed = NeededEpochs(m);
  std::vector<std::string> dropped;
  google::protobuf::RepeatedPtrField<pb::EpochEntry> kept;
  for (auto& x : *m.mutable_epochs()) {
    if (needed.contains(x.epoch())) {
      *kept.Add() = std::move(x);
    } else {
      dropped.push_back(x.blob_file());
    }
  }
  m.mutable_epochs()->Swap(&kept);

  std::string manifest_bytes = EncodeManifestFile(m);
  if (manifest_bytes.size() > kMaxManifestBytes) {
    env_->RemoveFile(JoinPath(dir_, blob_name)).IgnoreError();
    return absl::ResourceExhaustedError(
        absl::StrCat("history store '", dir_, "': the manifest would exceed ",
                     kMaxManifestBytes, " bytes; use a retention policy"));
  }
  absl::Status committed = WriteFileAtomically(kManifestName, {manifest_bytes});
  if (!committed.ok()) {
    // The old MANIFEST is still in place; the new blob is an orphan.
    env_->RemoveFile(JoinPath(dir_, blob_name)).IgnoreError();
    return Annotate(
        committed, absl::StrCat("history store '", dir_, "': committing epoch ",
                                meta.epoch));
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    manifest_ = m;
  }
  if (chained) {
    base_state_ = std::move(recon);
    base_epoch_ = meta.epoch;
  }
  absl::Status synced = options_.sync ? env_->SyncDir(dir_) : absl::OkStatus();
  // Dropped blobs go after the commit; a failure leaves leftovers that the
  // next Open removes.
  for (const std::string& name : dropped) {
    env_->RemoveFile(JoinPath(dir_, name)).IgnoreError();
  }
  return Annotate(synced,
                  absl::StrCat("history store '", dir_, "': epoch ", meta.epoch,
                               " was committed but the directory "
                               "sync failed"));
}

std::vector<pb::EpochEntry> HistoryStore::Epochs() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<pb::EpochEntry> out;
  for (const auto& e : manifest_.epochs()) {
    if (e.visible()) out.push_back(e);
  }
  return out;
}

int64_t HistoryStore::last_epoch() const {
  std::lock_guard<std::mutex> l(mu_);
  return manifest_.epochs().empty() ? -1 : manifest_.epochs().rbegin()->epoch();
}

int64_t HistoryStore::last_step() const {
  std::lock_guard<std::mutex> l(mu_);
  return manifest_.epochs().empty() ? 0 : manifest_.epochs().rbegin()->step();
}

int64_t HistoryStore::epochs_appended() const {
  std::lock_guard<std::mutex> l(mu_);
  return manifest_.epochs_appended();
}

pb::ModelSpec HistoryStore::model_spec() const {
  std::lock_guard<std::mutex> l(mu_);
  return manifest_.model_spec();
}

pb::Manifest HistoryStore::manifest() const {
  std::lock_guard<std::mutex> l(mu_);
  return manifest_;
}

absl::Status HistoryStore::DecodeOne(const pb::EpochEntry& e,
                                     NamedTensors* state) const {
  const std::string path = JoinPath(dir_, e.blob_file());
  absl::StatusOr<std::string> bytes = env_->ReadFile(path, e.blob_size());
  if (!bytes.ok()) {
    return absl::DataLossError(absl::StrCat("corrupt blob '", e.blob_file(),
                                            "' (epoch ", e.epoch(),
                                            "): ", bytes.status().message()));
  }
  if (bytes->size() != e.blob_size()) {
    return absl::DataLossError(absl::StrCat(
        "corrupt blob '", e.blob_file(), "' (epoch ", e.epoch(),
        "): ", bytes->size(), " bytes, the manifest says ", e.blob_size()));
  }
  if (Crc32(*bytes) != e.blob_crc32()) {
    return absl::DataLossError(absl::StrCat("corrupt blob '", e.blob_file(),
                                            "' (epoch ", e.epoch(),
                                            "): checksum mismatch"));
  }
  PT_ASSIGN_OR_RETURN(pb::BlobHeader header,
                      ParseBlobHeader(*bytes, e.blob_file(), e.epoch()));
  if (header.base_epoch() != e.base_epoch()) {
    return absl::DataLossError(
        absl::StrCat("corrupt blob '", e.blob_file(), "' (epoch ", e.epoch(),
                     "): base epoch ", header.base_epoch(),
                     ", the manifest says ", e.base_epoch()));
  }
  return DecodeBlob(*bytes, header, e.blob_file(), state);
}

absl::Status HistoryStore::DecodeChain(const pb::Manifest& m, int64_t target,
                                       int64_t decoded,
                                       NamedTensors* state) const {
  std::vector<const pb::EpochEntry*> chain;
  for (int64_t x = target; x != -1;) {
    const pb::EpochEntry* e = FindEntry(m, x);
    if (e == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("history store '", dir_, "' has no epoch ", x));
    }
    if (x == decoded) break;
    chain.push_back(e);
    x = e->base_epoch();
  }
  const bool resume =
      !chain.empty() && chain.back()->base_epoch() == decoded && decoded != -1;
  if (!resume && !(chain.empty() && decoded == target)) state->clear();
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    PT_RETURN_IF_ERROR(DecodeOne(**it, state));
  }
  return absl::OkStatus();
}

absl::StatusOr<NamedTensors> HistoryStore::ReadEpoch(int64_t epoch) const {
  pb::Manifest m = manifest();
  const pb::EpochEntry* e = FindEntry(m, epoch);
  if (e == nullptr || !e->visible()) {
    return absl::NotFoundError(absl::StrCat("history store '", dir_,
                                            "' has no readable epoch ", epoch));
  }
  NamedTensors state;
  PT_RETURN_IF_ERROR(DecodeChain(m, epoch, -1, &state));
  return state;
}

absl::Status HistoryStore::LoadEpoch(int64_t epoch,
                                     torch::nn::Module& module) const {
  PT_ASSIGN_OR_RETURN(NamedTensors state, ReadEpoch(epoch));
  return Annotate(LoadModuleState(state, module),
                  absl::StrCat("loading epoch ", epoch, " of '", dir_, "'"));
}

absl::Status HistoryStore::Verify() const {
  Iterator it = NewIterator();
  while (it.Next()) {
  }
  return it.status();
}

HistoryStore::Iterator HistoryStore::NewIterator() const {
  return Iterator(this, manifest());
}

HistoryStore::Iterator::Iterator(const HistoryStore* store,
                                 pb::Manifest manifest)
    : store_(store), manifest_(std::move(manifest)) {
  for (const auto& e : manifest_.epochs()) {
    if (e.visible()) entries_.push_back(e);
  }
}

bool HistoryStore::Iterator::Next() {
  if (!status_.ok()) return false;
  if (started_) ++pos_;
  started_ = true;
  if (pos_ >= entries_.size()) return false;
  const int64_t target = entries_[pos_].epoch();
  status_ = store_->DecodeChain(manifest_, target, decoded_epoch_, &state_);
  if (!status_.ok()) return false;
  decoded_epoch_ = target;
  return true;
}

}  // namespace posttrain

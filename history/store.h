// HistoryStore: a compact, crash-safe store of a model's state after every
// epoch of training.
//
// A store is a directory: MANIFEST (protobuf, replaced atomically), one blob
// per kept epoch ("epoch-00000012.blob"), and LOCK. Appending an epoch writes
// the blob to a temporary file, fsyncs, renames it, then commits a new
// MANIFEST the same way; the commit is the rename of MANIFEST. A crash at any
// point leaves a store that opens and reads every committed epoch bit for
// bit; the next writer removes leftovers. The format is in
// docs/history_format.md.
//
// Example:
//   HistoryOptions options;
//   options.codec = pb::CODEC_DELTA;
//   PT_ASSIGN_OR_RETURN(auto store, HistoryStore::Open(dir, options, spec));
//   PT_ASSIGN_OR_RETURN(NamedTensors state, CopyModuleState(*model));
//   EpochMetadata meta;
//   meta.epoch = 3;
//   meta.step = 700;
//   PT_RETURN_IF_ERROR(store->Append(meta, state));
//   // ... later, or in another process ...
//   PT_RETURN_IF_ERROR(store->LoadEpoch(3, *model));
//
// Thread safety: all methods may be called concurrently; Append calls are
// serialized. One writer per directory (LOCK), any number of readers. A
// reader opened before a writer's retention dropped an epoch sees DataLoss
// when it reads that epoch (its manifest copy is not reloaded).
#ifndef POSTTRAIN_HISTORY_STORE_H_
#define POSTTRAIN_HISTORY_STORE_H_

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_spec.pb.h"
#include "common/module_state.h"
#include "history/env.h"
#include "history/file_format.h"
#include "history/format.pb.h"
#include "history/retention.h"

namespace posttrain {

struct HistoryOptions {
  // File system access; nullptr means Env::Default(). Not owned.
  Env* env = nullptr;
  // Codec of new blobs. Delta is lossless and bit-exact; lossy is for
  // reference-only use (its error bound is recorded per epoch).
  pb::Codec codec = pb::CODEC_DELTA;
  // Delta/lossy: every keyframe_interval-th blob is stored whole, so a read
  // decodes at most keyframe_interval blobs (one keyframe and fewer than
  // keyframe_interval deltas).
  uint32_t keyframe_interval = 8;
  // zstd level of the zstd, delta and lossy codecs (1 = fastest).
  int zstd_level = 1;
  // Lossy codec: bits per quantized value in keyframes and in deltas, in
  // [2, 16]. The defaults meet docs/BENCHMARKS.md's targets on the example.
  int lossy_keyframe_bits = 7;
  int lossy_delta_bits = 6;
  // Lossy codec: how a delta tensor's step is chosen (LossyDeltaStep in
  // history/file_format.h) and the multiplier of the keyframe rules.
  LossyDeltaStep lossy_delta_step = LossyDeltaStep::kDeltaRange;
  double lossy_delta_step_factor = 1.0;
  // Lossy codec: tensors with fewer elements are quantized with
  // lossy_small_bits (0: stored losslessly).
  int64_t lossy_min_elements = 1024;
  int lossy_small_bits = 16;
  // Lossy codec: extra bits of convolution kernels (tensors of three or
  // more dimensions), in [0, 14]; BlobEncodeOptions explains why.
  int lossy_kernel_extra_bits = 1;
  // Lossy codec: error diffusion along each output row of tensors with two
  // or more dimensions (QuantizeDifferenceDiffused in history/codec.h).
  bool lossy_error_diffusion = false;
  // Which epochs stay readable.
  RetentionPolicy retention = RetentionPolicy::KeepAll();
  // fsync files and the directory at every commit. Only tests of speed turn
  // this off; without it a power loss may lose recent epochs.
  bool sync = true;
  // Free text recorded in a new manifest (e.g. the program's name).
  std::string created_by;
};

// What the caller tells the store about an epoch besides its tensors.
struct EpochMetadata {
  int64_t epoch = 0;  // the user's epoch number; strictly increasing
  int64_t step = 0;   // global optimizer step at the snapshot
  std::map<std::string, double> metrics;
  uint64_t seed = 0;     // the run's declared seed
  double wall_time = 0;  // seconds since the Unix epoch; 0 means now
};

// The metric that marks an epoch stored by the post-training phase (an
// improved model, not a training epoch); mining and the PostTrainer's check
// of the newest training epoch skip such epochs.
inline constexpr char kPostTrainMetric[] = "posttrain";

class HistoryStore {
 public:
  // Opens the store in `dir` for writing, creating it when missing. An
  // existing store must hold the same architecture as `spec`
  // (FailedPrecondition naming the differing layer otherwise). Removes files
  // left by an interrupted writer. New blobs use `options`; existing ones
  // keep their codec.
  static absl::StatusOr<std::unique_ptr<HistoryStore>> Open(
      const std::string& dir, const HistoryOptions& options,
      const pb::ModelSpec& spec);

  // Opens an existing store for reading only: no lock, no cleanup.
  static absl::StatusOr<std::unique_ptr<HistoryStore>> OpenReadOnly(
      const std::string& dir, Env* env = nullptr);

  ~HistoryStore();
  HistoryStore(const HistoryStore&) = delete;
  HistoryStore& operator=(const HistoryStore&) = delete;

  // Encodes, writes and commits one epoch, then applies retention. `state`
  // must be CPU, contiguous, and is consumed: the store keeps the tensors as
  // the base of the next delta, so the caller must not modify them later
  // (pass copies, as CopyModuleState makes). FailedPrecondition when
  // meta.epoch is not above every stored epoch; InvalidArgument for a metric
  // name that is not UTF-8. On any error nothing stored before is changed,
  // with one exception: when only the final directory fsync fails, the epoch
  // is committed (and readable) but its durability is unknown; the error
  // says so, and blobs dropped by retention are kept until the next Open.
  // Never throws: out-of-memory becomes ResourceExhausted.
  absl::Status Append(const EpochMetadata& meta, NamedTensors state);

  // The readable epochs, ascending, with their metadata.
  std::vector<pb::EpochEntry> Epochs() const;
  // The last epoch ever committed and its step; -1/0 for an empty store.
  int64_t last_epoch() const;
  int64_t last_step() const;
  // The number of epochs ever appended (t of Dare).
  int64_t epochs_appended() const;
  pb::ModelSpec model_spec() const;
  // A copy of the committed manifest.
  pb::Manifest manifest() const;
  const std::string& dir() const { return dir_; }

  // Decodes epoch `epoch` (NotFound when it is not readable). Reads at most
  // keyframe_interval blobs; memory: one model plus one blob.
  absl::StatusOr<NamedTensors> ReadEpoch(int64_t epoch) const;
  // ReadEpoch, then copies into `module` by name (shape-checked; a mismatch
  // names the tensor and leaves the module unchanged).
  absl::Status LoadEpoch(int64_t epoch, torch::nn::Module& module) const;

  // Reads every readable epoch and checks every checksum; the first problem
  // found is returned, naming the file and epoch.
  absl::Status Verify() const;

  // Visits the readable epochs in ascending order, decoding each chain once:
  // memory stays one model plus one blob.
  //   auto it = store->NewIterator();
  //   while (it.Next()) Use(it.entry(), it.state());
  //   PT_RETURN_IF_ERROR(it.status());
  class Iterator {
   public:
    // Advances; false at the end or on error (see status()).
    bool Next();
    const pb::EpochEntry& entry() const { return entries_[pos_]; }
    // Valid until the next call of Next(), which updates it in place.
    const NamedTensors& state() const { return state_; }
    absl::Status status() const { return status_; }

   private:
    friend class HistoryStore;
    Iterator(const HistoryStore* store, pb::Manifest manifest);
    const HistoryStore* store_;
    pb::Manifest manifest_;
    std::vector<pb::EpochEntry> entries_;
    size_t pos_ = 0;
    bool started_ = false;
    int64_t decoded_epoch_ = -1;  // epoch whose reconstruction state_ holds
    NamedTensors state_;
    absl::Status status_;
  };
  Iterator NewIterator() const;

 private:
  HistoryStore(std::string dir, Env* env, HistoryOptions options,
               bool read_only);

  absl::Status AppendImpl(const EpochMetadata& meta, NamedTensors state);
  absl::Status LoadManifest();
  absl::Status CommitManifest(const pb::Manifest& manifest);
  absl::Status RemoveLeftovers();
  // Writes the concatenation of `parts` to `name` via a temporary file,
  // fsync and rename.
  absl::Status WriteFileAtomically(
      const std::string& name, std::initializer_list<absl::string_view> parts);
  // Decodes `target` onto `*state`, which holds the reconstruction of
  // `decoded` (-1: nothing); reads only the blobs of the chain after it.
  absl::Status DecodeChain(const pb::Manifest& m, int64_t target,
                           int64_t decoded, NamedTensors* state) const;
  absl::Status DecodeOne(const pb::EpochEntry& e, NamedTensors* state) const;

  const std::string dir_;
  Env* const env_;
  const HistoryOptions options_;
  const bool read_only_;
  std::unique_ptr<FileLock> lock_;

  mutable std::mutex mu_;
  pb::Manifest manifest_;  // the committed manifest
  std::mutex append_mu_;   // serializes Append
  // Writer only: the reconstruction of the last committed blob, the base of
  // the next delta; empty after a restart (the next blob is a keyframe).
  NamedTensors base_state_;
  int64_t base_epoch_ = -1;
  BlobBuffers buffers_;  // reused by every Append
};

}  // namespace posttrain

#endif  // POSTTRAIN_HISTORY_STORE_H_

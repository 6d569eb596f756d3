// File formats of the history store (docs/history_format.md): framing of the
// MANIFEST file and of epoch blobs, and the encoding of a model state into a
// blob with one of the codecs.
//
// Both files start with an 8-byte magic and carry a CRC-32 of every part, so
// a flipped byte anywhere is a DataLoss error naming the file. Sizes read
// from disk are checked against the file's size and sane limits before
// anything is allocated.
//
// Thread safety: stateless functions, safe to call concurrently.
#ifndef POSTTRAIN_HISTORY_FILE_FORMAT_H_
#define POSTTRAIN_HISTORY_FILE_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/module_state.h"
#include "history/format.pb.h"

namespace posttrain {

// The Manifest.format_version this library writes and reads.
inline constexpr uint32_t kHistoryFormatVersion = 1;
// Largest manifest or blob header this library accepts.
inline constexpr uint64_t kMaxManifestBytes = 64ull << 20;
inline constexpr uint64_t kMaxBlobHeaderBytes = 64ull << 20;
// Largest single tensor and blob accepted from disk.
inline constexpr uint64_t kMaxTensorBytes = 16ull << 30;
inline constexpr uint64_t kMaxBlobBytes = 64ull << 30;

// "epoch-00000012.blob": the only blob names a store accepts.
std::string BlobFileName(int64_t epoch);

// MANIFEST file: magic, version, length, CRC-32, protobuf payload.
std::string EncodeManifestFile(const pb::Manifest& manifest);
// Parses and validates a MANIFEST file read from `file_name` (for messages):
// framing, CRC, version, and the consistency of the epoch list (ascending
// epochs, canonical blob names, bases that exist, chain depths).
absl::StatusOr<pb::Manifest> DecodeManifestFile(absl::string_view bytes,
                                                const std::string& file_name);

// How the lossy codec picks the step of a delta tensor (not of small
// tensors, which always use the range rule).
enum class LossyDeltaStep {
  // scale = max|value - base| / qmax(lossy_delta_bits): the step follows
  // the size of the change, finer than a keyframe's.
  kDeltaRange,
  // scale = lossy_delta_step_factor * max|value| / qmax(lossy_keyframe_bits)
  // (plus lossy_kernel_extra_bits for kernels),
  // the step a keyframe of the same values would use, so a delta's error
  // bound equals a keyframe's (coarser when a change needs more than
  // qmax(lossy_delta_bits) steps).
  kKeyframeMax,
  // scale = lossy_delta_step_factor * 4 std(value) / qmax(keyframe bits).
  kKeyframeStd,
};

struct BlobEncodeOptions {
  pb::Codec codec = pb::CODEC_DELTA;
  int zstd_level = 1;
  int lossy_keyframe_bits = 7;  // in [2, 16]
  int lossy_delta_bits = 6;     // in [2, 16]
  LossyDeltaStep lossy_delta_step = LossyDeltaStep::kDeltaRange;
  double lossy_delta_step_factor = 1.0;  // kKeyframe*: step multiplier, > 0
  // Lossy: tensors with fewer elements (biases, BatchNorm statistics, small
  // layers) are quantized with lossy_small_bits, or stored losslessly when
  // that is 0: they cost little and a model is most sensitive there.
  int64_t lossy_min_elements = 1024;
  int lossy_small_bits = 16;
  // Lossy: tensors of three or more dimensions (convolution kernels) get
  // this many more bits than lossy_keyframe_bits / lossy_delta_bits, capped
  // at 16. A kernel weight is applied at every output position, a Linear
  // weight once per output, so a kernel's rounding error reaches the model's
  // output many times over (docs/BENCHMARKS.md, issue 13). In [0, 14].
  int lossy_kernel_extra_bits = 1;
  // Lossy: quantize tensors of two or more dimensions with error diffusion
  // along each output row (QuantizeDifferenceDiffused).
  bool lossy_error_diffusion = false;
};

// Working memory of EncodeBlob. A writer keeps one and passes it to every
// call, so large buffers are reused instead of faulted in afresh.
struct BlobBuffers {
  std::string scratch, scratch2, payload;
};

// A blob file is `head` followed by `payload`.
struct EncodedBlob {
  std::string head;           // magic, lengths, header CRC, header
  absl::string_view payload;  // points into BlobBuffers::payload
  uint64_t size = 0;          // head + payload
  uint32_t crc32 = 0;         // of the whole file
  pb::BlobHeader header;
  double max_abs_error = 0;  // lossy: largest |true - stored| of any value
  uint64_t raw_bytes = 0;
};

// Encodes `state` (CPU, contiguous) as the blob of `epoch`. With `base`
// (the state a reader reconstructs for `base_epoch`) the delta and lossy
// codecs store differences against it; a tensor without a same-named,
// same-shaped, same-dtype base is stored whole. With base == nullptr the
// blob is a keyframe. On return `*reconstruction` holds what a reader will
// decode: `state` itself for lossless codecs (moved in), the dequantized
// values for lossy. The result's payload points into `*buffers`, valid until
// the next use of `buffers`. REQUIRES: buffers != nullptr.
absl::StatusOr<EncodedBlob> EncodeBlob(int64_t epoch, NamedTensors state,
                                       const NamedTensors* base,
                                       int64_t base_epoch,
                                       const BlobEncodeOptions& options,
                                       BlobBuffers* buffers,
                                       NamedTensors* reconstruction);

// Parses and validates the framing and header of a blob file: magic, header
// CRC, the records tiling the payload exactly, sizes consistent with shapes.
// `file_name` and `epoch` appear in every error.
absl::StatusOr<pb::BlobHeader> ParseBlobHeader(absl::string_view bytes,
                                               const std::string& file_name,
                                               int64_t epoch);

// Decodes the blob (already parsed into `header`) onto `*state`, which holds
// the base epoch's reconstruction for delta records (updated in place; memory
// stays one model plus the blob) and may be empty for a keyframe. Checks
// every record's CRC. On return `*state` holds exactly the blob's tensors in
// its order. On error `*state` is unspecified.
absl::Status DecodeBlob(absl::string_view bytes, const pb::BlobHeader& header,
                        const std::string& file_name, NamedTensors* state);

}  // namespace posttrain

#endif  // POSTTRAIN_HISTORY_FILE_FORMAT_H_

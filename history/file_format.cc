#include "history/file_format.h"

#include <ATen/ops/empty.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "history/codec.h"

namespace posttrain {
namespace {

// Tensor bytes are stored as they are in memory; the format is little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the history format needs a little-endian host");

constexpr char kManifestMagic[8] = {'P', 'T', 'H', 'M', 'A', 'N', 'I', '1'};
constexpr char kBlobMagic[8] = {'P', 'T', 'H', 'B', 'L', 'O', 'B', '1'};
constexpr size_t kManifestPrefix = 24;  // magic, version, length, crc
constexpr size_t kBlobPrefix = 16;      // magic, header length, header crc

// Fuzzing builds (fuzz/CMakeLists.txt defines the macro, as OSS-Fuzz does)
// skip the CRC comparisons, so that mutated inputs reach the parsing and
// decoding past them; every other check stays.
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
constexpr bool kCheckCrc = false;
#else
constexpr bool kCheckCrc = true;
#endif
constexpr int kMaxDims = 16;
constexpr uint32_t kMaxChainDepth = 1u << 16;

void PutU32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(b, 4);
}
void PutU64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(b, 8);
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= uint32_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= uint64_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return v;
}

struct DTypeInfo {
  pb::DType dtype;
  at::ScalarType scalar;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {pb::DTYPE_FLOAT32, at::kFloat, 4}, {pb::DTYPE_FLOAT64, at::kDouble, 8},
    {pb::DTYPE_FLOAT16, at::kHalf, 2},  {pb::DTYPE_BFLOAT16, at::kBFloat16, 2},
    {pb::DTYPE_INT64, at::kLong, 8},    {pb::DTYPE_INT32, at::kInt, 4},
    {pb::DTYPE_INT16, at::kShort, 2},   {pb::DTYPE_INT8, at::kChar, 1},
    {pb::DTYPE_UINT8, at::kByte, 1},    {pb::DTYPE_BOOL, at::kBool, 1},
};

const DTypeInfo* InfoOf(at::ScalarType t) {
  for (const auto& i : kDTypes) {
    if (i.scalar == t) return &i;
  }
  return nullptr;
}
const DTypeInfo* InfoOf(pb::DType t) {
  for (const auto& i : kDTypes) {
    if (i.dtype == t) return &i;
  }
  return nullptr;
}

uint8_t* Bytes(const at::Tensor& t) {
  return static_cast<uint8_t*>(t.data_ptr());
}

bool SameLayout(const at::Tensor& a, const at::Tensor& b) {
  return a.defined() && b.defined() && a.scalar_type() == b.scalar_type() &&
         a.sizes() == b.sizes();
}

absl::Status BlobError(const std::string& file, int64_t epoch,
                       absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat("corrupt blob '", file, "' (epoch ", epoch, "): ", what));
}

}  // namespace

std::string BlobFileName(int64_t epoch) {
  return absl::StrFormat("epoch-%08d.blob", epoch);
}

std::string EncodeManifestFile(const pb::Manifest& manifest) {
  std::string payload;
  manifest.SerializeToString(&payload);
  std::string out(kManifestMagic, 8);
  PutU32(&out, kHistoryFormatVersion);
  PutU64(&out, payload.size());
  // The CRC covers version and length too, so a damaged version field reads
  // as corruption, not as a newer format.
  PutU32(&out, Crc32(payload, Crc32(absl::string_view(out).substr(8, 12))));
  out += payload;
  return out;
}

absl::StatusOr<pb::Manifest> DecodeManifestFile(absl::string_view bytes,
                                                const std::string& file_name) {
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat("corrupt manifest '", file_name, "': ", what));
  };
  if (bytes.size() < kManifestPrefix) {
    return bad(absl::StrCat("truncated (", bytes.size(), " bytes)"));
  }
  if (std::memcmp(bytes.data(), kManifestMagic, 8) != 0) {
    return bad("not a posttrain history manifest (bad magic)");
  }
  const uint64_t len = GetU64(bytes.data() + 12);
  if (len > kMaxManifestBytes || len != bytes.size() - kManifestPrefix) {
    return bad(absl::StrCat("declares ", len, " payload bytes but holds ",
                            bytes.size() - kManifestPrefix));
  }
  const absl::string_view payload = bytes.substr(kManifestPrefix);
  if (kCheckCrc &&
      Crc32(payload, Crc32(bytes.substr(8, 12))) != GetU32(bytes.data() + 20)) {
    return bad("checksum mismatch");
  }
  const uint32_t version = GetU32(bytes.data() + 8);
  if (version != kHistoryFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("manifest '", file_name, "': format version ", version,
                     " is not supported (this library reads version ",
                     kHistoryFormatVersion, ")"));
  }
  pb::Manifest m;
  if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return bad("payload is not a valid Manifest message");
  }
  if (m.format_version() != kHistoryFormatVersion) {
    return bad(absl::StrCat("payload format_version ", m.format_version()));
  }
  if (m.keyframe_interval() < 1 || m.keyframe_interval() > kMaxChainDepth) {
    return bad(absl::StrCat("keyframe_interval ", m.keyframe_interval(),
                            " outside [1, ", kMaxChainDepth, "]"));
  }
  if (!pb::Codec_IsValid(m.codec()) || m.codec() == pb::CODEC_UNSPECIFIED) {
    return bad(absl::StrCat("unknown codec ", static_cast<int>(m.codec())));
  }
  absl::flat_hash_map<int64_t, const pb::EpochEntry*> by_epoch;
  int64_t prev = -1;
  for (const pb::EpochEntry& e : m.epochs()) {
    const std::string where = absl::StrCat("epoch ", e.epoch(), ": ");
    if (e.epoch() < 0 || e.epoch() <= prev) {
      return bad(absl::StrCat(where, "epochs must be ascending and >= 0"));
    }
    prev = e.epoch();
    if (e.blob_file() != BlobFileName(e.epoch())) {
      return bad(absl::StrCat(where, "blob file name '", e.blob_file(),
                              "' is not the canonical '",
                              BlobFileName(e.epoch()), "'"));
    }
    if (e.blob_size() < kBlobPrefix || e.blob_size() > kMaxBlobBytes) {
      return bad(
          absl::StrCat(where, "blob size ", e.blob_size(), " out of range"));
    }
    if (!pb::Codec_IsValid(e.codec()) || e.codec() == pb::CODEC_UNSPECIFIED) {
      return bad(absl::StrCat(where, "unknown codec"));
    }
    if (e.base_epoch() == -1) {
      if (e.chain_depth() != 0)
        return bad(absl::StrCat(where, "keyframe with depth"));
    } else {
      auto it = by_epoch.find(e.base_epoch());
      if (it == by_epoch.end()) {
        return bad(absl::StrCat(where, "base epoch ", e.base_epoch(),
                                " is not in the manifest"));
      }
      if (e.chain_depth() != it->second->chain_depth() + 1 ||
          e.chain_depth() > kMaxChainDepth) {
        return bad(absl::StrCat(where, "inconsistent chain depth"));
      }
    }
    by_epoch[e.epoch()] = &e;
  }
  return m;
}

absl::StatusOr<EncodedBlob> EncodeBlob(int64_t epoch, NamedTensors state,
                                       const NamedTensors* base,
                                       int64_t base_epoch,
                                       const BlobEncodeOptions& options,
                                       BlobBuffers* buffers,
                                       NamedTensors* reconstruction) {
  EncodedBlob blob;
  pb::BlobHeader& header = blob.header;
  header.set_epoch(epoch);
  header.set_codec(options.codec);
  header.set_base_epoch(base ? base_epoch : -1);
  absl::flat_hash_map<absl::string_view, const at::Tensor*> base_by_name;
  if (base) {
    for (const NamedTensor& nt : *base) base_by_name[nt.name] = &nt.tensor;
  }
  const bool lossy = options.codec == pb::CODEC_LOSSY;
  for (int bits : {options.lossy_keyframe_bits, options.lossy_delta_bits}) {
    if (lossy && (bits < 2 || bits > 16)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "lossy quantization bits must be in [2, 16], got ", bits));
    }
  }
  if (lossy && (options.lossy_kernel_extra_bits < 0 ||
                options.lossy_kernel_extra_bits > 14)) {
    return absl::InvalidArgumentError(
        absl::StrCat("lossy_kernel_extra_bits must be in [0, 14], got ",
                     options.lossy_kernel_extra_bits));
  }
  if (lossy && !(options.lossy_delta_step_factor > 0.0 &&
                 std::isfinite(options.lossy_delta_step_factor))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lossy_delta_step_factor must be positive and finite, got ",
        options.lossy_delta_step_factor));
  }
  std::string& payload = buffers->payload;
  std::string& scratch = buffers->scratch;
  std::string& scratch2 = buffers->scratch2;
  // Room for the worst case up front: records are compressed straight into
  // the payload, which then never reallocates.
  size_t capacity = 0;
  for (const NamedTensor& nt : state) {
    if (nt.tensor.defined()) {
      capacity +=
          CompressPlanesBound(nt.tensor.nbytes(), nt.tensor.element_size());
    }
  }
  payload.clear();
  payload.reserve(capacity);
  uint32_t payload_crc = 0;
  NamedTensors recon;
  for (NamedTensor& nt : state) {
    const at::Tensor& t = nt.tensor;
    const DTypeInfo* info = InfoOf(t.scalar_type());
    if (info == nullptr || !t.is_contiguous() ||
        t.device().type() != at::kCPU || t.dim() > kMaxDims) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", nt.name,
          "': only contiguous CPU tensors of standard dtypes can be stored"));
    }
    const size_t n = t.nbytes();
    if (n > kMaxTensorBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", nt.name, "' has ", n,
                       " bytes; the store holds tensors of "
                       "at most ",
                       kMaxTensorBytes));
    }
    const uint8_t* src = Bytes(t);
    pb::TensorRecord* r = header.add_tensors();
    r->set_name(nt.name);
    r->set_dtype(info->dtype);
    for (int64_t d : t.sizes()) r->add_shape(d);
    r->set_raw_size(n);
    r->set_offset(payload.size());
    blob.raw_bytes += n;
    const at::Tensor* b = nullptr;
    if (auto it = base_by_name.find(nt.name);
        it != base_by_name.end() && SameLayout(*it->second, t)) {
      b = it->second;
    }
    const size_t before = payload.size();
    at::Tensor recon_t = t;
    // Quantize only finite values against a finite base; anything else is
    // stored losslessly (XOR against the base, or whole).
    const bool small = t.numel() < options.lossy_min_elements;
    const bool quantize =
        lossy && info->dtype == pb::DTYPE_FLOAT32 &&
        (!small || options.lossy_small_bits > 0) &&
        AllFinite(reinterpret_cast<const float*>(src), n / 4) &&
        (b == nullptr ||
         AllFinite(reinterpret_cast<const float*>(Bytes(*b)), n / 4));
    if (options.codec == pb::CODEC_RAW) {
      r->set_encoding(pb::ENCODING_RAW);
      payload.append(reinterpret_cast<const char*>(src), n);
    } else {
      float scale = -1.0f;
      // Convolution kernels (3+ dimensions) get extra bits: each weight is
      // applied at every output position (BlobEncodeOptions).
      const int kernel_extra =
          t.dim() >= 3 ? options.lossy_kernel_extra_bits : 0;
      const int keyframe_bits =
          std::min(16, options.lossy_keyframe_bits + kernel_extra);
      const int bits =
          small ? options.lossy_small_bits
          : b   ? std::min(16, options.lossy_delta_bits + kernel_extra)
                : keyframe_bits;
      const size_t count = n / 4;
      const size_t qbytes = count * QuantBytes(bits);
      const float* basef =
          b ? reinterpret_cast<const float*>(Bytes(*b)) : nullptr;
      size_t diffusion_row = 1;
      if (quantize) {
        const float* valuef = reinterpret_cast<const float*>(src);
        // A delta's step: the range rule's (min_step 0, the default), or
        // with kKeyframeMax / kKeyframeStd at least the step a keyframe of
        // these values would use, so its error bound is a keyframe's
        // (measured worse on the example: docs/BENCHMARKS.md, issue 13).
        float min_step = 0.0f;
        if (b != nullptr && !small) {
          const auto factor =
              static_cast<float>(options.lossy_delta_step_factor);
          if (options.lossy_delta_step == LossyDeltaStep::kKeyframeMax) {
            min_step = MaxAbsStep(valuef, count, keyframe_bits);
            if (factor != 1.0f) min_step *= factor;
          } else if (options.lossy_delta_step == LossyDeltaStep::kKeyframeStd) {
            min_step = factor * StdStep(valuef, count, keyframe_bits);
          }
        }
        scratch.resize(qbytes);
        diffusion_row =
            options.lossy_error_diffusion && t.dim() >= 2 && t.size(0) > 0
                ? count / static_cast<size_t>(t.size(0))
                : 1;
        scale = QuantizeDifferenceDiffused(
            valuef, basef, count, bits, min_step, diffusion_row,
            reinterpret_cast<uint8_t*>(scratch.data()));
      }
      if (scale >= 0.0f) {  // quantized (negative: not quantizable)
        recon_t = at::empty(t.sizes(), t.options());
        float* rf = reinterpret_cast<float*>(Bytes(recon_t));
        Dequantize(reinterpret_cast<const uint8_t*>(scratch.data()), basef,
                   count, bits, scale, rf);
        const double err =
            MaxAbsDifference(reinterpret_cast<const float*>(src), rf, count);
        PT_RETURN_IF_ERROR(CompressPlanes(
            reinterpret_cast<const uint8_t*>(scratch.data()), qbytes,
            QuantBytes(bits), options.zstd_level, &scratch2, &payload));
        r->set_encoding(pb::ENCODING_QUANT_ZSTD);
        r->set_scale(scale);
        r->set_quant_bits(bits);
        r->set_relative_to_base(b != nullptr);
        r->set_max_abs_error(err);
        if (diffusion_row > 1) r->set_diffusion_row(diffusion_row);
        blob.max_abs_error = std::max(blob.max_abs_error, err);
      } else {
        const uint8_t* plain = src;
        if (b && options.codec != pb::CODEC_ZSTD) {
          r->set_encoding(pb::ENCODING_XOR_SHUFFLE_ZSTD);
          scratch2.resize(n);
          XorBytes(src, Bytes(*b), n,
                   reinterpret_cast<uint8_t*>(scratch2.data()));
          plain = reinterpret_cast<const uint8_t*>(scratch2.data());
        } else {
          r->set_encoding(pb::ENCODING_SHUFFLE_ZSTD);
        }
        PT_RETURN_IF_ERROR(CompressPlanes(
            plain, n, info->size, options.zstd_level, &scratch, &payload));
      }
    }
    const uint64_t stored = payload.size() - before;
    r->set_stored_size(stored);
    r->set_crc32(Crc32(absl::string_view(payload).substr(before)));
    payload_crc = Crc32Combine(payload_crc, r->crc32(), stored);
    recon.push_back({nt.name, std::move(recon_t)});
  }
  header.set_payload_size(payload.size());
  std::string hbytes;
  header.SerializeToString(&hbytes);
  if (hbytes.size() > kMaxBlobHeaderBytes ||
      kBlobPrefix + hbytes.size() + payload.size() > kMaxBlobBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "epoch ", epoch, ": the state is too large for one blob (header ",
        hbytes.size(), " bytes, payload ", payload.size(), " bytes)"));
  }
  blob.head.assign(kBlobMagic, 8);
  PutU32(&blob.head, static_cast<uint32_t>(hbytes.size()));
  PutU32(&blob.head, Crc32(hbytes));
  blob.head += hbytes;
  blob.payload = payload;
  blob.size = blob.head.size() + payload.size();
  blob.crc32 = Crc32Combine(Crc32(blob.head), payload_crc, payload.size());
  if (reconstruction) *reconstruction = std::move(recon);
  return blob;
}

absl::StatusOr<pb::BlobHeader> ParseBlobHeader(absl::string_view bytes,
                                               const std::string& file_name,
                                               int64_t epoch) {
  if (bytes.size() < kBlobPrefix) {
    return BlobError(file_name, epoch,
                     absl::StrCat("truncated (", bytes.size(), " bytes)"));
  }
  if (std::memcmp(bytes.data(), kBlobMagic, 8) != 0) {
    return BlobError(file_name, epoch, "bad magic");
  }
  const uint64_t hlen = GetU32(bytes.data() + 8);
  if (hlen > kMaxBlobHeaderBytes || hlen > bytes.size() - kBlobPrefix) {
    return BlobError(file_name, epoch,
                     absl::StrCat("header length ", hlen, " exceeds the file"));
  }
  const absl::string_view hbytes = bytes.substr(kBlobPrefix, hlen);
  if (kCheckCrc && Crc32(hbytes) != GetU32(bytes.data() + 12)) {
    return BlobError(file_name, epoch, "header checksum mismatch");
  }
  pb::BlobHeader h;
  if (!h.ParseFromArray(hbytes.data(), static_cast<int>(hbytes.size()))) {
    return BlobError(file_name, epoch, "header is not a valid BlobHeader");
  }
  if (h.epoch() != epoch) {
    return BlobError(file_name, epoch,
                     absl::StrCat("header says epoch ", h.epoch()));
  }
  const uint64_t payload_size = bytes.size() - kBlobPrefix - hlen;
  if (h.payload_size() != payload_size) {
    return BlobError(file_name, epoch,
                     absl::StrCat("payload is ", payload_size,
                                  " bytes, header says ", h.payload_size()));
  }
  uint64_t offset = 0;
  absl::flat_hash_map<std::string, bool> names;
  for (const pb::TensorRecord& r : h.tensors()) {
    const std::string where = absl::StrCat("tensor '", r.name(), "': ");
    if (!names.emplace(r.name(), true).second) {
      return BlobError(file_name, epoch, where + "appears twice");
    }
    const DTypeInfo* info = InfoOf(r.dtype());
    if (info == nullptr)
      return BlobError(file_name, epoch, where + "unknown dtype");
    if (r.shape_size() > kMaxDims)
      return BlobError(file_name, epoch, where + "too many dims");
    uint64_t numel = 1;
    for (int64_t d : r.shape()) {
      if (d < 0 ||
          (d > 0 && numel > kMaxTensorBytes / static_cast<uint64_t>(d))) {
        return BlobError(file_name, epoch, where + "invalid shape");
      }
      numel *= static_cast<uint64_t>(d);
    }
    if (numel > kMaxTensorBytes / info->size ||
        r.raw_size() != numel * info->size) {
      return BlobError(file_name, epoch,
                       where + "raw size does not match shape");
    }
    if (r.offset() != offset || r.stored_size() > payload_size - offset) {
      return BlobError(file_name, epoch,
                       where + "record does not fit the payload");
    }
    offset += r.stored_size();
    switch (r.encoding()) {
      case pb::ENCODING_RAW:
        if (r.stored_size() != r.raw_size()) {
          return BlobError(file_name, epoch,
                           where + "raw record size mismatch");
        }
        break;
      case pb::ENCODING_SHUFFLE_ZSTD:
      case pb::ENCODING_XOR_SHUFFLE_ZSTD:
        break;
      case pb::ENCODING_QUANT_ZSTD:
        if (r.dtype() != pb::DTYPE_FLOAT32 || r.quant_bits() < 2 ||
            r.quant_bits() > 16 || !(r.scale() >= 0.0) ||
            !std::isfinite(r.scale())) {
          return BlobError(file_name, epoch,
                           where + "invalid quantized record");
        }
        break;
      default:
        return BlobError(file_name, epoch, where + "unknown encoding");
    }
  }
  if (offset != payload_size) {
    return BlobError(file_name, epoch, "records do not cover the payload");
  }
  return h;
}

absl::Status DecodeBlob(absl::string_view bytes, const pb::BlobHeader& header,
                        const std::string& file_name, NamedTensors* state) {
  const int64_t epoch = header.epoch();
  absl::flat_hash_map<std::string, size_t> base_index;
  for (size_t i = 0; i < state->size(); ++i) base_index[(*state)[i].name] = i;
  const absl::string_view payload =
      bytes.substr(bytes.size() - header.payload_size());
  NamedTensors out;
  out.reserve(header.tensors_size());
  std::string scratch, scratch2;
  absl::Status status;
  PT_RETURN_IF_ERROR(CallTorch("decoding blob", [&] {
    for (const pb::TensorRecord& r : header.tensors()) {
      const std::string where = absl::StrCat("tensor '", r.name(), "': ");
      const absl::string_view stored =
          payload.substr(r.offset(), r.stored_size());
      if (kCheckCrc && Crc32(stored) != r.crc32()) {
        status = BlobError(file_name, epoch, where + "checksum mismatch");
        return;
      }
      const DTypeInfo* info = InfoOf(r.dtype());
      std::vector<int64_t> shape(r.shape().begin(), r.shape().end());
      const size_t n = r.raw_size();
      at::Tensor* base = nullptr;
      if (auto it = base_index.find(r.name()); it != base_index.end()) {
        at::Tensor& cand = (*state)[it->second].tensor;
        if (cand.defined() && cand.scalar_type() == info->scalar &&
            cand.sizes() == at::IntArrayRef(shape)) {
          base = &cand;
        }
      }
      const bool needs_base =
          r.encoding() == pb::ENCODING_XOR_SHUFFLE_ZSTD ||
          (r.encoding() == pb::ENCODING_QUANT_ZSTD && r.relative_to_base());
      if (needs_base && base == nullptr) {
        status = absl::FailedPreconditionError(
            absl::StrCat("blob '", file_name, "' (epoch ", epoch, "): ", where,
                         "delta record without its base tensor of epoch ",
                         header.base_epoch()));
        return;
      }
      at::Tensor t =
          needs_base
              ? *base
              : at::empty(shape, at::TensorOptions().dtype(info->scalar));
      uint8_t* dst = Bytes(t);
      absl::Status s;
      switch (r.encoding()) {
        case pb::ENCODING_RAW:
          std::memcpy(dst, stored.data(), n);
          break;
        case pb::ENCODING_SHUFFLE_ZSTD:
        case pb::ENCODING_XOR_SHUFFLE_ZSTD:
          s = DecompressPlanes(stored, n, info->size,
                               r.encoding() == pb::ENCODING_XOR_SHUFFLE_ZSTD,
                               &scratch, dst);
          break;
        case pb::ENCODING_QUANT_ZSTD: {
          const int bits = static_cast<int>(r.quant_bits());
          const size_t count = n / 4;
          const size_t qbytes = count * QuantBytes(bits);
          scratch2.resize(qbytes);
          s = DecompressPlanes(stored, qbytes, QuantBytes(bits), false,
                               &scratch,
                               reinterpret_cast<uint8_t*>(scratch2.data()));
          if (s.ok()) {
            float* f = reinterpret_cast<float*>(dst);
            Dequantize(reinterpret_cast<const uint8_t*>(scratch2.data()),
                       r.relative_to_base() ? f : nullptr, count, bits,
                       static_cast<float>(r.scale()), f);
          }
          break;
        }
        default:
          s = absl::DataLossError("unknown encoding");
      }
      if (!s.ok()) {
        status = BlobError(file_name, epoch, where + std::string(s.message()));
        return;
      }
      out.push_back({r.name(), std::move(t)});
    }
  }));
  PT_RETURN_IF_ERROR(status);
  *state = std::move(out);
  return absl::OkStatus();
}

}  // namespace posttrain

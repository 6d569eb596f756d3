#include "history/codec.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace posttrain {

uint32_t Crc32(absl::string_view data, uint32_t crc) {
  // zlib's crc32 takes a uInt length; feed large inputs in pieces.
  const auto* p = reinterpret_cast<const Bytef*>(data.data());
  size_t left = data.size();
  uLong c = crc;
  while (left > 0) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(left, 1u << 30));
    c = crc32(c, p, chunk);
    p += chunk;
    left -= chunk;
  }
  return static_cast<uint32_t>(c);
}

uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b) {
  return static_cast<uint32_t>(
      crc32_combine(crc_a, crc_b, static_cast<z_off_t>(length_b)));
}

namespace {

template <size_t kElem>
void ShuffleFixed(const uint8_t* in, size_t count, uint8_t* out) {
  for (size_t i = 0; i < count; ++i) {
    for (size_t j = 0; j < kElem; ++j) out[j * count + i] = in[i * kElem + j];
  }
}

template <size_t kElem>
void UnshuffleFixed(const uint8_t* in, size_t count, uint8_t* out) {
  for (size_t i = 0; i < count; ++i) {
    for (size_t j = 0; j < kElem; ++j) out[i * kElem + j] = in[j * count + i];
  }
}

}  // namespace

void ShuffleBytes(const uint8_t* in, size_t n, size_t elem, uint8_t* out) {
  const size_t count = elem == 0 ? 0 : n / elem;
  switch (elem) {
    case 1:
      std::memcpy(out, in, n);
      return;
    case 2:
      return ShuffleFixed<2>(in, count, out);
    case 4:
      return ShuffleFixed<4>(in, count, out);
    case 8:
      return ShuffleFixed<8>(in, count, out);
    default:
      for (size_t i = 0; i < count; ++i) {
        for (size_t j = 0; j < elem; ++j) out[j * count + i] = in[i * elem + j];
      }
  }
}

void UnshuffleBytes(const uint8_t* in, size_t n, size_t elem, uint8_t* out) {
  const size_t count = elem == 0 ? 0 : n / elem;
  switch (elem) {
    case 1:
      std::memcpy(out, in, n);
      return;
    case 2:
      return UnshuffleFixed<2>(in, count, out);
    case 4:
      return UnshuffleFixed<4>(in, count, out);
    case 8:
      return UnshuffleFixed<8>(in, count, out);
    default:
      for (size_t i = 0; i < count; ++i) {
        for (size_t j = 0; j < elem; ++j) out[i * elem + j] = in[j * count + i];
      }
  }
}

void UnshuffleXorBytes(const uint8_t* in, size_t n, size_t elem,
                       uint8_t* inout) {
  const size_t count = elem == 0 ? 0 : n / elem;
  if (elem == 4) {
    for (size_t i = 0; i < count; ++i) {
      for (size_t j = 0; j < 4; ++j) inout[i * 4 + j] ^= in[j * count + i];
    }
    return;
  }
  for (size_t i = 0; i < count; ++i) {
    for (size_t j = 0; j < elem; ++j) inout[i * elem + j] ^= in[j * count + i];
  }
}

void XorBytes(const uint8_t* a, const uint8_t* b, size_t n, uint8_t* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a + i, 8);
    std::memcpy(&y, b + i, 8);
    x ^= y;
    std::memcpy(out + i, &x, 8);
  }
  for (; i < n; ++i) out[i] = a[i] ^ b[i];
}

size_t ZstdCompressBound(size_t n) { return ZSTD_compressBound(n); }

namespace {

// One compression and one decompression context per thread, reused: a fresh
// context per call (what ZSTD_compress does) allocates and clears its tables
// every time.
struct ZstdContexts {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_DCtx* d = ZSTD_createDCtx();
  ~ZstdContexts() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
};

ZstdContexts& Contexts() {
  thread_local ZstdContexts contexts;
  return contexts;
}

}  // namespace

absl::Status ZstdCompressAppend(absl::string_view data, int level,
                                std::string* out) {
  const size_t bound = ZSTD_compressBound(data.size());
  const size_t old = out->size();
  out->resize(old + bound);
  const size_t n = ZSTD_compressCCtx(Contexts().c, out->data() + old, bound,
                                     data.data(), data.size(), level);
  if (ZSTD_isError(n)) {
    out->resize(old);
    return absl::InternalError(
        absl::StrCat("zstd compression failed: ", ZSTD_getErrorName(n)));
  }
  out->resize(old + n);
  return absl::OkStatus();
}

absl::Status ZstdDecompress(absl::string_view frame, uint8_t* out,
                            size_t out_size) {
  const unsigned long long declared =
      ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR ||
      declared == ZSTD_CONTENTSIZE_UNKNOWN || declared != out_size) {
    return absl::DataLossError(absl::StrCat(
        "zstd frame does not declare the expected ", out_size, " bytes"));
  }
  const size_t n = ZSTD_decompressDCtx(Contexts().d, out, out_size,
                                       frame.data(), frame.size());
  if (ZSTD_isError(n)) {
    return absl::DataLossError(
        absl::StrCat("zstd decompression failed: ", ZSTD_getErrorName(n)));
  }
  if (n != out_size) {
    return absl::DataLossError(
        absl::StrCat("zstd frame yielded ", n, " bytes, expected ", out_size));
  }
  return absl::OkStatus();
}

double ByteEntropy(const uint8_t* data, size_t n) {
  if (n == 0) return 0.0;
  // A strided sample of at most 16 Ki bytes estimates the entropy to a few
  // hundredths of a bit; four histograms break the store-to-load chain.
  const size_t stride = std::max<size_t>(1, n / 16384);
  uint32_t counts[4][256] = {};
  size_t total = 0, i = 0;
  for (; i + 3 * stride < n; i += 4 * stride) {
    ++counts[0][data[i]];
    ++counts[1][data[i + stride]];
    ++counts[2][data[i + 2 * stride]];
    ++counts[3][data[i + 3 * stride]];
    total += 4;
  }
  for (; i < n; i += stride) {
    ++counts[0][data[i]];
    ++total;
  }
  double h = 0.0;
  for (int b = 0; b < 256; ++b) {
    const uint32_t c =
        counts[0][b] + counts[1][b] + counts[2][b] + counts[3][b];
    if (c == 0) continue;
    const double p = static_cast<double>(c) / total;
    h -= p * std::log2(p);
  }
  return h;
}

size_t CompressPlanesBound(size_t n, size_t elem) {
  if (elem == 0) elem = 1;
  return elem * (5 + ZSTD_compressBound(n / elem));
}

absl::Status CompressPlanes(const uint8_t* data, size_t n, size_t elem,
                            int level, std::string* scratch, std::string* out) {
  if (elem == 0 || n % elem != 0) {
    return absl::InvalidArgumentError(
        "byte count is not a multiple of the element size");
  }
  scratch->resize(n);
  auto* shuffled = reinterpret_cast<uint8_t*>(scratch->data());
  ShuffleBytes(data, n, elem, shuffled);
  const size_t plane = n / elem;
  for (size_t p = 0; p < elem; ++p) {
    const uint8_t* src = shuffled + p * plane;
    const size_t header_at = out->size();
    out->append(5, '\0');
    uint8_t kind = 0;
    if (ByteEntropy(src, plane) < kRawPlaneEntropyBits) {
      kind = 1;
      absl::Status s = ZstdCompressAppend(
          absl::string_view(reinterpret_cast<const char*>(src), plane), level,
          out);
      if (!s.ok()) return s;
      // A frame larger than the plane is replaced by the raw plane.
      if (out->size() - header_at - 5 >= plane) {
        out->resize(header_at + 5);
        kind = 0;
      }
    }
    if (kind == 0) out->append(reinterpret_cast<const char*>(src), plane);
    const size_t stored = out->size() - header_at - 5;
    if (stored > std::numeric_limits<uint32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat("a byte plane of ", stored,
                       " bytes exceeds the format's 4 GiB limit"));
    }
    const uint32_t len = static_cast<uint32_t>(stored);
    (*out)[header_at] = static_cast<char>(kind);
    for (int i = 0; i < 4; ++i) {
      (*out)[header_at + 1 + i] = static_cast<char>((len >> (8 * i)) & 0xff);
    }
  }
  return absl::OkStatus();
}

absl::Status DecompressPlanes(absl::string_view in, size_t n, size_t elem,
                              bool xor_into, std::string* scratch,
                              uint8_t* out) {
  if (elem == 0 || n % elem != 0) {
    return absl::DataLossError(
        "byte count is not a multiple of the element size");
  }
  scratch->resize(n);
  auto* shuffled = reinterpret_cast<uint8_t*>(scratch->data());
  const size_t plane = n / elem;
  size_t pos = 0;
  for (size_t p = 0; p < elem; ++p) {
    if (in.size() - pos < 5)
      return absl::DataLossError("truncated plane header");
    const uint8_t kind = static_cast<uint8_t>(in[pos]);
    uint32_t len = 0;
    for (int i = 0; i < 4; ++i) {
      len |= uint32_t{static_cast<uint8_t>(in[pos + 1 + i])} << (8 * i);
    }
    pos += 5;
    if (len > in.size() - pos)
      return absl::DataLossError("plane exceeds the record");
    const absl::string_view body = in.substr(pos, len);
    pos += len;
    if (kind == 0) {
      if (len != plane)
        return absl::DataLossError("raw plane has the wrong size");
      std::memcpy(shuffled + p * plane, body.data(), plane);
    } else if (kind == 1) {
      absl::Status s = ZstdDecompress(body, shuffled + p * plane, plane);
      if (!s.ok()) return s;
    } else {
      return absl::DataLossError("unknown plane kind");
    }
  }
  if (pos != in.size())
    return absl::DataLossError("bytes after the last plane");
  if (xor_into) {
    UnshuffleXorBytes(shuffled, n, elem, out);
  } else {
    UnshuffleBytes(shuffled, n, elem, out);
  }
  return absl::OkStatus();
}

float QuantizeDifference(const float* value, const float* base, size_t count,
                         int bits, uint8_t* q_out) {
  return QuantizeDifferenceWithStep(value, base, count, bits, 0.0f, q_out);
}

float MaxAbsStep(const float* value, size_t count, int bits) {
  const int qmax = (1 << (bits - 1)) - 1;
  float max_abs = 0.0f;
  for (size_t i = 0; i < count; ++i) {
    max_abs = std::max(max_abs, std::fabs(value[i]));
  }
  return max_abs / static_cast<float>(qmax);
}

float StdStep(const float* value, size_t count, int bits) {
  const int qmax = (1 << (bits - 1)) - 1;
  if (count == 0) return 0.0f;
  double sum = 0.0, sum2 = 0.0;
  for (size_t i = 0; i < count; ++i) {
    sum += value[i];
    sum2 += static_cast<double>(value[i]) * value[i];
  }
  const double mean = sum / count;
  const double var = std::max(0.0, sum2 / count - mean * mean);
  return static_cast<float>(4.0 * std::sqrt(var) / qmax);
}

float QuantizeDifferenceWithStep(const float* value, const float* base,
                                 size_t count, int bits, float min_step,
                                 uint8_t* q_out) {
  return QuantizeDifferenceDiffused(value, base, count, bits, min_step, 1,
                                    q_out);
}

float QuantizeDifferenceDiffused(const float* value, const float* base,
                                 size_t count, int bits, float min_step,
                                 size_t row_length, uint8_t* q_out) {
  const int qmax = (1 << (bits - 1)) - 1;
  float max_abs = 0.0f;
  for (size_t i = 0; i < count; ++i) {
    const float d = value[i] - (base ? base[i] : 0.0f);
    max_abs = std::max(max_abs, std::fabs(d));
  }
  // The step that fits every difference in qmax steps, never finer than
  // min_step (a NaN min_step fails the comparison: the range step stays).
  float scale = max_abs / static_cast<float>(qmax);
  if (min_step > scale) scale = min_step;
  if (!std::isfinite(scale) || (scale != 0.0f && !std::isnormal(scale)) ||
      !std::isfinite(1.0f / (scale > 0.0f ? scale : 1.0f))) {
    return -1.0f;  // not quantizable: the caller stores the values losslessly
  }
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  const size_t row = std::max<size_t>(row_length, 1);
  // carry: the summed error (true - reconstructed) of the row so far.
  float carry = 0.0f;
  for (size_t i = 0; i < count; ++i) {
    if (i % row == 0) carry = 0.0f;
    const float b = base ? base[i] : 0.0f;
    const float d = value[i] - b + carry;
    float r = std::nearbyint(d * inv);
    r = std::min(std::max(r, static_cast<float>(-qmax)),
                 static_cast<float>(qmax));
    if (row > 1) {
      // The reader's value, computed as Dequantize does.
      const float recon = b + r * scale;
      carry += value[i] - recon;
    }
    if (bits <= 8) {
      const int8_t q = static_cast<int8_t>(r);
      std::memcpy(q_out + i, &q, 1);
    } else {
      const int16_t q = static_cast<int16_t>(r);
      std::memcpy(q_out + 2 * i, &q, 2);
    }
  }
  return scale;
}

void Dequantize(const uint8_t* q, const float* base, size_t count, int bits,
                float scale, float* recon) {
  for (size_t i = 0; i < count; ++i) {
    float qv;
    if (bits <= 8) {
      int8_t v;
      std::memcpy(&v, q + i, 1);
      qv = static_cast<float>(v);
    } else {
      int16_t v;
      std::memcpy(&v, q + 2 * i, 2);
      qv = static_cast<float>(v);
    }
    const float b = base ? base[i] : 0.0f;
    recon[i] = b + qv * scale;
  }
}

double MaxAbsDifference(const float* a, const float* b, size_t count) {
  double m = 0.0;
  for (size_t i = 0; i < count; ++i) {
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return m;
}

bool AllFinite(const float* v, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(v[i])) return false;
  }
  return true;
}

}  // namespace posttrain

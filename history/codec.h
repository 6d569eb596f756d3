// Byte-level building blocks of the history codecs: byte shuffling, XOR
// deltas, zstd framing, scalar quantization and checksums. No tensor types:
// these work on raw little-endian element bytes.
//
// Example (the `delta` codec for one fp32 tensor):
//   std::vector<uint8_t> tmp(n), shuffled(n);
//   XorBytes(cur, base, n, tmp.data());
//   ShuffleBytes(tmp.data(), n, /*elem=*/4, shuffled.data());
//   std::string z;
//   PT_RETURN_IF_ERROR(ZstdCompressAppend(
//       absl::string_view(reinterpret_cast<const char*>(shuffled.data()), n),
//       /*level=*/1, &z));
//
// Thread safety: stateless functions, safe to call concurrently.
#ifndef POSTTRAIN_HISTORY_CODEC_H_
#define POSTTRAIN_HISTORY_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace posttrain {

// CRC-32 (zlib polynomial) of `data`, continuing from `crc` (0 to start).
uint32_t Crc32(absl::string_view data, uint32_t crc = 0);

// CRC-32 of A followed by B, from crc(A), crc(B) and B's length.
uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b);

// Bytes per quantized value for `bits` in [2, 16]: 1 up to 8 bits, else 2.
inline size_t QuantBytes(int bits) { return bits <= 8 ? 1 : 2; }

// Groups byte j of every element together: out[j * count + i] = in[i * elem
// + j], count = n / elem. Compressors see the slowly varying sign/exponent
// bytes of floats in one run. REQUIRES: n % elem == 0; in and out distinct.
void ShuffleBytes(const uint8_t* in, size_t n, size_t elem, uint8_t* out);
// Inverse of ShuffleBytes.
void UnshuffleBytes(const uint8_t* in, size_t n, size_t elem, uint8_t* out);

// Unshuffles `in` (as UnshuffleBytes) and XORs the result into `inout`.
void UnshuffleXorBytes(const uint8_t* in, size_t n, size_t elem,
                       uint8_t* inout);

// out[i] = a[i] ^ b[i] for i < n. `out` may alias `a` or `b`.
void XorBytes(const uint8_t* a, const uint8_t* b, size_t n, uint8_t* out);

// Largest size of a zstd frame of `n` bytes.
size_t ZstdCompressBound(size_t n);

// Appends a zstd frame of `data` (content size recorded) to `*out`.
absl::Status ZstdCompressAppend(absl::string_view data, int level,
                                std::string* out);
// Decompresses one zstd frame into exactly `out_size` bytes at `out`.
// DataLoss unless the frame declares and yields exactly `out_size` bytes.
absl::Status ZstdDecompress(absl::string_view frame, uint8_t* out,
                            size_t out_size);

// Byte-plane compression of `n` bytes of `elem`-byte elements, as stored
// in blobs: the bytes are shuffled (ShuffleBytes), and each of the `elem`
// planes (n / elem bytes) is stored raw when its byte entropy is above
// kRawPlaneEntropyBits (the random low mantissa bytes of floats, where zstd
// would spend time to save nothing) and as a zstd frame otherwise. Layout,
// plane after plane: u8 kind (0 raw, 1 zstd), u32 little-endian length,
// that many bytes. Appends to `*out`; `scratch` holds the shuffled bytes.
inline constexpr double kRawPlaneEntropyBits = 7.5;
absl::Status CompressPlanes(const uint8_t* data, size_t n, size_t elem,
                            int level, std::string* scratch, std::string* out);
// Largest output of CompressPlanes for `n` bytes of `elem`-byte elements.
size_t CompressPlanesBound(size_t n, size_t elem);
// Inverse of CompressPlanes: writes the n unshuffled bytes to `out`, or XORs
// them into `out` when `xor_into` is set. `scratch` holds the shuffled
// bytes. DataLoss when `in` is not exactly a valid plane sequence.
absl::Status DecompressPlanes(absl::string_view in, size_t n, size_t elem,
                              bool xor_into, std::string* scratch,
                              uint8_t* out);

// Shannon entropy, in bits per byte, of the byte histogram of `data` (a
// strided sample of at most 16 KiB).
double ByteEntropy(const uint8_t* data, size_t n);

// Scalar quantization of a float32 difference. With d = value - base and
// scale = max|d| / qmax (qmax = 2^(bits-1) - 1), q = round(d / scale).
// Writes q as int8 (bits <= 8) or int16 (bits > 8) little-endian to `q_out`
// and returns scale. Returns a negative number (and nothing usable in q_out)
// when the differences cannot be quantized: non-finite, or so small that the
// scale would be subnormal.
float QuantizeDifference(const float* value, const float* base, size_t count,
                         int bits, uint8_t* q_out);
// As QuantizeDifference, with scale = max(max|d| / qmax, min_step): the
// step is never finer than `min_step` (0: the range rule above). The lossy
// codec passes the step a keyframe of the same values would use, so a
// delta's error bound equals a keyframe's.
float QuantizeDifferenceWithStep(const float* value, const float* base,
                                 size_t count, int bits, float min_step,
                                 uint8_t* q_out);
// As QuantizeDifferenceWithStep, with first-order error diffusion along
// rows of `row_length` consecutive values (row_length <= 1: plain rounding).
// Each value's rounding residual is carried into the next value of its row,
// so every prefix of a row sums to within half a step of the true prefix
// (until a clamp at +-qmax), where independent rounding lets the sum drift
// by sqrt(n/12) steps. A layer's output sums its weights times inputs that
// share a mean (post-ReLU activations), so this cancels most of the output
// error for the same step, at up to twice the per-value error. The reader
// is unchanged: Dequantize reconstructs the values exactly.
float QuantizeDifferenceDiffused(const float* value, const float* base,
                                 size_t count, int bits, float min_step,
                                 size_t row_length, uint8_t* q_out);
// The step of a `bits`-bit keyframe of `value`: max|value| / qmax, in
// float32 exactly as QuantizeDifference computes it with no base.
float MaxAbsStep(const float* value, size_t count, int bits);
// 4 * std(value) / qmax: a step that ignores outliers (for measurements).
float StdStep(const float* value, size_t count, int bits);
// recon[i] = base[i] + float(q[i]) * scale; `base` may be null (zero) and
// may alias `recon`. The encoder uses this same function to know the
// reader's values exactly.
void Dequantize(const uint8_t* q, const float* base, size_t count, int bits,
                float scale, float* recon);

// Largest |a[i] - b[i]| over i < count, in double.
double MaxAbsDifference(const float* a, const float* b, size_t count);
// True when every value is finite.
bool AllFinite(const float* v, size_t count);

}  // namespace posttrain

#endif  // POSTTRAIN_HISTORY_CODEC_H_

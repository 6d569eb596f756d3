#include "history/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace posttrain {
namespace {

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(Codec, ShuffleRoundTripsForEveryElementSize) {
  for (size_t elem : {1, 2, 4, 8, 3}) {
    const size_t n = elem * 37;
    std::vector<uint8_t> in = RandomBytes(n, 1), shuf(n), back(n);
    ShuffleBytes(in.data(), n, elem, shuf.data());
    if (elem == 4) {
      // Byte 1 of element 2 lands in plane 1 at position 2.
      EXPECT_EQ(shuf[1 * 37 + 2], in[2 * 4 + 1]);
    }
    UnshuffleBytes(shuf.data(), n, elem, back.data());
    EXPECT_EQ(back, in) << "elem " << elem;
  }
}

TEST(Codec, UnshuffleXorInvertsXorThenShuffle) {
  const size_t n = 4 * 100;
  std::vector<uint8_t> cur = RandomBytes(n, 2), base = RandomBytes(n, 3);
  std::vector<uint8_t> x(n), shuf(n);
  XorBytes(cur.data(), base.data(), n, x.data());
  ShuffleBytes(x.data(), n, 4, shuf.data());
  std::vector<uint8_t> rebuilt = base;
  UnshuffleXorBytes(shuf.data(), n, 4, rebuilt.data());
  EXPECT_EQ(rebuilt, cur);
}

TEST(Codec, ZstdRoundTripAndRejectsDamagedFrames) {
  std::string data(10000, 'a');
  for (size_t i = 0; i < data.size(); i += 7) data[i] = static_cast<char>(i);
  std::string frame = "prefix";
  ASSERT_TRUE(ZstdCompressAppend(data, 1, &frame).ok());
  EXPECT_EQ(frame.substr(0, 6), "prefix");
  std::string z = frame.substr(6);
  std::string out(data.size(), '\0');
  ASSERT_TRUE(
      ZstdDecompress(z, reinterpret_cast<uint8_t*>(out.data()), out.size())
          .ok());
  EXPECT_EQ(out, data);
  // The wrong expected size, a truncated frame.
  EXPECT_EQ(
      ZstdDecompress(z, reinterpret_cast<uint8_t*>(out.data()), 10).code(),
      absl::StatusCode::kDataLoss);
  EXPECT_EQ(ZstdDecompress(z.substr(0, z.size() / 2),
                           reinterpret_cast<uint8_t*>(out.data()), out.size())
                .code(),
            absl::StatusCode::kDataLoss);
}

TEST(Codec, Crc32MatchesTheZlibCheckValue) {
  EXPECT_EQ(Crc32("123456789"), 0xCBF43926u);
  EXPECT_EQ(Crc32("6789", Crc32("12345")), 0xCBF43926u);
}

TEST(Codec, QuantizationErrorIsAtMostHalfAStep) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.f, 0.1f);
  const size_t n = 1000;
  std::vector<float> value(n), base(n), recon(n);
  for (size_t i = 0; i < n; ++i) {
    base[i] = dist(rng);
    value[i] = base[i] + 0.01f * dist(rng);
  }
  for (int bits : {8, 16}) {
    std::vector<uint8_t> q(n * bits / 8);
    const float scale =
        QuantizeDifference(value.data(), base.data(), n, bits, q.data());
    Dequantize(q.data(), base.data(), n, bits, scale, recon.data());
    const double err = MaxAbsDifference(value.data(), recon.data(), n);
    EXPECT_GT(scale, 0.f);
    // Half a step, plus the float rounding of base + q * scale.
    EXPECT_LE(err, scale * 0.5 + 1e-7) << bits;
    // Dequantizing in place over the base gives the same values.
    std::vector<float> inplace = base;
    Dequantize(q.data(), inplace.data(), n, bits, scale, inplace.data());
    EXPECT_EQ(inplace, recon);
  }
  // Identical inputs: zero scale, exact.
  std::vector<uint8_t> q(n);
  EXPECT_EQ(QuantizeDifference(base.data(), base.data(), n, 8, q.data()), 0.f);
  Dequantize(q.data(), base.data(), n, 8, 0.f, recon.data());
  EXPECT_EQ(recon, base);
  EXPECT_FALSE(AllFinite(std::vector<float>{1.f, NAN}.data(), 2));
  // Not quantizable: overflowing or subnormal-sized differences.
  std::vector<float> huge = {3e38f, -3e38f}, tiny = {1e-40f, 0.f};
  std::vector<float> zero = {0.f, 0.f};
  EXPECT_LT(QuantizeDifference(huge.data(), huge.data() + 1, 1, 8, q.data()),
            0.f);
  EXPECT_LT(QuantizeDifference(tiny.data(), zero.data(), 2, 8, q.data()), 0.f);
}

TEST(Codec, QuantizationWithAMinimumStep) {
  std::mt19937 rng(6);
  std::normal_distribution<float> dist(0.f, 0.1f);
  const size_t n = 2000;
  std::vector<float> value(n), base(n), recon(n);
  for (size_t i = 0; i < n; ++i) {
    base[i] = dist(rng);
    value[i] = base[i] + 0.01f * dist(rng);
  }
  // A zero minimum is the range rule, byte for byte.
  std::vector<uint8_t> q0(2 * n), q1(2 * n);
  const float range =
      QuantizeDifference(value.data(), base.data(), n, 16, q0.data());
  EXPECT_EQ(QuantizeDifferenceWithStep(value.data(), base.data(), n, 16, 0.f,
                                       q1.data()),
            range);
  EXPECT_EQ(q0, q1);
  // A keyframe's 7-bit step, far coarser than the range step at 16 bits.
  const float step = MaxAbsStep(value.data(), n, 7);
  std::vector<uint8_t> qk(n);
  EXPECT_EQ(QuantizeDifference(value.data(), nullptr, n, 7, qk.data()), step);
  const float scale = QuantizeDifferenceWithStep(value.data(), base.data(), n,
                                                 16, step, q1.data());
  EXPECT_EQ(scale, step);
  Dequantize(q1.data(), base.data(), n, 16, scale, recon.data());
  EXPECT_LE(MaxAbsDifference(value.data(), recon.data(), n), 0.5 * step + 1e-7);
  // A minimum finer than the range step cannot clamp: the range step wins.
  EXPECT_EQ(QuantizeDifferenceWithStep(value.data(), base.data(), n, 4,
                                       range / 4, qk.data()),
            QuantizeDifference(value.data(), base.data(), n, 4, q0.data()));
  EXPECT_GT(StdStep(value.data(), n, 7), 0.f);
}

// Error diffusion: every prefix of a row sums to within half a step of the
// true prefix, each value stays within one step, and plain rounding (row 1)
// is QuantizeDifferenceWithStep byte for byte.
TEST(Codec, ErrorDiffusionBoundsEveryRowPrefix) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.f, 0.1f);
  const size_t rows = 8, row = 500, n = rows * row;
  std::vector<float> value(n), base(n), recon(n);
  for (size_t i = 0; i < n; ++i) {
    base[i] = dist(rng);
    value[i] = base[i] + 0.01f * dist(rng);
  }
  std::vector<uint8_t> plain(n), diffused(n);
  const int bits = 5;
  const float s1 = QuantizeDifferenceWithStep(value.data(), base.data(), n,
                                              bits, 0.f, plain.data());
  EXPECT_EQ(QuantizeDifferenceDiffused(value.data(), base.data(), n, bits, 0.f,
                                       1, diffused.data()),
            s1);
  EXPECT_EQ(plain, diffused);
  const float scale = QuantizeDifferenceDiffused(
      value.data(), base.data(), n, bits, 0.f, row, diffused.data());
  ASSERT_EQ(scale, s1);
  EXPECT_NE(plain, diffused);
  Dequantize(diffused.data(), base.data(), n, bits, scale, recon.data());
  EXPECT_LE(MaxAbsDifference(value.data(), recon.data(), n), scale + 1e-6);
  double worst_diffused = 0, worst_plain = 0;
  std::vector<float> plain_recon(n);
  Dequantize(plain.data(), base.data(), n, bits, scale, plain_recon.data());
  for (size_t r = 0; r < rows; ++r) {
    double e_diffused = 0, e_plain = 0;
    for (size_t i = r * row; i < (r + 1) * row; ++i) {
      e_diffused += static_cast<double>(value[i]) - recon[i];
      e_plain += static_cast<double>(value[i]) - plain_recon[i];
      worst_diffused = std::max(worst_diffused, std::abs(e_diffused));
      worst_plain = std::max(worst_plain, std::abs(e_plain));
    }
  }
  EXPECT_LE(worst_diffused, 0.5 * scale + 1e-5);
  // Independent rounding drifts by about sqrt(row / 12) steps.
  EXPECT_GT(worst_plain, 2.0 * scale);
}

}  // namespace
}  // namespace posttrain

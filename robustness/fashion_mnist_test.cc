#include "robustness/fashion_mnist.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <cmath>
#include <string>

#include "absl/strings/match.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

std::string U32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i)
    s[i] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
  return s;
}

void WriteGz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

TEST(FashionMnist, ReadsIdxAndSplitsDeterministically) {
  const std::string dir = testing::MakeTempDir("idx");
  // 6 images of 2x3 pixels; image i has all pixels = 10 * i, label i % 10.
  std::string images = U32(0x803) + U32(6) + U32(2) + U32(3);
  std::string labels = U32(0x801) + U32(6);
  for (int i = 0; i < 6; ++i) {
    images += std::string(6, static_cast<char>(10 * i));
    labels += static_cast<char>(i % 10);
  }
  for (const char* split : {"train", "t10k"}) {
    WriteGz(dir + "/" + split + "-images-idx3-ubyte.gz", images);
    WriteGz(dir + "/" + split + "-labels-idx1-ubyte.gz", labels);
  }
  auto d = ReadIdxDataset(dir + "/train-images-idx3-ubyte.gz",
                          dir + "/train-labels-idx1-ubyte.gz", 4);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->images.sizes(), (std::vector<int64_t>{4, 1, 2, 3}));
  EXPECT_FLOAT_EQ(d->images[3][0][1][2].item<float>(), 30.f / 255.f);
  EXPECT_EQ(d->labels[3].item<int64_t>(), 3);

  FashionMnistOptions options;
  options.dir = dir;
  options.seed = 5;
  auto a = LoadFashionMnist(options);
  auto b = LoadFashionMnist(options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->train.size(), 3);
  EXPECT_EQ(a->validation.size(), 3);
  EXPECT_EQ(a->test.size(), 6);
  EXPECT_TRUE(torch::equal(a->train.labels, b->train.labels));
  // The halves are disjoint and cover the 6 items; images follow labels.
  auto all = torch::cat({a->train.labels, a->validation.labels}).sort();
  EXPECT_TRUE(torch::equal(std::get<0>(all), torch::arange(6)));
  EXPECT_FLOAT_EQ(a->train.images[0][0][0][0].item<float>() * 255.f / 10.f,
                  static_cast<float>(a->train.labels[0].item<int64_t>()));
}

TEST(FashionMnist, BadFilesGiveErrorsNamingTheFile) {
  const std::string dir = testing::MakeTempDir("badidx");
  const std::string img = dir + "/img.gz", lab = dir + "/lab.gz";
  WriteGz(img, U32(0x999) + U32(1) + U32(2) + U32(2) + std::string(4, 'a'));
  WriteGz(lab, U32(0x801) + U32(1) + std::string(1, '\1'));
  auto d = ReadIdxDataset(img, lab);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "img.gz")) << d.status();
  // Truncated pixel data.
  WriteGz(img, U32(0x803) + U32(2) + U32(2) + U32(2) + std::string(4, 'a'));
  WriteGz(lab, U32(0x801) + U32(2) + std::string(2, '\1'));
  d = ReadIdxDataset(img, lab);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss) << d.status();
  // Label out of range.
  WriteGz(img, U32(0x803) + U32(1) + U32(2) + U32(2) + std::string(4, 'a'));
  WriteGz(lab, U32(0x801) + U32(1) + std::string(1, '\x0c'));
  d = ReadIdxDataset(img, lab);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "label 12"))
      << d.status();
  EXPECT_EQ(ReadIdxDataset(dir + "/none.gz", lab).status().code(),
            absl::StatusCode::kNotFound);
  // A header that declares 10M images of 4096×4096 (167 TB) over a few
  // bytes is a truncation error, not an allocation of what it declares
  // (before the chunked reader this was a std::bad_alloc).
  WriteGz(img, U32(0x803) + U32(10'000'000) + U32(4096) + U32(4096) +
                   std::string(64, 'a'));
  WriteGz(lab, U32(0x801) + U32(10'000'000) + std::string(8, '\1'));
  d = ReadIdxDataset(img, lab);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss) << d.status();
  EXPECT_TRUE(absl::StrContains(d.status().message(), "truncated"));
}

// Stored adversarial sets: float32 IDX (type 0x0D) read back bit for bit,
// while a uint8 file would have changed the values; a truncated file and
// a non-finite value are named.
TEST(FashionMnist, FloatIdxRoundTripsExactly) {
  const std::string dir = testing::MakeTempDir("floatidx");
  ImageDataset d;
  d.images = torch::rand({5, 1, 3, 4}, at::detail::createCPUGenerator(2));
  d.images[0][0][0][0] = 1.0f / 3.0f;  // not a multiple of 1/255
  d.labels = torch::tensor({0, 9, 3, 3, 7}, torch::kLong);
  const std::string img = dir + "/adv-images.idx",
                    lab = dir + "/adv-labels.idx";
  ASSERT_TRUE(WriteIdxDataset(d, img, lab).ok());
  auto back = ReadIdxDataset(img, lab);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(torch::equal(back->images, d.images));
  EXPECT_TRUE(torch::equal(back->labels, d.labels));
  auto head = ReadIdxDataset(img, lab, 2);
  ASSERT_TRUE(head.ok());
  EXPECT_TRUE(torch::equal(head->images, d.images.narrow(0, 0, 2)));
  // Truncated: the header promises 5 items.
  std::string bytes;
  {
    gzFile f = gzopen(img.c_str(), "rb");
    char buf[4096];
    int got;
    while ((got = gzread(f, buf, sizeof buf)) > 0) bytes.append(buf, got);
    gzclose(f);
  }
  const std::string cut = dir + "/cut.idx";
  WriteGz(cut, bytes.substr(0, bytes.size() - 7));
  auto truncated = ReadIdxDataset(cut, lab);
  EXPECT_TRUE(absl::StrContains(truncated.status().message(), "cut.idx"))
      << truncated.status();
  // A NaN value.
  std::string nan_bytes = bytes;
  for (int i = 0; i < 4; ++i) nan_bytes[16 + i] = i == 0 ? '\x7f' : '\xff';
  const std::string bad = dir + "/nan.idx";
  WriteGz(bad, nan_bytes);
  auto nan = ReadIdxDataset(bad, lab);
  EXPECT_TRUE(absl::StrContains(nan.status().message(), "not finite"))
      << nan.status();
  // What the reader would refuse is refused: a label above 9, a NaN.
  d.labels[0] = 10;
  EXPECT_TRUE(
      absl::StrContains(WriteIdxDataset(d, img, lab).message(), "label 10"));
  d.labels[0] = 0;
  d.images[1][0][0][0] = std::nanf("");
  EXPECT_TRUE(
      absl::StrContains(WriteIdxDataset(d, img, lab).message(), "not finite"));
}

}  // namespace
}  // namespace posttrain

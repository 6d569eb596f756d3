#include "history/store.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/model_spec.h"
#include "common/module_state.h"
#include "history/codec.h"
#include "history/fault_injection_env.h"
#include "history/file_format.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

using ::posttrain::testing::DiffStates;
using ::posttrain::testing::FileSize;
using ::posttrain::testing::FlipByteAt;
using ::posttrain::testing::MakeTempDir;
using ::posttrain::testing::ReadFileBytes;
using ::posttrain::testing::SimulateEpoch;
using ::posttrain::testing::SmallCnn;
using ::posttrain::testing::SyntheticState;
using ::posttrain::testing::WriteFileBytes;

pb::ModelSpec SpecOf(const torch::nn::Sequential& m) {
  auto spec = DescribeSequential(m);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

NamedTensors StateOf(const torch::nn::Sequential& m) {
  auto s = CopyModuleState(*m);
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

EpochMetadata Meta(int64_t epoch) {
  EpochMetadata m;
  m.epoch = epoch;
  m.step = 100 * (epoch + 1);
  m.metrics = {{"loss", 1.0 / (epoch + 1)}};
  m.seed = 42;
  return m;
}

// Writes `epochs` epochs of a training CNN, returning the true states.
std::vector<NamedTensors> WriteCnnHistory(const std::string& dir,
                                          const HistoryOptions& options,
                                          int epochs) {
  torch::nn::Sequential model = SmallCnn(1);
  auto store = HistoryStore::Open(dir, options, SpecOf(model));
  EXPECT_TRUE(store.ok()) << store.status();
  std::vector<NamedTensors> truth;
  for (int e = 0; e < epochs; ++e) {
    SimulateEpoch(model, e);
    truth.push_back(StateOf(model));
    EXPECT_TRUE((*store)->Append(Meta(e), StateOf(model)).ok());
  }
  return truth;
}

class CodecRoundTrip : public ::testing::TestWithParam<pb::Codec> {};

TEST_P(CodecRoundTrip, EveryEpochBitExactWithBuffers) {
  const std::string dir = MakeTempDir("roundtrip");
  HistoryOptions options;
  options.codec = GetParam();
  options.keyframe_interval = 3;  // chains of keyframe + 2 deltas
  std::vector<NamedTensors> truth = WriteCnnHistory(dir, options, 7);

  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_EQ((*store)->Epochs().size(), 7u);
  // Buffers are stored: running stats and num_batches_tracked.
  bool has_buffer = false;
  for (const auto& nt : truth[0]) {
    has_buffer |= absl::StrContains(nt.name, "num_batches_tracked");
  }
  EXPECT_TRUE(has_buffer);
  // Random access, in reverse order.
  for (int e = 6; e >= 0; --e) {
    auto state = (*store)->ReadEpoch(e);
    ASSERT_TRUE(state.ok()) << state.status();
    EXPECT_EQ(DiffStates(*state, truth[e]), "") << "epoch " << e;
  }
  // Sequential iteration.
  auto it = (*store)->NewIterator();
  int n = 0;
  while (it.Next()) {
    EXPECT_EQ(DiffStates(it.state(), truth[it.entry().epoch()]), "");
    ++n;
  }
  EXPECT_TRUE(it.status().ok()) << it.status();
  EXPECT_EQ(n, 7);
  // Chains: epoch 4 = keyframe 3 + 1 delta for chained codecs.
  const auto entries = (*store)->Epochs();
  if (GetParam() == pb::CODEC_DELTA) {
    EXPECT_EQ(entries[3].base_epoch(), -1);
    EXPECT_EQ(entries[4].base_epoch(), 3);
    EXPECT_EQ(entries[5].chain_depth(), 2u);
  } else {
    for (const auto& e : entries) EXPECT_EQ(e.base_epoch(), -1);
  }
  EXPECT_EQ(entries[2].step(), 300);
  EXPECT_EQ(entries[2].metrics().at("loss"), 1.0 / 3);
  EXPECT_EQ(entries[2].seed(), 42u);
  EXPECT_GT(entries[2].wall_time(), 1e9);
  EXPECT_TRUE((*store)->Verify().ok());
}

INSTANTIATE_TEST_SUITE_P(Lossless, CodecRoundTrip,
                         ::testing::Values(pb::CODEC_RAW, pb::CODEC_ZSTD,
                                           pb::CODEC_DELTA),
                         [](const auto& info) {
                           return pb::Codec_Name(info.param);
                         });

TEST(HistoryStore, DeltaIsSmallerThanRawOnSmallSteps) {
  HistoryOptions raw, delta;
  raw.codec = pb::CODEC_RAW;
  delta.codec = pb::CODEC_DELTA;
  const std::string d1 = MakeTempDir("raw"), d2 = MakeTempDir("delta");
  WriteCnnHistory(d1, raw, 4);
  WriteCnnHistory(d2, delta, 4);
  auto a = HistoryStore::OpenReadOnly(d1);
  auto b = HistoryStore::OpenReadOnly(d2);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT((*b)->Epochs()[3].blob_size(), (*a)->Epochs()[3].blob_size());
}

class LossyBound : public ::testing::TestWithParam<LossyDeltaStep> {};

TEST_P(LossyBound, StaysWithinItsRecordedBound) {
  const std::string dir = MakeTempDir("lossy");
  HistoryOptions options;
  options.codec = pb::CODEC_LOSSY;
  options.keyframe_interval = 4;
  options.lossy_delta_step = GetParam();
  if (GetParam() != LossyDeltaStep::kDeltaRange) options.lossy_delta_bits = 16;
  options.lossy_min_elements = 32;  // quantize the conv and linear weights
  std::vector<NamedTensors> truth = WriteCnnHistory(dir, options, 6);
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  double store_bound = (*store)->manifest().lossy_max_abs_error();
  EXPECT_GT(store_bound, 0.0);
  for (const auto& entry : (*store)->Epochs()) {
    auto state = (*store)->ReadEpoch(entry.epoch());
    ASSERT_TRUE(state.ok()) << state.status();
    const NamedTensors& t = truth[entry.epoch()];
    ASSERT_EQ(state->size(), t.size());
    double worst = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      if (!t[i].tensor.is_floating_point()) {
        // Integer buffers are stored losslessly.
        EXPECT_TRUE(torch::equal((*state)[i].tensor, t[i].tensor));
        continue;
      }
      worst = std::max(worst, ((*state)[i].tensor.to(torch::kDouble) -
                               t[i].tensor.to(torch::kDouble))
                                  .abs()
                                  .max()
                                  .item<double>());
    }
    // The recorded bound is the true largest error, not only a bound.
    EXPECT_EQ(worst, entry.max_abs_error()) << entry.epoch();
    EXPECT_LE(entry.max_abs_error(), store_bound);
    // Relative to the weights, the error is small. (4 std exceeds the max
    // of a near-uniform tensor, so the std rule's step is up to ~2.3x
    // coarser than a keyframe's.)
    EXPECT_LT(entry.max_abs_error(),
              GetParam() == LossyDeltaStep::kKeyframeStd ? 1.5e-2 : 5e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(Rules, LossyBound,
                         ::testing::Values(LossyDeltaStep::kDeltaRange,
                                           LossyDeltaStep::kKeyframeMax,
                                           LossyDeltaStep::kKeyframeStd));

// Two epochs of one large fp32 tensor (above lossy_min_elements) and a
// small one: epoch 1 moves every weight a little, as a training step does.
std::vector<NamedTensors> TwoLargeEpochs() {
  torch::manual_seed(7);
  at::Tensor w0 = torch::randn({64, 80}) * 0.05;
  at::Tensor w1 = w0 + torch::randn({64, 80}) * 1e-3;
  at::Tensor b0 = torch::randn({64}) * 0.1;
  at::Tensor b1 = b0 + torch::randn({64}) * 1e-3;
  return {{{"w", w0}, {"b", b0}}, {{"w", w1}, {"b", b1}}};
}

NamedTensors CloneState(const NamedTensors& s) {
  NamedTensors out;
  for (const auto& nt : s) out.push_back({nt.name, nt.tensor.clone()});
  return out;
}

// Encodes `value` (a keyframe without `base`), checks that the blob decodes
// onto `base` to `*recon`, and returns the blob's header.
pb::BlobHeader EncodeAndDecode(const NamedTensors& value,
                               const NamedTensors* base,
                               const BlobEncodeOptions& options,
                               NamedTensors* recon) {
  BlobBuffers buffers;
  auto blob =
      EncodeBlob(1, CloneState(value), base, 0, options, &buffers, recon);
  EXPECT_TRUE(blob.ok()) << blob.status();
  if (!blob.ok()) return {};
  std::string file = blob->head;
  file.append(blob->payload.data(), blob->payload.size());
  auto header = ParseBlobHeader(file, "test", 1);
  EXPECT_TRUE(header.ok()) << header.status();
  NamedTensors decoded = base ? CloneState(*base) : NamedTensors{};
  EXPECT_TRUE(DecodeBlob(file, *header, "test", &decoded).ok());
  EXPECT_EQ(DiffStates(decoded, *recon), "");
  // The recorded bound is the true largest error of the decoded values.
  for (size_t i = 0; i < value.size(); ++i) {
    const double err = (decoded[i].tensor.to(torch::kDouble) -
                        value[i].tensor.to(torch::kDouble))
                           .abs()
                           .max()
                           .item<double>();
    EXPECT_EQ(err, header->tensors(i).max_abs_error()) << value[i].name;
  }
  return *header;
}

TEST(HistoryStore, LossyDeltaUsesTheKeyframeStep) {
  const std::vector<NamedTensors> truth = TwoLargeEpochs();
  BlobEncodeOptions options;
  options.codec = pb::CODEC_LOSSY;
  options.lossy_keyframe_bits = 7;
  options.lossy_delta_bits = 16;
  options.lossy_delta_step = LossyDeltaStep::kKeyframeMax;
  NamedTensors recon0, recon1, key1;
  EncodeAndDecode(truth[0], nullptr, options, &recon0);
  const pb::BlobHeader delta =
      EncodeAndDecode(truth[1], &recon0, options, &recon1);
  // Epoch 1 as a keyframe: the step a delta of it must use.
  const pb::BlobHeader key = EncodeAndDecode(truth[1], nullptr, options, &key1);
  const pb::TensorRecord& d = delta.tensors(0);
  const pb::TensorRecord& k = key.tensors(0);
  ASSERT_EQ(d.encoding(), pb::ENCODING_QUANT_ZSTD);
  EXPECT_TRUE(d.relative_to_base());
  EXPECT_EQ(d.quant_bits(), 16);
  EXPECT_FALSE(k.relative_to_base());
  const float* w1 = truth[1][0].tensor.data_ptr<float>();
  EXPECT_EQ(d.scale(), k.scale());
  EXPECT_EQ(static_cast<float>(d.scale()),
            MaxAbsStep(w1, truth[1][0].tensor.numel(), 7));
  // Both bounds are half that step (plus float rounding of base + q * step),
  // and the delta is not finer than a keyframe: its error is of that order.
  const double half = 0.5 * k.scale() * (1 + 1e-5) + 1e-8;
  EXPECT_LE(d.max_abs_error(), half);
  EXPECT_LE(k.max_abs_error(), half);
  EXPECT_GT(d.max_abs_error(), 0.25 * k.scale());
  // The small tensor keeps its 16-bit range rule.
  EXPECT_EQ(delta.tensors(1).quant_bits(), 16);
  EXPECT_LT(delta.tensors(1).max_abs_error(), 1e-6);
  // A factor scales the step.
  options.lossy_delta_step_factor = 0.5;
  NamedTensors half_recon;
  const pb::BlobHeader finer =
      EncodeAndDecode(truth[1], &recon0, options, &half_recon);
  EXPECT_EQ(static_cast<float>(finer.tensors(0).scale()),
            static_cast<float>(k.scale()) * 0.5f);
}

TEST(HistoryStore, LossyDeltaRangeRuleStillDecodes) {
  // The rule of format version 1's first writers: scale = max|d| / qmax of
  // the delta bits. Its blobs decode as before (the decoder reads scale and
  // bits from each record), with the same bytes QuantizeDifference gives.
  const std::vector<NamedTensors> truth = TwoLargeEpochs();
  BlobEncodeOptions options;
  options.codec = pb::CODEC_LOSSY;
  options.lossy_delta_step = LossyDeltaStep::kDeltaRange;
  options.lossy_delta_bits = 6;
  NamedTensors recon0, recon1;
  EncodeAndDecode(truth[0], nullptr, options, &recon0);
  const pb::BlobHeader delta =
      EncodeAndDecode(truth[1], &recon0, options, &recon1);
  const pb::TensorRecord& d = delta.tensors(0);
  EXPECT_EQ(d.quant_bits(), 6);
  const int64_t n = truth[1][0].tensor.numel();
  std::vector<uint8_t> q(n);
  const float scale =
      QuantizeDifference(truth[1][0].tensor.data_ptr<float>(),
                         recon0[0].tensor.data_ptr<float>(), n, 6, q.data());
  EXPECT_EQ(static_cast<float>(d.scale()), scale);
  EXPECT_LE(d.max_abs_error(), 0.5 * scale * (1 + 1e-5) + 1e-8);
}

TEST(HistoryStore, LossyErrorDiffusionAlongOutputRows) {
  const std::vector<NamedTensors> truth = TwoLargeEpochs();
  BlobEncodeOptions options;
  options.codec = pb::CODEC_LOSSY;
  options.lossy_delta_step = LossyDeltaStep::kDeltaRange;
  options.lossy_delta_bits = 5;
  NamedTensors recon0, plain1, diffused1;
  EncodeAndDecode(truth[0], nullptr, options, &recon0);
  const pb::BlobHeader plain =
      EncodeAndDecode(truth[1], &recon0, options, &plain1);
  options.lossy_error_diffusion = true;
  const pb::BlobHeader diffused =
      EncodeAndDecode(truth[1], &recon0, options, &diffused1);
  // The 64x80 weight diffuses along its rows of 80; the bias is small and
  // 1-D, so it is quantized as before.
  EXPECT_EQ(plain.tensors(0).diffusion_row(), 0u);
  EXPECT_EQ(diffused.tensors(0).diffusion_row(), 80u);
  EXPECT_EQ(diffused.tensors(1).diffusion_row(), 0u);
  EXPECT_EQ(diffused.tensors(0).scale(), plain.tensors(0).scale());
  EXPECT_LE(diffused.tensors(0).max_abs_error(),
            diffused.tensors(0).scale() * (1 + 1e-5) + 1e-8);
  // Each row's summed error, which a layer's output sees, stays within half
  // a step, and is smaller than plain rounding's.
  const at::Tensor t = truth[1][0].tensor.to(torch::kDouble);
  const double row_plain = (t - plain1[0].tensor.to(torch::kDouble))
                               .sum(1)
                               .abs()
                               .max()
                               .item<double>();
  const double row_diffused = (t - diffused1[0].tensor.to(torch::kDouble))
                                  .sum(1)
                                  .abs()
                                  .max()
                                  .item<double>();
  EXPECT_LE(row_diffused, 0.5 * diffused.tensors(0).scale() + 1e-6);
  EXPECT_LT(row_diffused, row_plain);
}

TEST(HistoryStore, ErrorDiffusionOptionReachesTheEncoder) {
  // The store's option, not only the encoder's: the same history written
  // with and without it reads back differently, and with it each output
  // row's summed error is no larger.
  HistoryOptions options;
  options.codec = pb::CODEC_LOSSY;
  options.lossy_min_elements = 100;
  const std::string plain_dir = MakeTempDir("diffusion-off");
  const std::vector<NamedTensors> truth =
      WriteCnnHistory(plain_dir, options, 2);
  options.lossy_error_diffusion = true;
  const std::string diffused_dir = MakeTempDir("diffusion-on");
  WriteCnnHistory(diffused_dir, options, 2);
  auto plain = HistoryStore::OpenReadOnly(plain_dir);
  auto diffused = HistoryStore::OpenReadOnly(diffused_dir);
  ASSERT_TRUE(plain.ok() && diffused.ok());
  auto p1 = (*plain)->ReadEpoch(1);
  auto d1 = (*diffused)->ReadEpoch(1);
  ASSERT_TRUE(p1.ok() && d1.ok());
  int differ = 0;
  for (size_t i = 0; i < truth[1].size(); ++i) {
    const at::Tensor t = truth[1][i].tensor;
    if (!t.is_floating_point() || t.dim() < 2 || t.numel() < 100) continue;
    if (torch::equal((*p1)[i].tensor, (*d1)[i].tensor)) continue;
    ++differ;
    auto row_error = [&](const at::Tensor& r) {
      return (t.to(torch::kDouble) - r.to(torch::kDouble))
          .reshape({t.size(0), -1})
          .sum(1)
          .abs()
          .max()
          .item<double>();
    };
    EXPECT_LE(row_error((*d1)[i].tensor), row_error((*p1)[i].tensor) + 1e-9)
        << truth[1][i].name;
  }
  EXPECT_GT(differ, 0);
}

// Convolution kernels (3+ dimensions) get lossy_kernel_extra_bits more than
// the keyframe and delta bits; matrices and vectors do not. The store
// records each tensor's bits, and the kernels' error shrinks accordingly.
TEST(HistoryStore, LossyKernelExtraBitsReachConvolutionKernelsOnly) {
  HistoryOptions options;
  options.codec = pb::CODEC_LOSSY;
  options.keyframe_interval = 4;
  options.lossy_min_elements = 32;  // quantize the conv and linear weights
  options.lossy_kernel_extra_bits = 3;
  const std::string dir = MakeTempDir("kernel-bits");
  const std::vector<NamedTensors> truth = WriteCnnHistory(dir, options, 2);
  options.lossy_kernel_extra_bits = 0;
  const std::string plain_dir = MakeTempDir("kernel-bits-off");
  WriteCnnHistory(plain_dir, options, 2);
  int kernels = 0, others = 0;
  for (int e = 0; e < 2; ++e) {
    const int base_bits =
        e == 0 ? options.lossy_keyframe_bits : options.lossy_delta_bits;
    auto header = ParseBlobHeader(ReadFileBytes(JoinPath(dir, BlobFileName(e))),
                                  "test", e);
    auto plain = ParseBlobHeader(
        ReadFileBytes(JoinPath(plain_dir, BlobFileName(e))), "test", e);
    ASSERT_TRUE(header.ok() && plain.ok());
    ASSERT_EQ(header->tensors_size(), plain->tensors_size());
    for (int i = 0; i < header->tensors_size(); ++i) {
      const pb::TensorRecord& r = header->tensors(i);
      int64_t numel = 1;
      for (int64_t d : r.shape()) numel *= d;
      if (r.encoding() != pb::ENCODING_QUANT_ZSTD) continue;
      if (numel < options.lossy_min_elements) {
        EXPECT_EQ(r.quant_bits(), options.lossy_small_bits) << r.name();
      } else if (r.shape_size() >= 3) {
        EXPECT_EQ(r.quant_bits(), base_bits + 3) << r.name();
        // Three more bits: the step and the error about 8x finer.
        EXPECT_LT(r.max_abs_error(), plain->tensors(i).max_abs_error() / 4)
            << r.name();
        ++kernels;
      } else {
        EXPECT_EQ(r.quant_bits(), base_bits) << r.name();
        ++others;
      }
    }
  }
  EXPECT_GT(kernels, 1);
  EXPECT_GT(others, 1);
  // The kernels still read back within the recorded bound.
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  auto state = (*store)->ReadEpoch(1);
  ASSERT_TRUE(state.ok()) << state.status();
  for (size_t i = 0; i < truth[1].size(); ++i) {
    if (!truth[1][i].tensor.is_floating_point()) continue;
    EXPECT_LE(((*state)[i].tensor.to(torch::kDouble) -
               truth[1][i].tensor.to(torch::kDouble))
                  .abs()
                  .max()
                  .item<double>(),
              (*store)->Epochs()[1].max_abs_error());
  }
}

// The encoder's own options: 3-D kernels (Conv1d) count as kernels, the bits
// are capped at 16 (QuantBytes 2), and a bad value is refused.
TEST(HistoryStore, LossyKernelExtraBitsCapAtSixteenAndCountThreeDims) {
  torch::manual_seed(3);
  NamedTensors e0 = {{"vector", torch::randn({2000})},
                     {"matrix", torch::randn({40, 50})},
                     {"conv1d", torch::randn({10, 20, 10})},
                     {"conv2d", torch::randn({10, 5, 4, 10})}};
  NamedTensors e1;
  for (const auto& nt : e0) {
    e1.push_back({nt.name, nt.tensor + 1e-2 * torch::randn_like(nt.tensor)});
  }
  BlobEncodeOptions options;
  options.codec = pb::CODEC_LOSSY;
  options.lossy_keyframe_bits = 15;
  options.lossy_delta_bits = 6;
  options.lossy_kernel_extra_bits = 3;
  NamedTensors recon0, recon1;
  const pb::BlobHeader key = EncodeAndDecode(e0, nullptr, options, &recon0);
  const pb::BlobHeader delta = EncodeAndDecode(e1, &recon0, options, &recon1);
  ASSERT_EQ(key.tensors_size(), 4);
  ASSERT_EQ(delta.tensors_size(), 4);
  const int key_bits[] = {15, 15, 16, 16};  // 15 + 3, capped
  const int delta_bits[] = {6, 6, 9, 9};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(key.tensors(i).encoding(), pb::ENCODING_QUANT_ZSTD);
    EXPECT_EQ(key.tensors(i).quant_bits(), key_bits[i]) << e0[i].name;
    EXPECT_EQ(delta.tensors(i).quant_bits(), delta_bits[i]) << e0[i].name;
  }
  // The keyframe_max floor is the step of the tensor's own keyframe: with
  // the kernels' extra bits for kernels (7 + 3), without for the others.
  options.lossy_keyframe_bits = 7;
  options.lossy_delta_bits = 16;  // the range step is far finer: the floor
  options.lossy_delta_step = LossyDeltaStep::kKeyframeMax;
  NamedTensors floored;
  const pb::BlobHeader floor = EncodeAndDecode(e1, &recon0, options, &floored);
  ASSERT_EQ(floor.tensors_size(), 4);
  for (int i = 0; i < 4; ++i) {
    const at::Tensor v = e1[i].tensor.contiguous();
    const int kbits = e1[i].tensor.dim() >= 3 ? 10 : 7;
    EXPECT_EQ(floor.tensors(i).scale(),
              MaxAbsStep(v.data_ptr<float>(), v.numel(), kbits))
        << e1[i].name;
  }
  for (int extra : {-1, 15}) {
    options.lossy_kernel_extra_bits = extra;
    BlobBuffers buffers;
    NamedTensors recon;
    auto blob =
        EncodeBlob(0, CloneState(e0), nullptr, -1, options, &buffers, &recon);
    EXPECT_EQ(blob.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(
        absl::StrContains(blob.status().message(), "lossy_kernel_extra_bits"))
        << blob.status();
  }
}

TEST(HistoryStore, LossyKeepsSmallTensorsExactWhenAsked) {
  const std::string dir = MakeTempDir("lossy-small");
  HistoryOptions options;
  options.codec = pb::CODEC_LOSSY;
  options.lossy_small_bits = 0;      // small tensors lossless
  options.lossy_min_elements = 100;  // conv weight (36) and biases are small
  std::vector<NamedTensors> truth = WriteCnnHistory(dir, options, 3);
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  auto state = (*store)->ReadEpoch(2);
  ASSERT_TRUE(state.ok());
  int exact = 0, approximate = 0;
  for (size_t i = 0; i < truth[2].size(); ++i) {
    const bool same = torch::equal((*state)[i].tensor, truth[2][i].tensor);
    if (truth[2][i].tensor.numel() < 100) {
      EXPECT_TRUE(same) << truth[2][i].name;
      ++exact;
    } else if (!same) {
      ++approximate;
    }
  }
  EXPECT_GT(exact, 5);
  EXPECT_GT(approximate, 0);  // the large weights were quantized
}

TEST(HistoryStore, RetentionPolicies) {
  struct Case {
    RetentionPolicy policy;
    std::vector<int64_t> expected;
  };
  std::vector<Case> cases = {
      {RetentionPolicy::KeepAll(), {0, 1, 2, 3, 4, 5, 6, 7, 8}},
      {RetentionPolicy::KeepLast(3), {6, 7, 8}},
      {RetentionPolicy::KeepLatestHalf(), {4, 5, 6, 7, 8}},
      {RetentionPolicy::EveryKthPlusLast(4, 2), {0, 4, 7, 8}},
  };
  for (pb::Codec codec : {pb::CODEC_ZSTD, pb::CODEC_DELTA}) {
    for (const Case& c : cases) {
      const std::string dir = MakeTempDir("retention");
      HistoryOptions options;
      options.codec = codec;
      options.keyframe_interval = 4;
      options.retention = c.policy;
      std::vector<NamedTensors> truth = WriteCnnHistory(dir, options, 9);
      auto store = HistoryStore::OpenReadOnly(dir);
      ASSERT_TRUE(store.ok());
      std::vector<int64_t> got;
      for (const auto& e : (*store)->Epochs()) got.push_back(e.epoch());
      EXPECT_EQ(got, c.expected) << c.policy.ToString();
      for (int64_t e : got) {
        auto s = (*store)->ReadEpoch(e);
        ASSERT_TRUE(s.ok()) << s.status();
        EXPECT_EQ(DiffStates(*s, truth[e]), "");
      }
      // Dropped epochs are gone from disk unless a kept delta needs them.
      const pb::Manifest m = (*store)->manifest();
      for (int e = 0; e < 9; ++e) {
        const bool in_manifest =
            std::any_of(m.epochs().begin(), m.epochs().end(),
                        [&](const auto& x) { return x.epoch() == e; });
        EXPECT_EQ(Env::Default()->FileExists(JoinPath(dir, BlobFileName(e))),
                  in_manifest)
            << c.policy.ToString() << " epoch " << e;
      }
      if (codec == pb::CODEC_ZSTD) {
        EXPECT_EQ(m.epochs_size(), static_cast<int>(c.expected.size()));
      }
      EXPECT_EQ((*store)->epochs_appended(), 9);
    }
  }
}

TEST(HistoryStore, ResumeKeepsNumberingAndNeverOverwrites) {
  const std::string dir = MakeTempDir("resume");
  HistoryOptions options;
  std::vector<NamedTensors> truth = WriteCnnHistory(dir, options, 3);
  torch::nn::Sequential model = SmallCnn(1);
  auto store = HistoryStore::Open(dir, options, SpecOf(model));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->last_epoch(), 2);
  EXPECT_EQ((*store)->last_step(), 300);
  // An old epoch number is refused and leaves the stored one intact.
  absl::Status s = (*store)->Append(Meta(1), StateOf(model));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "epoch 1")) << s;
  auto e1 = (*store)->ReadEpoch(1);
  ASSERT_TRUE(e1.ok());
  EXPECT_EQ(DiffStates(*e1, truth[1]), "");
  // The next epoch continues; after a restart the writer starts a keyframe.
  ASSERT_TRUE((*store)->Append(Meta(3), StateOf(model)).ok());
  auto entries = (*store)->Epochs();
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[3].epoch(), 3);
  EXPECT_EQ(entries[3].base_epoch(), -1);
  auto e3 = (*store)->ReadEpoch(3);
  ASSERT_TRUE(e3.ok());
  EXPECT_EQ(DiffStates(*e3, StateOf(model)), "");
}

TEST(HistoryStore, SecondWriterIsRefused) {
  const std::string dir = MakeTempDir("lock");
  torch::nn::Sequential model = SmallCnn();
  auto a = HistoryStore::Open(dir, {}, SpecOf(model));
  ASSERT_TRUE(a.ok());
  auto b = HistoryStore::Open(dir, {}, SpecOf(model));
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(HistoryStore, OtherArchitectureIsRefused) {
  const std::string dir = MakeTempDir("arch");
  WriteCnnHistory(dir, {}, 1);
  torch::nn::Sequential other(torch::nn::Linear(4, 2));
  auto s = HistoryStore::Open(dir, {}, SpecOf(other));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.status().message(), "layer '0'"))
      << s.status();
}

TEST(HistoryStore, LoadIntoMismatchedModelNamesTheTensor) {
  const std::string dir = MakeTempDir("mismatch");
  std::vector<NamedTensors> truth = WriteCnnHistory(dir, {}, 2);
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());

  torch::nn::Sequential ok_model = SmallCnn(7);
  ASSERT_TRUE((*store)->LoadEpoch(1, *ok_model).ok());
  EXPECT_EQ(DiffStates(StateOf(ok_model), truth[1]), "");

  namespace nn = torch::nn;
  nn::Sequential wider(nn::Conv2d(nn::Conv2dOptions(1, 5, 3).padding(1)),
                       nn::BatchNorm2d(5), nn::ReLU(), nn::MaxPool2d(2),
                       nn::Flatten(), nn::Linear(5 * 4 * 4, 16),
                       nn::BatchNorm1d(16), nn::ReLU(), nn::Linear(16, 3));
  const NamedTensors before = StateOf(wider);
  absl::Status s = (*store)->LoadEpoch(1, *wider);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "tensor '0.weight'")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "[4,1,3,3]")) << s;
  EXPECT_EQ(DiffStates(StateOf(wider), before), "") << "model was changed";

  nn::Sequential shorter(nn::Conv2d(nn::Conv2dOptions(1, 4, 3).padding(1)));
  s = (*store)->LoadEpoch(1, *shorter);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "not in the model")) << s;

  EXPECT_EQ((*store)->LoadEpoch(9, *ok_model).code(),
            absl::StatusCode::kNotFound);
}

// Flips single bytes in every part of every file kind and expects a DataLoss
// status naming the file, never a crash or silently different weights.
TEST(HistoryStore, CorruptionOfEveryFileKindIsDetected) {
  const std::string dir = MakeTempDir("corrupt");
  HistoryOptions options;
  options.keyframe_interval = 2;
  std::vector<NamedTensors> truth = WriteCnnHistory(dir, options, 2);
  const std::string manifest = JoinPath(dir, "MANIFEST");
  const std::string keyframe = JoinPath(dir, BlobFileName(0));
  const std::string delta = JoinPath(dir, BlobFileName(1));
  const std::string pristine_manifest = ReadFileBytes(manifest);

  for (const std::string& file : {manifest, keyframe, delta}) {
    const std::string original = ReadFileBytes(file);
    const uint64_t size = original.size();
    // Magic, framing, header and payload positions, spread over the file.
    std::vector<uint64_t> offsets = {0,  7,  8,        12,       16,      20,
                                     24, 40, size / 3, size / 2, size - 1};
    for (uint64_t off : offsets) {
      if (off >= size) continue;
      FlipByteAt(file, off);
      absl::Status status;
      auto store = HistoryStore::OpenReadOnly(dir);
      if (!store.ok()) {
        status = store.status();
      } else {
        status = (*store)->Verify();
        // A read of the damaged epoch fails too, never returns other bytes.
        for (int e = 0; e < 2; ++e) {
          auto s = (*store)->ReadEpoch(e);
          if (s.ok()) {
            EXPECT_EQ(DiffStates(*s, truth[e]), "")
                << file << " offset " << off << " epoch " << e;
          }
        }
      }
      EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss)
          << file << " offset " << off << ": " << status;
      const std::string base = file.substr(file.rfind('/') + 1);
      EXPECT_TRUE(absl::StrContains(status.message(), base))
          << "message does not name " << base << ": " << status;
      if (file != manifest) {
        EXPECT_TRUE(absl::StrContains(status.message(), "epoch")) << status;
      }
      WriteFileBytes(file, original);
    }
  }
  // A deleted blob and a truncated blob are reported, not crashed on.
  const std::string kept = ReadFileBytes(delta);
  WriteFileBytes(delta, kept.substr(0, kept.size() / 2));
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->ReadEpoch(1).status().code(),
            absl::StatusCode::kDataLoss);
  std::remove(delta.c_str());
  EXPECT_EQ((*store)->ReadEpoch(1).status().code(),
            absl::StatusCode::kDataLoss);
  auto e0 = (*store)->ReadEpoch(0);
  ASSERT_TRUE(e0.ok());
  EXPECT_EQ(DiffStates(*e0, truth[0]), "");
  EXPECT_EQ(ReadFileBytes(manifest), pristine_manifest);
}

// Manifests that pass the checksum but say impossible things.
TEST(HistoryStore, MalformedManifestsAreRejected) {
  const std::string dir = MakeTempDir("malformed");
  WriteCnnHistory(dir, {}, 2);
  const std::string path = JoinPath(dir, "MANIFEST");
  auto good = DecodeManifestFile(ReadFileBytes(path), path);
  ASSERT_TRUE(good.ok()) << good.status();

  struct Case {
    std::string what;
    std::function<void(pb::Manifest*)> edit;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"path escape",
       [](pb::Manifest* m) {
         m->mutable_epochs(0)->set_blob_file("../../etc/passwd");
       },
       "canonical"},
      {"absolute path",
       [](pb::Manifest* m) {
         m->mutable_epochs(1)->set_blob_file("/tmp/epoch-00000001.blob");
       },
       "canonical"},
      {"descending epochs",
       [](pb::Manifest* m) { m->mutable_epochs(1)->set_epoch(0); },
       "ascending"},
      {"missing base",
       [](pb::Manifest* m) { m->mutable_epochs(1)->set_base_epoch(77); },
       "base epoch 77"},
      {"huge blob",
       [](pb::Manifest* m) {
         m->mutable_epochs(0)->set_blob_size(uint64_t{1} << 62);
       },
       "out of range"},
      {"bad keyframe interval",
       [](pb::Manifest* m) { m->set_keyframe_interval(0); },
       "keyframe_interval"},
      {"bad codec",
       [](pb::Manifest* m) {
         m->mutable_epochs(0)->set_codec(static_cast<pb::Codec>(99));
       },
       "codec"},
      {"wrong version", [](pb::Manifest* m) { m->set_format_version(7); },
       "format_version"},
  };
  for (const Case& c : cases) {
    pb::Manifest m = *good;
    c.edit(&m);
    WriteFileBytes(path, EncodeManifestFile(m));
    auto store = HistoryStore::OpenReadOnly(dir);
    EXPECT_FALSE(store.ok()) << c.what;
    EXPECT_TRUE(absl::StrContains(store.status().message(), c.expect))
        << c.what << ": " << store.status();
    EXPECT_TRUE(absl::StrContains(store.status().message(), "MANIFEST"))
        << c.what << ": " << store.status();
  }
  // Framing: bad magic, another format version, a length beyond the file,
  // random garbage, an empty file.
  std::string bytes = EncodeManifestFile(*good);
  std::vector<std::string> framings;
  framings.push_back("XXXXXXXX" + bytes.substr(8));
  std::string v = bytes;
  v[8] = 2;
  framings.push_back(v);
  std::string len = bytes;
  len[19] = 0x7f;
  framings.push_back(len);
  framings.push_back(std::string(100, '\x42'));
  framings.push_back("");
  for (const std::string& f : framings) {
    WriteFileBytes(path, f);
    auto store = HistoryStore::OpenReadOnly(dir);
    EXPECT_FALSE(store.ok());
    EXPECT_TRUE(absl::StrContains(store.status().message(), "MANIFEST"))
        << store.status();
  }
  // A corrupt MANIFEST also stops a writer, which must not overwrite it.
  WriteFileBytes(path, framings[0]);
  auto writer = HistoryStore::Open(dir, {}, good->model_spec());
  EXPECT_FALSE(writer.ok());
  EXPECT_EQ(ReadFileBytes(path), framings[0]);
}

// Disk full, short writes, failed fsync and a failure between write and
// rename: the append fails with a clear status and everything committed
// before stays readable and bit-exact; the store keeps working afterwards.
TEST(HistoryStore, WriteFaultsLeaveEarlierEpochsIntact) {
  const std::string dir = MakeTempDir("faults");
  FaultInjectionEnv env(Env::Default());
  HistoryOptions options;
  options.env = &env;
  torch::nn::Sequential model = SmallCnn(3);
  auto store = HistoryStore::Open(dir, options, SpecOf(model));
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<NamedTensors> truth;
  int64_t epoch = 0;
  auto append_ok = [&] {
    SimulateEpoch(model, epoch);
    truth.push_back(StateOf(model));
    ASSERT_TRUE((*store)->Append(Meta(epoch), StateOf(model)).ok());
    ++epoch;
  };
  append_ok();
  append_ok();

  struct Fault {
    std::string name;
    std::function<void()> arm;
    absl::StatusCode code;
  };
  std::vector<Fault> faults = {
      {"disk full in blob", [&] { env.SetWriteBudget(100); },
       absl::StatusCode::kResourceExhausted},
      {"disk full in manifest", [&] { env.SetWriteBudget(64, "MANIFEST"); },
       absl::StatusCode::kResourceExhausted},
      {"short write", [&] { env.SetShortWrites(true); },
       absl::StatusCode::kDataLoss},
      {"fsync fails", [&] { env.SetFailSync(true); },
       absl::StatusCode::kInternal},
      {"rename fails", [&] { env.SetFailRename(true); },
       absl::StatusCode::kInternal},
  };
  for (const Fault& f : faults) {
    SimulateEpoch(model, 1000 + epoch);
    f.arm();
    absl::Status s = (*store)->Append(Meta(epoch), StateOf(model));
    env.ClearFaults();
    EXPECT_EQ(s.code(), f.code) << f.name << ": " << s;
    EXPECT_TRUE(absl::StrContains(s.message(), absl::StrCat("epoch ", epoch)))
        << f.name << ": " << s;
    // Nothing committed before is lost, no temporary file stays behind.
    auto reader = HistoryStore::OpenReadOnly(dir);
    ASSERT_TRUE(reader.ok()) << f.name << ": " << reader.status();
    ASSERT_EQ((*reader)->Epochs().size(), truth.size()) << f.name;
    EXPECT_TRUE((*reader)->Verify().ok()) << f.name;
    for (size_t e = 0; e < truth.size(); ++e) {
      auto st = (*reader)->ReadEpoch(static_cast<int64_t>(e));
      ASSERT_TRUE(st.ok()) << f.name << ": " << st.status();
      EXPECT_EQ(DiffStates(*st, truth[e]), "") << f.name;
    }
    auto children = Env::Default()->GetChildren(dir);
    for (const auto& c : *children) {
      EXPECT_FALSE(absl::EndsWith(c, ".tmp")) << f.name << " left " << c;
      EXPECT_NE(c, BlobFileName(epoch)) << f.name << " left the blob";
    }
    // The same store object keeps working after the fault.
    append_ok();
  }
  EXPECT_EQ((*store)->Epochs().size(), 2 + faults.size());
}

TEST(HistoryStore, OpenRemovesLeftoversAndRefusesOrphanedBlobs) {
  const std::string dir = MakeTempDir("leftovers");
  WriteCnnHistory(dir, {}, 2);
  WriteFileBytes(JoinPath(dir, "MANIFEST.tmp"), "partial");
  WriteFileBytes(JoinPath(dir, "epoch-00000002.blob.tmp"), "partial");
  WriteFileBytes(JoinPath(dir, "epoch-00000005.blob"), "orphan");
  WriteFileBytes(JoinPath(dir, "notes.txt"), "user file");
  auto reader = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(reader.ok());
  EXPECT_TRUE(Env::Default()->FileExists(JoinPath(dir, "MANIFEST.tmp")))
      << "readers never delete";
  reader->reset();
  torch::nn::Sequential model = SmallCnn(1);
  auto store = HistoryStore::Open(dir, {}, SpecOf(model));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_FALSE(Env::Default()->FileExists(JoinPath(dir, "MANIFEST.tmp")));
  EXPECT_FALSE(
      Env::Default()->FileExists(JoinPath(dir, "epoch-00000002.blob.tmp")));
  EXPECT_FALSE(
      Env::Default()->FileExists(JoinPath(dir, "epoch-00000005.blob")));
  EXPECT_TRUE(Env::Default()->FileExists(JoinPath(dir, "notes.txt")));
  EXPECT_TRUE((*store)->Verify().ok());
  store->reset();

  // Blobs without any MANIFEST: refuse rather than start over on top.
  const std::string bare = MakeTempDir("bare");
  WriteFileBytes(JoinPath(bare, "epoch-00000000.blob"), "x");
  auto s = HistoryStore::Open(bare, {}, SpecOf(model));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(
      Env::Default()->FileExists(JoinPath(bare, "epoch-00000000.blob")));
}

TEST(HistoryStore, IteratorDecodesEachChainOnce) {
  const std::string dir = MakeTempDir("iter");
  HistoryOptions options;
  options.keyframe_interval = 4;
  std::vector<NamedTensors> truth = WriteCnnHistory(dir, options, 8);
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  // Delete the keyframe of the second chain after reading past it: an
  // iterator that re-decoded chains from their keyframe would fail.
  auto it = (*store)->NewIterator();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(it.Next()) << it.status();
  EXPECT_EQ(it.entry().epoch(), 4);
  std::remove(JoinPath(dir, BlobFileName(4)).c_str());
  while (it.Next()) {
    EXPECT_EQ(DiffStates(it.state(), truth[it.entry().epoch()]), "");
  }
  EXPECT_TRUE(it.status().ok()) << it.status();
}

TEST(HistoryStore, RejectsBadOptionsAndStates) {
  const std::string dir = MakeTempDir("badopts");
  torch::nn::Sequential model = SmallCnn();
  HistoryOptions options;
  options.keyframe_interval = 0;
  EXPECT_EQ(HistoryStore::Open(dir, options, SpecOf(model)).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = {};
  options.lossy_delta_bits = 17;
  EXPECT_EQ(HistoryStore::Open(dir, options, SpecOf(model)).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (int extra : {-1, 15}) {
    options = {};
    options.lossy_kernel_extra_bits = extra;
    absl::Status s = HistoryStore::Open(dir, options, SpecOf(model)).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << extra;
    EXPECT_TRUE(absl::StrContains(s.message(), "lossy_kernel_extra_bits")) << s;
  }
  auto store = HistoryStore::Open(dir, {}, SpecOf(model));
  ASSERT_TRUE(store.ok());
  NamedTensors strided = {{"w", torch::ones({4, 4}).t().slice(0, 0, 4, 2)}};
  EXPECT_EQ((*store)->Append(Meta(0), strided).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->Append(Meta(-1), StateOf(model)).code(),
            absl::StatusCode::kFailedPrecondition);
  // A sparse tensor makes torch throw inside the encoder: still a status.
  NamedTensors sparse = {{"w", torch::eye(3).to_sparse()}};
  EXPECT_FALSE((*store)->Append(Meta(0), sparse).ok());
  // A metric name that is not UTF-8 would make the manifest unparseable.
  EpochMetadata bad_name = Meta(0);
  bad_name.metrics = {{"acc_\xe9", 0.9}};
  absl::Status s = (*store)->Append(bad_name, StateOf(model));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "UTF-8")) << s;
  EXPECT_TRUE((*store)->Epochs().empty());
  // Non-UTF-8 tensor names are fine (stored as bytes) and the store reopens.
  NamedTensors odd = {{"w\xff", torch::ones({2})}};
  ASSERT_TRUE((*store)->Append(Meta(0), odd).ok());
  store->reset();
  auto reopened = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  auto back = (*reopened)->ReadEpoch(0);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)[0].name, "w\xff");
}

// ---- Power loss and single faults at every mutating call of nine appends
// (FaultInjectionEnv). Retention keeps the last two epochs, so appends also
// drop blobs; the last append is the post-trainer's stored model (the
// kPostTrainMetric epoch PostTrainer::Run appends).

constexpr int kAppends = 9;

struct Scenario {
  torch::nn::Sequential model = SmallCnn(5);
  std::vector<NamedTensors> truth;
  HistoryOptions options;
  Scenario() {
    for (int e = 0; e < kAppends; ++e) {
      SimulateEpoch(model, e);
      truth.push_back(StateOf(model));
    }
    options.retention = RetentionPolicy::KeepLast(2);
    options.keyframe_interval = 2;
  }
  EpochMetadata MetaOf(int64_t e) const {
    EpochMetadata m = Meta(e);
    if (e == kAppends - 1) m.metrics[kPostTrainMetric] = 1;
    return m;
  }
  // A store in `dir` written through `env`, tracking durability from now.
  std::unique_ptr<HistoryStore> Open(const std::string& dir,
                                     FaultInjectionEnv* env) const {
    HistoryOptions o = options;
    o.env = env;
    auto store = HistoryStore::Open(dir, o, SpecOf(model));
    EXPECT_TRUE(store.ok()) << store.status();
    env->TrackDurability();
    return store.ok() ? *std::move(store) : nullptr;
  }
  // The last two of `epochs`.
  static std::vector<int64_t> Kept(std::vector<int64_t> epochs) {
    if (epochs.size() > 2) epochs.erase(epochs.begin(), epochs.end() - 2);
    return epochs;
  }
  // The store in `dir` opens, verifies, and holds exactly `expected` (or
  // `alternative`), bit for bit. Returns a description of what failed.
  std::string Check(const std::string& dir,
                    const std::vector<int64_t>& expected,
                    const std::vector<int64_t>& alternative) const {
    auto reader = HistoryStore::OpenReadOnly(dir);
    if (!reader.ok()) return reader.status().ToString();
    absl::Status verified = (*reader)->Verify();
    if (!verified.ok()) return verified.ToString();
    std::vector<int64_t> visible;
    for (const auto& e : (*reader)->Epochs()) visible.push_back(e.epoch());
    if (visible != expected && visible != alternative) {
      return absl::StrCat("holds epochs {", absl::StrJoin(visible, ","),
                          "}, expected {", absl::StrJoin(expected, ","), "}");
    }
    for (int64_t e : visible) {
      auto state = (*reader)->ReadEpoch(e);
      if (!state.ok()) return state.status().ToString();
      const std::string diff = testing::DiffStates(*state, truth[e]);
      if (!diff.empty()) return absl::StrCat("epoch ", e, ": ", diff);
    }
    return "";
  }
};

// Which part of an append a mutating call belongs to ("op path").
std::string PhaseOf(const std::string& call, int64_t append) {
  if (append == kAppends - 1) return "post-trainer store";
  if (absl::StrContains(call, ".blob")) {
    return absl::StartsWith(call, "unlink") && !absl::StrContains(call, ".tmp")
               ? "retention drop"
               : "blob write";
  }
  if (absl::StrContains(call, "MANIFEST")) return "manifest commit";
  return "directory sync";
}

// The mutating calls of a clean run, after the store was opened.
std::vector<std::string> CleanRunCalls(const Scenario& sc,
                                       std::vector<int64_t>* append_of) {
  const std::string dir = MakeTempDir("clean");
  FaultInjectionEnv env(Env::Default());
  HistoryOptions options = sc.options;
  options.env = &env;
  auto store = HistoryStore::Open(dir, options, SpecOf(sc.model));
  EXPECT_TRUE(store.ok()) << store.status();
  env.TrackDurability();
  for (int64_t e = 0; e < kAppends; ++e) {
    EXPECT_TRUE((*store)->Append(sc.MetaOf(e), sc.truth[e]).ok());
    append_of->resize(env.op_log().size(), e);
  }
  std::vector<std::string> calls = env.op_log();
  for (std::string& c : calls) c = absl::StrReplaceAll(c, {{dir, "DIR"}});
  return calls;
}

TEST(HistoryPowerLoss, EveryCommittedEpochSurvivesACutAtEveryCall) {
  const Scenario sc;
  std::vector<int64_t> append_of;
  const std::vector<std::string> calls = CleanRunCalls(sc, &append_of);
  ASSERT_GT(calls.size(), 40u);
  std::map<std::string, int> cuts;
  for (int64_t k = 0; k < static_cast<int64_t>(calls.size()); ++k) {
    // seed 0: every unsynced change is lost; k + 1: some survive.
    for (uint64_t seed : {uint64_t{0}, static_cast<uint64_t>(k + 1)}) {
      const std::string dir = MakeTempDir("powerloss");
      FaultInjectionEnv env(Env::Default());
      std::unique_ptr<HistoryStore> store = sc.Open(dir, &env);
      ASSERT_NE(store, nullptr);
      env.SetPowerOffAfter(k);
      std::vector<int64_t> ok;
      int64_t failed = -1;
      for (int64_t e = 0; e < kAppends && failed < 0; ++e) {
        if (store->Append(sc.MetaOf(e), sc.truth[e]).ok()) {
          ok.push_back(e);
        } else {
          failed = e;
        }
      }
      ASSERT_EQ(absl::StrReplaceAll(env.power_off_at(), {{dir, "DIR"}}),
                calls[k])
          << k;
      ++cuts[PhaseOf(calls[k], append_of[k])];
      store.reset();
      ASSERT_TRUE(env.SimulatePowerLoss(seed).ok());
      // Nothing unsynced survives with seed 0, so an append that did not
      // return OK is not there; with reordering it may be.
      std::vector<int64_t> with_failed = ok;
      if (failed >= 0 && seed != 0) with_failed.push_back(failed);
      const std::string problem =
          sc.Check(dir, Scenario::Kept(ok), Scenario::Kept(with_failed));
      EXPECT_EQ(problem, "")
          << "cut at call " << k << " (" << calls[k] << "), seed " << seed;
    }
  }
  std::string counts;
  for (const auto& [phase, n] : cuts) {
    absl::StrAppend(&counts, phase, "=", n, " ");
    EXPECT_GE(n, 5) << phase;
  }
  std::printf("power cuts: %zu calls x 2 seeds; per phase: %s\n", calls.size(),
              counts.c_str());
  EXPECT_EQ(cuts.size(), 5u) << counts;
}

// One failing call at a time (a write, fsync, rename or unlink), then
// training goes on: the failed append names its epoch, every later append
// works, and the store holds the last two epochs that were committed.
TEST(HistoryPowerLoss, AnySingleFailedCallLosesNothingAndTheStoreGoesOn) {
  const Scenario sc;
  std::vector<int64_t> append_of;
  const std::vector<std::string> calls = CleanRunCalls(sc, &append_of);
  int injected = 0;
  for (int64_t k = 0; k < static_cast<int64_t>(calls.size()); ++k) {
    const std::string dir = MakeTempDir("failonce");
    FaultInjectionEnv env(Env::Default());
    std::unique_ptr<HistoryStore> store = sc.Open(dir, &env);
    ASSERT_NE(store, nullptr);
    env.SetFailOnce(k);
    std::vector<int64_t> ok;
    int64_t failed = -1;
    bool committed = false;
    for (int64_t e = 0; e < kAppends; ++e) {
      absl::Status s = store->Append(sc.MetaOf(e), sc.truth[e]);
      if (s.ok()) {
        ok.push_back(e);
        continue;
      }
      EXPECT_EQ(failed, -1) << "a second append failed after call " << k;
      failed = e;
      committed = absl::StrContains(s.message(), "was committed");
      EXPECT_TRUE(absl::StrContains(s.message(), absl::StrCat("epoch ", e)))
          << s;
    }
    ++injected;
    // A failed removal of a dropped blob is not an append's failure.
    if (failed < 0) {
      EXPECT_TRUE(absl::StartsWith(calls[k], "unlink")) << calls[k];
    }
    std::vector<int64_t> all = ok;
    if (committed) {
      all.insert(std::upper_bound(all.begin(), all.end(), failed), failed);
    }
    store.reset();
    EXPECT_EQ(sc.Check(dir, Scenario::Kept(all), Scenario::Kept(all)), "")
        << "failed call " << k << " (" << calls[k] << ")";
  }
  std::printf("single faults injected: %d\n", injected);
}

}  // namespace
}  // namespace posttrain

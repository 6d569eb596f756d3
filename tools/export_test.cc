#include "tools/export.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/model_spec.h"
#include "common/module_state.h"
#include "common/sequential_block.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;
using ::posttrain::testing::DiffStates;
using ::posttrain::testing::MakeTempDir;
using ::posttrain::testing::ReadFileBytes;
using ::posttrain::testing::WriteFileBytes;

// Every layer kind of the spec, nested once, for 1x8x8 inputs and 3 classes.
nn::Sequential EveryKind(uint64_t seed) {
  torch::manual_seed(seed);
  return nn::Sequential(
      SequentialBlock(nn::Conv2d(nn::Conv2dOptions(1, 4, 3).padding(1)),
                      nn::BatchNorm2d(nn::BatchNorm2dOptions(4).momentum(0.2)),
                      nn::ReLU()),
      nn::MaxPool2d(nn::MaxPool2dOptions(2).stride(2)),
      nn::Conv2d(nn::Conv2dOptions(4, 4, {3, 1})
                     .padding(torch::kSame)
                     .dilation(2)
                     .groups(2)
                     .bias(false)),
      nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.05)),
      nn::AvgPool2d(nn::AvgPool2dOptions(3)
                        .stride(2)
                        .padding(1)
                        .ceil_mode(true)
                        .count_include_pad(false)),
      nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions({2, 2})),
      nn::Flatten(), nn::Dropout(0.25), nn::Linear(16, 8), nn::Tanh(),
      nn::BatchNorm1d(nn::BatchNorm1dOptions(8).momentum(c10::nullopt)),
      nn::GELU(nn::GELUOptions().approximate("tanh")),
      SequentialBlock(
          nn::Linear(8, 6), nn::GELU(),
          nn::BatchNorm1d(
              nn::BatchNorm1dOptions(6).affine(false).track_running_stats(
                  false))),
      nn::Sigmoid(), nn::Linear(6, 3));
}

// Non-trivial BatchNorm statistics: a few train-mode forwards.
void Warm(nn::Sequential& model) {
  torch::NoGradGuard no_grad;
  model->train();
  for (int i = 0; i < 3; ++i) model->forward(torch::randn({8, 1, 8, 8}) + i);
  model->eval();
}

struct Exported {
  pb::ModelSpec spec;
  NamedTensors state;
};

Exported Describe(nn::Sequential& model) {
  auto spec = DescribeSequential(model);
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto state = CopyModuleState(*model);
  EXPECT_TRUE(state.ok()) << state.status();
  return {*spec, *state};
}

uint64_t HeaderLength(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) {
    n |= uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  }
  return n;
}

// A safetensors file of `header` and `data_size` zero bytes.
std::string File(const std::string& header, size_t data_size,
                 uint64_t length_field = UINT64_MAX) {
  const uint64_t n = length_field == UINT64_MAX ? header.size() : length_field;
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_size, '\0');
}

// The status message of parsing `bytes` as "f.safetensors" (empty if OK).
std::string ParseError(const std::string& bytes) {
  auto parsed = ParseSafetensors(bytes, "f.safetensors");
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(parsed.status().message(), "f.safetensors"))
      << parsed.status();
  return std::string(parsed.status().message());
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_TRUE(absl::StrContains(text, part)) << (text)

TEST(Safetensors, RoundTripRebuildsTheSameModel) {
  nn::Sequential model = EveryKind(0);
  Warm(model);
  const Exported e = Describe(model);
  const std::string dir = MakeTempDir("export");
  const std::string path = dir + "/model.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, e.spec, e.state).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  auto back = ReadSafetensors(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(
      google::protobuf::util::MessageDifferencer::Equals(back->spec, e.spec));
  EXPECT_EQ(DiffStates(back->state, e.state), "");

  auto rebuilt = BuildSequential(back->spec);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  ASSERT_TRUE(LoadModuleState(back->state, **rebuilt).ok());
  (*rebuilt)->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({5, 1, 8, 8});
  EXPECT_TRUE(torch::equal(model->forward(x), (*rebuilt)->forward(x)));
}

TEST(Safetensors, ByteLayoutIsTheDocumentedOne) {
  nn::Sequential model = EveryKind(1);
  Warm(model);
  const Exported e = Describe(model);
  const std::string path = MakeTempDir("export") + "/model.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, e.spec, e.state).ok());
  const std::string bytes = ReadFileBytes(path);

  const uint64_t n = HeaderLength(bytes);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_LE(8 + n, bytes.size());
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header.find_last_not_of(' '), header.find_last_of('}'));
  EXPECT_CONTAINS(header, "\"__metadata__\":{\"format\":\"pt\"");
  EXPECT_CONTAINS(header, "\"posttrain.model_spec\":\"{");
  EXPECT_CONTAINS(header,
                  "\"0.0.weight\":{\"dtype\":\"F32\",\"shape\":[4,1,3,3],"
                  "\"data_offsets\":[0,144]}");
  EXPECT_CONTAINS(header,
                  "\"0.1.num_batches_tracked\":{\"dtype\":\"I64\","
                  "\"shape\":[],\"data_offsets\":[");

  uint64_t total = 0;
  for (const NamedTensor& t : e.state) total += t.tensor.nbytes();
  EXPECT_EQ(bytes.size(), 8 + n + total);
  // The first tensor's bytes start the (8-byte aligned) data section.
  const at::Tensor& w = e.state.front().tensor;
  ASSERT_EQ(e.state.front().name, "0.0.weight");
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n, w.data_ptr(), w.nbytes()), 0);

  auto parsed = ParseSafetensors(bytes, path);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->data_offset, 8 + n);
  ASSERT_EQ(parsed->tensors.size(), e.state.size());
  for (size_t i = 0; i < e.state.size(); ++i) {
    EXPECT_EQ(parsed->tensors[i].name, e.state[i].name);  // file order
  }
  EXPECT_EQ(parsed->metadata.at("format"), "pt");
}

TEST(Safetensors, EveryDtypeRoundTrips) {
  NamedTensors state = {
      {"f32", torch::randn({2, 3})},
      {"f64", torch::randn({3}, torch::kDouble)},
      {"f16", torch::randn({4}).to(torch::kHalf)},
      {"bf16", torch::randn({4}).to(torch::kBFloat16)},
      {"i64", torch::arange(5, torch::kLong)},
      {"i32", torch::arange(3, torch::kInt)},
      {"i16", torch::arange(3, torch::kShort)},
      {"i8", torch::arange(-3, 3, torch::kChar)},
      {"u8", torch::arange(3, torch::kByte)},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(2.5)},
      {"empty", torch::zeros({0, 4})},
      {"transposed", torch::arange(6, torch::kFloat).reshape({2, 3}).t()},
  };
  pb::ModelSpec spec;
  spec.set_version(kModelSpecVersion);
  const std::string path = MakeTempDir("export") + "/t.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, spec, state).ok());
  auto back = ReadSafetensors(path);
  ASSERT_TRUE(back.ok()) << back.status();
  state.back().tensor = state.back().tensor.contiguous();
  EXPECT_EQ(DiffStates(back->state, state), "");
}

TEST(Safetensors, WriteRejectsBadState) {
  pb::ModelSpec spec;
  const std::string path = MakeTempDir("export") + "/t.safetensors";
  auto repeated = WriteSafetensors(
      path, spec, {{"a", torch::ones(1)}, {"a", torch::ones(1)}});
  EXPECT_CONTAINS(repeated.message(), "'a'");
  auto complex = WriteSafetensors(
      path, spec, {{"c", torch::ones(1, torch::kComplexFloat)}});
  EXPECT_CONTAINS(complex.message(), "tensor 'c'");
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Safetensors, ReadNamesTheFile) {
  const std::string dir = MakeTempDir("export");
  auto missing = ReadSafetensors(dir + "/none.safetensors");
  EXPECT_FALSE(missing.ok());
  EXPECT_CONTAINS(missing.status().message(), "none.safetensors");

  // Valid layout, but no posttrain spec.
  WriteFileBytes(dir + "/plain.safetensors", File("{}      ", 0));
  auto plain = ReadSafetensors(dir + "/plain.safetensors");
  EXPECT_FALSE(plain.ok());
  EXPECT_CONTAINS(plain.status().message(), "plain.safetensors");
  EXPECT_CONTAINS(plain.status().message(), "posttrain.model_spec");

  WriteFileBytes(dir + "/bool.safetensors",
                 File("{\"b\":{\"dtype\":\"BOOL\",\"shape\":[2],"
                      "\"data_offsets\":[0,2]},\"__metadata__\":{"
                      "\"posttrain.model_spec\":\"{}\"}}",
                      0) +
                     std::string("\x01\x07", 2));
  auto bad_bool = ReadSafetensors(dir + "/bool.safetensors");
  EXPECT_FALSE(bad_bool.ok());
  EXPECT_CONTAINS(bad_bool.status().message(), "tensor 'b'");
}

TEST(Safetensors, ParseAcceptsTheSmallestFiles) {
  EXPECT_EQ(ParseError(File("{}", 0)), "");
  EXPECT_EQ(ParseError(File("{}      ", 0)), "");
  EXPECT_EQ(ParseError(File("{\"z\":{\"dtype\":\"F32\",\"shape\":[0],"
                            "\"data_offsets\":[0,0]}}",
                            0)),
            "");
}

TEST(Safetensors, ParseRejectsTruncatedFiles) {
  EXPECT_CONTAINS(ParseError("abc"), "truncated");
  EXPECT_CONTAINS(ParseError("abc"), "byte 0");
  EXPECT_CONTAINS(ParseError(""), "truncated");
  // A valid file cut inside its data.
  const std::string header =
      "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
  EXPECT_EQ(ParseError(File(header, 16)), "");
  const std::string cut = ParseError(File(header, 10));
  EXPECT_CONTAINS(cut, "tensor 'w'");
  EXPECT_CONTAINS(cut, "data section of 10 bytes");
}

TEST(Safetensors, ParseRejectsHeaderLengthBeyondTheFile) {
  const std::string e = ParseError(File("{}", 0, 1000));
  EXPECT_CONTAINS(e, "header length 1000 at byte 0");
  EXPECT_CONTAINS(e, "past the end");
  EXPECT_CONTAINS(ParseError(File("{}", 0, uint64_t{1} << 40)),
                  "over the limit");
  EXPECT_CONTAINS(ParseError(File("{}", 0, UINT64_MAX - 1)), "over the limit");
}

TEST(Safetensors, ParseRejectsBadJson) {
  for (const char* header : {"{\"a\":", "", "        ", "[1, 2]", "{\"a\":1} x",
                             "{\"a\":1,\"a\":1}", "{\"a\":\"\xff\"}", "nul"}) {
    const std::string e = ParseError(File(header, 0));
    EXPECT_CONTAINS(e, "header at byte 8");
  }
  EXPECT_CONTAINS(ParseError(File("{\"a\":1}", 0)), "tensor 'a'");
}

TEST(Safetensors, ParseRejectsBadEntries) {
  auto entry = [](const std::string& name, const std::string& dtype,
                  const std::string& shape, const std::string& offsets) {
    return absl::StrCat("\"", name, "\":{\"dtype\":", dtype,
                        ",\"shape\":", shape, ",\"data_offsets\":", offsets,
                        "}");
  };
  auto one = [&](const std::string& dtype, const std::string& shape,
                 const std::string& offsets, size_t data) {
    return ParseError(
        File(absl::StrCat("{", entry("w", dtype, shape, offsets), "}"), data));
  };
  // Unknown dtype.
  std::string e = one("\"F8\"", "[2]", "[0,2]", 2);
  EXPECT_CONTAINS(e, "tensor 'w'");
  EXPECT_CONTAINS(e, "unknown dtype 'F8'");
  EXPECT_CONTAINS(one("3", "[2]", "[0,8]", 8), "dtype is a number");
  // Size mismatch.
  e = one("\"F32\"", "[3]", "[0,8]", 8);
  EXPECT_CONTAINS(e, "tensor 'w'");
  EXPECT_CONTAINS(e, "needs 12");
  // Negative and fractional dimensions, offsets.
  e = one("\"F32\"", "[2,-1]", "[0,0]", 0);
  EXPECT_CONTAINS(e, "tensor 'w'");
  EXPECT_CONTAINS(e, "shape[1] is -1");
  e = one("\"F32\"", "[1.5]", "[0,6]", 6);
  EXPECT_CONTAINS(e, "tensor 'w'");
  EXPECT_CONTAINS(e, "shape[0] is 1.5");
  EXPECT_CONTAINS(one("\"F32\"", "[\"2\"]", "[0,8]", 8),
                  "shape[0] is a string");
  EXPECT_CONTAINS(one("\"F32\"", "[1e300]", "[0,8]", 8), "shape[0]");
  EXPECT_CONTAINS(one("\"F32\"", "[2]", "[0.5,8]", 8), "data_offsets[0]");
  EXPECT_CONTAINS(one("\"F32\"", "[2]", "[0]", 8), "data_offsets");
  EXPECT_CONTAINS(one("\"F32\"", "[2]", "[8,0]", 8), "end before");
  // numel * size overflows 64 bits.
  e = one("\"F64\"", "[4294967296,4294967296]", "[0,0]", 0);
  EXPECT_CONTAINS(e, "tensor 'w'");
  EXPECT_CONTAINS(e, "overflows");
  EXPECT_CONTAINS(one("\"F64\"", "[9007199254740991,2048]", "[0,0]", 0),
                  "overflows");
  // Missing and unknown keys, not an object, empty name.
  EXPECT_CONTAINS(ParseError(File("{\"w\":{\"dtype\":\"F32\"}}", 0)),
                  "tensor 'w': missing 'shape'");
  EXPECT_CONTAINS(
      ParseError(File(
          absl::StrCat("{\"w\":{\"x\":1,",
                       entry("w", "\"F32\"", "[1]", "[0,4]").substr(5), "}"),
          4)),
      "unknown key 'x'");
  EXPECT_CONTAINS(ParseError(File("{\"w\":[]}", 0)), "tensor 'w'");
  EXPECT_CONTAINS(
      ParseError(
          File(absl::StrCat("{", entry("", "\"U8\"", "[1]", "[0,1]"), "}"), 1)),
      "empty name");

  // Overlap: b starts inside a.
  e = ParseError(
      File(absl::StrCat("{", entry("a", "\"F32\"", "[2]", "[0,8]"), ",",
                        entry("b", "\"F32\"", "[2]", "[4,12]"), "}"),
           12));
  EXPECT_CONTAINS(e, "tensor 'b'");
  EXPECT_CONTAINS(e, "overlaps tensor 'a'");
  // Gap between a and b.
  const std::string gap_header =
      absl::StrCat("{", entry("a", "\"F32\"", "[1]", "[0,4]"), ",",
                   entry("b", "\"F32\"", "[1]", "[8,12]"), "}");
  e = ParseError(File(gap_header, 12));
  EXPECT_CONTAINS(e, "gap of 4 bytes");
  EXPECT_CONTAINS(e, absl::StrCat("at byte ", 8 + gap_header.size() + 4));
  EXPECT_CONTAINS(e, "before tensor 'b'");
  // Bytes after the last tensor.
  e = ParseError(
      File(absl::StrCat("{", entry("a", "\"F32\"", "[1]", "[0,4]"), "}"), 6));
  EXPECT_CONTAINS(e, "2 bytes at byte");
  EXPECT_CONTAINS(e, "belong to no tensor");
}

TEST(Safetensors, ParseRejectsBadMetadata) {
  std::string e =
      ParseError(File("{\"__metadata__\":{\"format\":\"pt\",\"k\":1}}", 0));
  EXPECT_CONTAINS(e, "__metadata__ key 'k'");
  EXPECT_CONTAINS(e, "not a string");
  EXPECT_CONTAINS(ParseError(File("{\"__metadata__\":[\"x\"]}", 0)),
                  "__metadata__ is a list");
  auto ok = ParseSafetensors(File("{\"__metadata__\":{\"k\":\"v\"}}", 0), "f");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->metadata.at("k"), "v");
}

TEST(Safetensors, FuzzSeedsParse) {
  const std::filesystem::path dir = POSTTRAIN_SAFETENSORS_CORPUS;
  int seeds = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    auto parsed =
        ParseSafetensors(ReadFileBytes(entry.path()), entry.path().string());
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    ++seeds;
  }
  EXPECT_GE(seeds, 2);
}

TEST(TorchScript, LoadedModuleComputesTheSameOutputs) {
  nn::Sequential model = EveryKind(2);
  Warm(model);
  const Exported e = Describe(model);
  const std::string path = MakeTempDir("export") + "/model.pt";
  const absl::Status written = WriteTorchScript(path, e.spec, e.state);
  ASSERT_TRUE(written.ok()) << written;
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  torch::jit::ExtraFilesMap extra = {{"posttrain/model_spec.json", ""}};
  torch::jit::Module loaded = torch::jit::load(path, c10::nullopt, extra);
  EXPECT_TRUE(absl::StrContains(extra["posttrain/model_spec.json"],
                                "\"kind\":\"CONV2D\""))
      << extra["posttrain/model_spec.json"];
  loaded.eval();
  torch::NoGradGuard no_grad;
  const at::Tensor x = torch::randn({7, 1, 8, 8});
  const at::Tensor expected = model->forward(x);
  const at::Tensor actual = loaded.forward({x}).toTensor();
  EXPECT_TRUE(torch::allclose(actual, expected, 1e-6, 1e-6))
      << (actual - expected).abs().max();

  // Parameters and buffers under their documented names.
  bool weight = false, mean = false, nested = false;
  for (const auto& p : loaded.named_parameters(/*recurse=*/false)) {
    weight |= p.name == "l0_0_weight";
    nested |= p.name == "l12_0_weight";
  }
  for (const auto& b : loaded.named_buffers(/*recurse=*/false)) {
    mean |= b.name == "l0_1_running_mean";
    if (b.name == "l0_1_running_mean") {
      EXPECT_TRUE(
          torch::equal(b.value, model[0]->named_buffers()["1.running_mean"]));
    }
  }
  EXPECT_TRUE(weight);
  EXPECT_TRUE(mean);
  EXPECT_TRUE(nested);
  // The batch-statistics BatchNorm1d keeps no buffers.
  for (const auto& b : loaded.named_buffers(/*recurse=*/false)) {
    EXPECT_FALSE(absl::StartsWith(b.name, "l12_2_")) << b.name;
  }
}

TEST(TorchScript, WrongInputRankIsAnError) {
  nn::Sequential model(nn::BatchNorm2d(2));
  const Exported e = Describe(model);
  const std::string path = MakeTempDir("export") + "/bn.pt";
  ASSERT_TRUE(WriteTorchScript(path, e.spec, e.state).ok());
  torch::jit::Module loaded = torch::jit::load(path);
  EXPECT_ANY_THROW(loaded.forward({torch::ones({2, 2})}));
  EXPECT_NO_THROW(loaded.forward({torch::ones({1, 2, 3, 3})}));
}

TEST(TorchScript, RejectsWhatItCannotExpress) {
  nn::Sequential model = EveryKind(3);
  Exported e = Describe(model);
  const std::string path = MakeTempDir("export") + "/model.pt";

  Exported unknown = e;
  unknown.spec.mutable_layers(12)->mutable_children(1)->set_kind(
      pb::LayerSpec::KIND_UNSPECIFIED);
  absl::Status s = WriteTorchScript(path, unknown.spec, unknown.state);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "layer '12.1'");

  Exported missing = e;
  missing.state.erase(missing.state.begin());
  s = WriteTorchScript(path, missing.spec, missing.state);
  EXPECT_FALSE(s.ok());
  EXPECT_CONTAINS(s.message(), "0.0.weight");

  Exported extra = e;
  extra.state.push_back({"99.weight", torch::ones(1)});
  s = WriteTorchScript(path, extra.spec, extra.state);
  EXPECT_FALSE(s.ok());
  EXPECT_CONTAINS(s.message(), "99.weight");

  Exported slope = e;
  slope.spec.mutable_layers(3)->set_negative_slope(
      std::numeric_limits<double>::infinity());
  s = WriteTorchScript(path, slope.spec, slope.state);
  EXPECT_FALSE(s.ok());
  EXPECT_CONTAINS(s.message(), "layer '3'");
  EXPECT_FALSE(std::filesystem::exists(path));
}

// Not a check: with POSTTRAIN_EXPORT_DIR set, writes the files
// scripts/check_exports.py reads: model.safetensors, model.pt, inputs.f32
// (raw little-endian float32), inputs.shape ("N C H W"), logits.f32 and
// predictions.txt (one class per line).
TEST(ExportForPython, WritesTheCheckDirectory) {
  const char* dir = std::getenv("POSTTRAIN_EXPORT_DIR");
  if (dir == nullptr || *dir == '\0') {
    GTEST_SKIP() << "POSTTRAIN_EXPORT_DIR is not set";
  }
  std::filesystem::create_directories(dir);
  nn::Sequential model = EveryKind(0);
  Warm(model);
  const Exported e = Describe(model);
  const std::string out(dir);
  ASSERT_TRUE(
      WriteSafetensors(out + "/model.safetensors", e.spec, e.state).ok());
  ASSERT_TRUE(WriteTorchScript(out + "/model.pt", e.spec, e.state).ok());
  torch::manual_seed(0);
  const at::Tensor x = torch::randn({16, 1, 8, 8});
  torch::NoGradGuard no_grad;
  const at::Tensor logits = model->forward(x).contiguous();
  const at::Tensor predictions = logits.argmax(1);
  WriteFileBytes(
      out + "/inputs.f32",
      std::string(static_cast<const char*>(x.data_ptr()), x.nbytes()));
  WriteFileBytes(out + "/inputs.shape", "16 1 8 8\n");
  WriteFileBytes(out + "/logits.f32",
                 std::string(static_cast<const char*>(logits.data_ptr()),
                             logits.nbytes()));
  std::string lines;
  for (int64_t i = 0; i < predictions.size(0); ++i) {
    absl::StrAppend(&lines, predictions[i].item<int64_t>(), "\n");
  }
  WriteFileBytes(out + "/predictions.txt", lines);
}

}  // namespace
}  // namespace posttrain

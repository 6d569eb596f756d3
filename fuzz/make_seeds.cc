// Writes the seed corpora of the history, model-spec and profile fuzzers
// (fuzz/corpus/{manifest,blob,model_spec,profile}/) from a small model: a
// real store in each codec (its MANIFEST and blobs, keyframes and deltas),
// the model's spec, an NNSlicer profile and its slices. The files are
// checked in; rerun after a format change:
//   cmake --build build --target fuzz_seeds && build/tests/fuzz_seeds
//   fuzz/corpus
// The blob fuzzer decodes onto the state of this model (kSeedModel in
// fuzz/seed_model.h), so its delta records find their bases.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/model_spec.h"
#include "common/model_view.h"
#include "common/module_state.h"
#include "fuzz/seed_model.h"
#include "history/store.h"
#include "slicer/profile.h"
#include "slicer/slicer.h"

namespace fs = std::filesystem;

namespace {

void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    std::exit(1);
  }
}

template <typename T>
T Value(absl::StatusOr<T> v) {
  Check(v.status());
  return *std::move(v);
}

void Write(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string Read(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds CORPUS_DIR\n");
    return 2;
  }
  const fs::path out = argv[1];
  torch::manual_seed(1);
  torch::nn::Sequential model = posttrain::fuzz::MakeSeedModel();
  const posttrain::pb::ModelSpec spec =
      Value(posttrain::DescribeSequential(model));
  Write(out / "model_spec" / "seed_mlp", spec.SerializeAsString());
  {  // A convolutional spec too (no store: its blobs would be large).
    torch::nn::Sequential conv(
        torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 2, 3).padding(1)),
        torch::nn::BatchNorm2d(2), torch::nn::ReLU(), torch::nn::MaxPool2d(2),
        torch::nn::Flatten(), torch::nn::Linear(8, 2));
    Write(out / "model_spec" / "seed_conv",
          Value(posttrain::DescribeSequential(conv)).SerializeAsString());
  }
  const fs::path tmp = fs::temp_directory_path() / "posttrain_fuzz_seeds";
  for (auto [codec, name] : {std::pair{posttrain::pb::CODEC_RAW, "raw"},
                             std::pair{posttrain::pb::CODEC_ZSTD, "zstd"},
                             std::pair{posttrain::pb::CODEC_DELTA, "delta"},
                             std::pair{posttrain::pb::CODEC_LOSSY, "lossy"}}) {
    fs::remove_all(tmp);
    posttrain::HistoryOptions options;
    options.codec = codec;
    options.keyframe_interval = 2;
    options.lossy_min_elements = 8;  // quantize the small weights too
    options.sync = false;
    auto store =
        Value(posttrain::HistoryStore::Open(tmp.string(), options, spec));
    torch::optim::SGD sgd(model->parameters(), 0.1);
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      sgd.zero_grad();
      model->forward(torch::rand({8, 6})).pow(2).sum().backward();
      sgd.step();
      posttrain::EpochMetadata meta;
      meta.epoch = epoch;
      meta.step = 10 * (epoch + 1);
      meta.metrics = {{"loss", 1.0 / (epoch + 1)}};
      Check(store->Append(meta, Value(posttrain::CopyModuleState(*model))));
    }
    store.reset();
    Write(out / "manifest" / name, Read(tmp / "MANIFEST"));
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      const std::string blob = posttrain::BlobFileName(epoch);
      Write(out / "blob" / (std::string(name) + "-" + blob), Read(tmp / blob));
    }
  }
  fs::remove_all(tmp);
  // Reset to the fuzzers' base state.
  model = posttrain::fuzz::MakeSeedModel();
  const posttrain::ModelView view = Value(posttrain::ModelView::Create(model));
  const at::Tensor inputs = torch::rand({16, 6});
  const at::Tensor criteria = torch::arange(16).remainder(2);
  const posttrain::Profile profile =
      Value(posttrain::ProfileModel(model, inputs, criteria, 2, 8));
  // The profile fuzzer's first byte picks the message: 'P' profile, 'S' slice.
  Write(out / "profile" / "profile",
        "P" + profile.ToProto().SerializeAsString());
  const std::vector<posttrain::Slice> slices = Value(posttrain::SliceCriteria(
      view, profile, inputs, criteria, {0, 1}, posttrain::SliceOptions()));
  for (size_t c = 0; c < slices.size(); ++c) {
    Write(out / "profile" / ("slice" + std::to_string(c)),
          "S" + posttrain::SliceToProto(slices[c], static_cast<int>(c), 95)
                    .SerializeAsString());
  }
  std::printf("seeds written under %s\n", out.c_str());
  return 0;
}

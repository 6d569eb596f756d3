// Callback overhead: the Fashion-MNIST example loop with HistoryRecorder
// (delta codec, async) against the same loop without it, alternating whole
// training runs in one process so both see the same machine state. Prints
// JSON.
//
//   callback_overhead --train_size=10000 --epochs=3 --pairs=3 --threads=2
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/bench_util.h"
#include "cnn_training.h"
#include "hooks/history_recorder.h"
#include "robustness/fashion_mnist.h"

#include <torch/torch.h>

ABSL_FLAG(int64_t, train_size, 10000, "training images per run");
ABSL_FLAG(int, epochs, 3, "epochs per run");
ABSL_FLAG(int, pairs, 3, "alternating (without, with) run pairs");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(std::string, codec, "delta", "codec: zstd|delta|lossy|raw");
ABSL_FLAG(std::string, tmp, "/tmp/posttrain_callback_overhead",
          "scratch directory for the stores");

namespace {

using posttrain::bench::Median;
using posttrain::bench::Seconds;

posttrain::pb::Codec CodecFromName(const std::string& n) {
  if (n == "raw") return posttrain::pb::CODEC_RAW;
  if (n == "zstd") return posttrain::pb::CODEC_ZSTD;
  if (n == "lossy") return posttrain::pb::CODEC_LOSSY;
  return posttrain::pb::CODEC_DELTA;
}

// One training run from the same initial weights; returns its wall time,
// including the recorder's final flush when it is on.
double Run(const posttrain::ImageDataset& train, bool with_recorder,
           const std::string& dir) {
  torch::manual_seed(1);
  torch::nn::Sequential model = fmnist::MakeCnn();
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-3));
  std::filesystem::remove_all(dir);
  posttrain::HistoryRecorderOptions options;
  options.store.codec = CodecFromName(absl::GetFlag(FLAGS_codec));
  std::unique_ptr<posttrain::HistoryRecorder> recorder;
  const auto start = std::chrono::steady_clock::now();
  if (with_recorder) {
    recorder = std::make_unique<posttrain::HistoryRecorder>(model, dir, options);
    if (!recorder->OnTrainBegin().ok()) std::abort();
  }
  for (int epoch = 0; epoch < absl::GetFlag(FLAGS_epochs); ++epoch) {
    fmnist::TrainEpoch(model, optimizer, train, 128, 100 + epoch,
                       [&](const at::Tensor& x, const at::Tensor& y,
                           const at::Tensor& logits, double loss) {
                         if (recorder) {
                           recorder->OnBatchEnd({x, y, logits, loss}).IgnoreError();
                         }
                       });
    if (recorder && !recorder->OnEpochEnd(epoch, {}).ok()) std::abort();
  }
  if (recorder && !recorder->OnTrainEnd().ok()) std::abort();
  return Seconds(start);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  posttrain::FashionMnistOptions data_options;
  data_options.train_limit = absl::GetFlag(FLAGS_train_size);
  data_options.validation_limit = 0;
  auto data = posttrain::LoadFashionMnist(data_options);
  if (!data.ok()) {
    std::fprintf(stderr, "%s\n", data.status().ToString().c_str());
    return 1;
  }
  const std::string dir = absl::GetFlag(FLAGS_tmp);
  Run(data->train, true, dir);  // warm-up (allocator, page cache)
  std::vector<double> without, with;
  for (int p = 0; p < absl::GetFlag(FLAGS_pairs); ++p) {
    // Alternate the order within pairs so drift does not favour one side.
    if (p % 2 == 0) {
      without.push_back(Run(data->train, false, dir));
      with.push_back(Run(data->train, true, dir));
    } else {
      with.push_back(Run(data->train, true, dir));
      without.push_back(Run(data->train, false, dir));
    }
  }
  std::filesystem::remove_all(dir);
  const double a = Median(without), b = Median(with);
  std::printf("{\n  \"benchmark\": \"callback_overhead\",\n");
  std::printf("  \"codec\": \"%s\", \"async\": true, \"threads\": %d,\n",
              absl::GetFlag(FLAGS_codec).c_str(), torch::get_num_threads());
  std::printf("  \"train_size\": %lld, \"epochs_per_run\": %d, \"pairs\": %d,\n",
              static_cast<long long>(data->train.size()),
              absl::GetFlag(FLAGS_epochs), absl::GetFlag(FLAGS_pairs));
  std::printf("  \"runs_without_s\": [");
  for (size_t i = 0; i < without.size(); ++i) std::printf("%s%.3f", i ? ", " : "", without[i]);
  std::printf("],\n  \"runs_with_s\": [");
  for (size_t i = 0; i < with.size(); ++i) std::printf("%s%.3f", i ? ", " : "", with[i]);
  std::printf("],\n  \"median_without_s\": %.3f, \"median_with_s\": %.3f,\n", a, b);
  std::printf("  \"overhead_percent\": %.2f,\n  \"target_percent\": 2.0\n}\n",
              100.0 * (b / a - 1.0));
  return 0;
}

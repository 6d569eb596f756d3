// Callback overhead: the Fashion-MNIST example loop with HistoryRecorder
// (delta codec, async) against the same loop without it, in one training run
// whose epochs alternate between the two (without, with, without, ...), so
// both see the same machine state and the same model size. The recorder's
// background write of an epoch overlaps the next epoch, which is a
// "without" epoch: that work (a few ms, see history_bench's write
// throughput) is charged to the wrong side, so the figure underestimates the
// overhead by at most that much per pair. Prints JSON.
//
//   callback_overhead --train_size=6000 --pairs=12 --threads=2
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/bench_util.h"
#include "cnn_training.h"
#include "common/model_spec.h"
#include "common/module_state.h"
#include "hooks/history_recorder.h"
#include "robustness/fashion_mnist.h"

ABSL_FLAG(int64_t, train_size, 6000, "training images per epoch");
ABSL_FLAG(int, pairs, 12,
          "alternating (without, with) epoch pairs, after one warm-up pair");
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

std::string Join(const std::vector<double>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(v[i]).substr(0, 6);
  }
  return out;
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
  std::filesystem::remove_all(dir);
  torch::manual_seed(1);
  torch::nn::Sequential model = fmnist::MakeCnn();
  torch::optim::Adam optimizer(model->parameters(),
                               torch::optim::AdamOptions(1e-3));
  posttrain::HistoryRecorderOptions options;
  options.store.codec = CodecFromName(absl::GetFlag(FLAGS_codec));
  posttrain::HistoryRecorder recorder(model, dir, options);
  if (!recorder.OnTrainBegin().ok()) return 1;
  std::vector<double> without, with;
  double in_loop_s = 0;  // time inside recorder calls on the training thread
  const int epochs = 2 * (absl::GetFlag(FLAGS_pairs) + 1);
  for (int epoch = 0; epoch < epochs; ++epoch) {
    const bool active = epoch % 2 == 1;
    const auto start = std::chrono::steady_clock::now();
    fmnist::TrainEpoch(
        model, optimizer, data->train, 128, 100 + epoch,
        [&](const at::Tensor& x, const at::Tensor& y, const at::Tensor& logits,
            double loss) {
          if (active) {
            const auto t = std::chrono::steady_clock::now();
            recorder.OnBatchEnd({x, y, logits, loss}).IgnoreError();
            if (epoch >= 2) in_loop_s += Seconds(t);
          }
        });
    if (active) {
      const auto t = std::chrono::steady_clock::now();
      if (!recorder.OnEpochEnd(epoch, {}).ok()) return 1;
      if (epoch >= 2) in_loop_s += Seconds(t);
    }
    const double s = Seconds(start);
    if (epoch < 2) continue;  // warm-up pair
    (active ? with : without).push_back(s);
  }
  const auto flush_start = std::chrono::steady_clock::now();
  if (!recorder.OnTrainEnd().ok()) return 1;
  const double flush_s = Seconds(flush_start);
  // The background writer's work per epoch, timed synchronously: the same
  // model state appended to a store with the same codec and fsync.
  std::vector<double> writer_s;
  {
    std::filesystem::remove_all(dir + "-sync");
    auto spec = posttrain::DescribeSequential(model);
    auto store =
        posttrain::HistoryStore::Open(dir + "-sync", options.store, *spec);
    if (!store.ok()) return 1;
    for (int e = 0; e < 8; ++e) {
      auto state = posttrain::CopyModuleState(*model);
      const auto t = std::chrono::steady_clock::now();
      posttrain::EpochMetadata meta;
      meta.epoch = e;
      if (!(*store)->Append(meta, std::move(*state)).ok()) return 1;
      writer_s.push_back(Seconds(t));
    }
    std::filesystem::remove_all(dir + "-sync");
  }
  std::filesystem::remove_all(dir);
  double sum_a = 0, sum_b = 0;
  for (double x : without) sum_a += x;
  for (double x : with) sum_b += x;
  sum_b += flush_s;
  const double a = Median(without), b = Median(with);
  std::printf("{\n  \"benchmark\": \"callback_overhead\",\n");
  std::printf("  \"codec\": \"%s\", \"async\": true, \"threads\": %d,\n",
              absl::GetFlag(FLAGS_codec).c_str(), torch::get_num_threads());
  std::printf("  \"train_size\": %lld, \"pairs\": %d,\n",
              static_cast<long long>(data->train.size()),
              absl::GetFlag(FLAGS_pairs));
  std::printf("  \"epochs_without_s\": [%s],\n", Join(without).c_str());
  std::printf("  \"epochs_with_s\": [%s],\n", Join(with).c_str());
  std::printf("  \"final_flush_s\": %.4f,\n", flush_s);
  std::printf("  \"median_without_s\": %.3f, \"median_with_s\": %.3f,\n", a, b);
  std::printf("  \"overhead_percent_median\": %.2f,\n", 100.0 * (b / a - 1.0));
  std::printf("  \"overhead_percent_total\": %.2f,\n",
              100.0 * (sum_b / sum_a - 1.0));
  const double per_epoch_in_loop = in_loop_s / with.size();
  std::printf(
      "  \"in_loop_s_per_epoch\": %.5f, \"writer_s_per_epoch\": %.5f,\n",
      per_epoch_in_loop, Median(writer_s));
  std::printf("  \"overhead_percent_bound\": %.3f,\n",
              100.0 * (per_epoch_in_loop + Median(writer_s)) / a);
  std::printf("  \"target_percent\": 2.0\n}\n");
  return 0;
}

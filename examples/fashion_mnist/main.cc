// Fashion-MNIST example: an ordinary LibTorch training loop (small CNN, Adam,
// batch 128) on the paper's split, with posttrain's HistoryRecorder added.
// The lines marked "posttrain" are the whole integration.
//
//   fashion_mnist --epochs=6 --store=runs/fashion_mnist/history
//
// With --checkpoint=FILE the loop saves its own checkpoint every epoch and,
// when restarted, resumes from it; the history continues where it ended.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "cnn_training.h"
#include "hooks/history_recorder.h"
#include "robustness/fashion_mnist.h"

ABSL_FLAG(int, epochs, 6, "number of training epochs (in total, with resumes)");
ABSL_FLAG(int64_t, train_size, -1,
          "cap on the training half (30000 images); -1 = all");
ABSL_FLAG(int64_t, validation_size, -1,
          "cap on the validation half (30000 images); -1 = all");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(uint64_t, seed, 1, "seed of the split, initialisation and order");
ABSL_FLAG(int, batch_size, 128, "minibatch size");
ABSL_FLAG(double, lr, 1e-3, "Adam learning rate");
ABSL_FLAG(std::string, store, "runs/fashion_mnist/history",
          "history store directory");
ABSL_FLAG(std::string, codec, "delta", "history codec: raw|zstd|delta|lossy");
ABSL_FLAG(std::string, data_dir, posttrain::kFashionMnistDir,
          "directory of the Fashion-MNIST IDX files");
ABSL_FLAG(std::string, checkpoint, "",
          "the loop's own checkpoint file (saved every epoch, resumed from)");

namespace {

bool ParseCodec(const std::string& name, posttrain::pb::Codec* codec) {
  if (name == "raw")
    *codec = posttrain::pb::CODEC_RAW;
  else if (name == "zstd")
    *codec = posttrain::pb::CODEC_ZSTD;
  else if (name == "delta")
    *codec = posttrain::pb::CODEC_DELTA;
  else if (name == "lossy")
    *codec = posttrain::pb::CODEC_LOSSY;
  else
    return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines as they come
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  torch::manual_seed(seed);

  posttrain::FashionMnistOptions data_options;
  data_options.dir = absl::GetFlag(FLAGS_data_dir);
  data_options.seed = seed;
  data_options.train_limit = absl::GetFlag(FLAGS_train_size);
  data_options.validation_limit = absl::GetFlag(FLAGS_validation_size);
  auto data = posttrain::LoadFashionMnist(data_options);
  if (!data.ok()) {
    std::fprintf(stderr, "error: %s\n", data.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "Fashion-MNIST: %lld train, %lld validation, %lld test; %d threads\n",
      static_cast<long long>(data->train.size()),
      static_cast<long long>(data->validation.size()),
      static_cast<long long>(data->test.size()), torch::get_num_threads());

  torch::nn::Sequential model = fmnist::MakeCnn();
  torch::optim::Adam optimizer(
      model->parameters(), torch::optim::AdamOptions(absl::GetFlag(FLAGS_lr)));

  posttrain::HistoryRecorderOptions options;
  if (!ParseCodec(absl::GetFlag(FLAGS_codec), &options.store.codec)) {
    std::fprintf(stderr, "error: unknown --codec\n");
    return 1;
  }
  options.seed = seed;
  options.store.created_by = "examples/fashion_mnist";
  const std::string store_dir = absl::GetFlag(FLAGS_store);
  posttrain::HistoryRecorder recorder(model, store_dir, options);  // posttrain
  if (auto s = recorder.OnTrainBegin(); !s.ok()) {                 // posttrain
    std::fprintf(stderr, "history disabled: %s\n", s.ToString().c_str());
  }

  // The loop's own checkpoint, independent of posttrain.
  const std::string checkpoint = absl::GetFlag(FLAGS_checkpoint);
  int64_t first_epoch = 0;
  if (!checkpoint.empty() && std::filesystem::exists(checkpoint)) {
    torch::load(model, checkpoint);
    torch::load(optimizer, checkpoint + ".optimizer");
    first_epoch = recorder.last_epoch() + 1;
    std::printf("resumed from %s at epoch %lld\n", checkpoint.c_str(),
                static_cast<long long>(first_epoch));
  }

  std::printf("%5s %10s %9s %8s\n", "epoch", "loss", "val_acc", "seconds");
  for (int64_t epoch = first_epoch; epoch < absl::GetFlag(FLAGS_epochs);
       ++epoch) {
    fmnist::EpochResult r = fmnist::TrainEpoch(
        model, optimizer, data->train, absl::GetFlag(FLAGS_batch_size),
        seed * 1000 + static_cast<uint64_t>(epoch),
        [&](const at::Tensor& x, const at::Tensor& y, const at::Tensor& logits,
            double loss) {
          recorder.OnBatchEnd({x, y, logits, loss}).IgnoreError();  // posttrain
        });
    const double val_acc = fmnist::Accuracy(model, data->validation);
    std::printf("%5lld %10.4f %9.4f %8.1f\n", static_cast<long long>(epoch),
                r.loss, val_acc, r.seconds);
    if (auto s = recorder.OnEpochEnd(  // posttrain
            epoch, {{"train_loss", r.loss}, {"val_acc", val_acc}});
        !s.ok()) {
      std::fprintf(stderr, "snapshot: %s\n", s.ToString().c_str());
    }
    if (!checkpoint.empty()) {
      torch::save(model, checkpoint);
      torch::save(optimizer, checkpoint + ".optimizer");
    }
  }
  if (auto s = recorder.OnTrainEnd(); !s.ok()) {  // posttrain
    std::fprintf(stderr, "history: %s\n", s.ToString().c_str());
  }
  std::printf("test accuracy: %.4f\n", fmnist::Accuracy(model, data->test));

  if (posttrain::HistoryStore* store = recorder.store()) {
    uint64_t bytes = 0, raw = 0;
    for (const auto& e : store->Epochs()) {
      bytes += e.blob_size();
      raw += e.raw_bytes();
    }
    std::printf(
        "history store %s: %zu epochs, %llu bytes of blobs (%.2fx smaller "
        "than raw fp32)\n",
        store_dir.c_str(), store->Epochs().size(),
        static_cast<unsigned long long>(bytes),
        bytes ? static_cast<double>(raw) / bytes : 0.0);
  }
  return 0;
}

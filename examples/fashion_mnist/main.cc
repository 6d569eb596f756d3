// Fashion-MNIST example: an ordinary LibTorch training loop (small CNN, Adam,
// batch 128) on the paper's split, with posttrain's one callback added
// (PostTrainCallback around the Dare task): it records the history and the
// NNSlicer profile while the loop trains, and runs Dare when training ends.
// The lines marked "posttrain" are the whole integration. At the end it prints
// a before/after table: clean accuracy, and FGSM / PGD robust accuracy under
// the transfer protocol (adversarial examples crafted against the original
// model) and the adaptive one (crafted against the model evaluated).
//
//   fashion_mnist --epochs=8 --store=runs/fashion_mnist/history
//
// With --checkpoint=FILE the loop saves its own checkpoint every epoch and,
// when restarted, resumes from it; the history continues where it ended.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cnn_training.h"
#include "hooks/post_train_callback.h"
#include "hooks/progress_bar.h"
#include "robustness/attacks.h"
#include "robustness/dare.h"
#include "robustness/fashion_mnist.h"
#include "tuner/masked_tuner.h"

ABSL_FLAG(int, epochs, 8, "number of training epochs (in total, with resumes)");
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
ABSL_FLAG(std::string, variant, "dare",
          "post-training: dare|dare_no_slice|dare_no_transform|dare_last|"
          "dare_random, or none");
ABSL_FLAG(int, tune_epochs, 10, "post-training: most tuning epochs per lr");
ABSL_FLAG(std::string, lrs, "1e-4",
          "post-training: lr grid (ALGORITHMS.md's is 1e-3,1e-4,1e-5; the "
          "example keeps the one the validation split chose, for time)");
ABSL_FLAG(int64_t, mine_inputs, 10000,
          "post-training: validation images mined (a seeded sample; 0 = all "
          "27000)");
ABSL_FLAG(int64_t, slice_inputs, 10000,
          "post-training: training images sliced (a seeded sample)");
ABSL_FLAG(int64_t, attack_size, 2000,
          "test images attacked with FGSM and PGD (the first N)");
ABSL_FLAG(bool, progress, true,
          "progress of the post-training phase on stderr (one updating line "
          "on a terminal, plain lines otherwise)");

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

struct Robustness {
  double clean = 0;
  double fgsm = 0, pgd = 0;                     // on the attacked subset
  double fgsm_fooled = 0, pgd_fooled = 0;       // transfer: inputs that fooled
  int64_t fgsm_fooled_n = 0, pgd_fooled_n = 0;  // the original
};

double Acc(const torch::nn::Sequential& m, const at::Tensor& x,
           const at::Tensor& y) {
  if (x.size(0) == 0) return 0;
  auto a = posttrain::Accuracy(m, x, y);
  return a.ok() ? *a : -1;
}

// Before/after table: the transfer protocol feeds the examples crafted
// against the original to both models; the adaptive one attacks each model
// itself (for the original both are the same).
void PrintBeforeAfter(const torch::nn::Sequential& original,
                      const torch::nn::Sequential& tuned,
                      const posttrain::FashionMnist& data,
                      const std::string& variant, double train_seconds,
                      double post_seconds, const std::string& store_dir) {
  const int64_t n =
      std::min(absl::GetFlag(FLAGS_attack_size), data.test.size());
  const at::Tensor x = data.test.images.narrow(0, 0, n);
  const at::Tensor y = data.test.labels.narrow(0, 0, n);
  posttrain::AttackOptions fgsm_options;  // eps 0.1
  posttrain::AttackOptions pgd_options;   // eps 0.1, alpha 0.01, 40 steps
  pgd_options.seed = absl::GetFlag(FLAGS_seed);
  auto fgsm_o = posttrain::Fgsm(original, x, y, fgsm_options);
  auto pgd_o = posttrain::Pgd(original, x, y, pgd_options);
  auto fgsm_t = posttrain::Fgsm(tuned, x, y, fgsm_options);
  auto pgd_t = posttrain::Pgd(tuned, x, y, pgd_options);
  if (!fgsm_o.ok() || !pgd_o.ok() || !fgsm_t.ok() || !pgd_t.ok()) {
    std::fprintf(stderr, "attack failed\n");
    return;
  }
  // Inputs whose transfer example fooled the original.
  auto fooled = [&](const at::Tensor& adv) {
    torch::NoGradGuard g;
    torch::nn::Sequential m = original;
    const bool was = m->is_training();
    m->eval();
    at::Tensor wrong = m->forward(adv).argmax(1).ne(y);
    m->train(was);
    return wrong.nonzero().reshape({-1});
  };
  const at::Tensor ff = fooled(*fgsm_o), pf = fooled(*pgd_o);
  const double clean_o =
      fmnist::Accuracy(const_cast<torch::nn::Sequential&>(original), data.test);
  const double clean_t =
      fmnist::Accuracy(const_cast<torch::nn::Sequential&>(tuned), data.test);
  std::string table = absl::StrFormat(
      "| metric | original | %s |\n|---|---|---|\n"
      "| clean accuracy (%lld test images) | %.4f | %.4f |\n"
      "| FGSM eps=0.1, transfer, %lld attacked | %.4f | %.4f |\n"
      "| FGSM transfer, the %lld that fooled the original | 0 | %.4f |\n"
      "| PGD eps=0.1 (40 x 0.01), transfer, %lld attacked | %.4f | %.4f |\n"
      "| PGD transfer, the %lld that fooled the original | 0 | %.4f |\n"
      "| FGSM eps=0.1, adaptive | %.4f | %.4f |\n"
      "| PGD eps=0.1, adaptive | %.4f | %.4f |\n",
      variant, static_cast<long long>(data.test.size()), clean_o, clean_t,
      static_cast<long long>(n), Acc(original, *fgsm_o, y),
      Acc(tuned, *fgsm_o, y), static_cast<long long>(ff.numel()),
      Acc(tuned, fgsm_o->index_select(0, ff), y.index_select(0, ff)),
      static_cast<long long>(n), Acc(original, *pgd_o, y),
      Acc(tuned, *pgd_o, y), static_cast<long long>(pf.numel()),
      Acc(tuned, pgd_o->index_select(0, pf), y.index_select(0, pf)),
      Acc(original, *fgsm_o, y), Acc(tuned, *fgsm_t, y),
      Acc(original, *pgd_o, y), Acc(tuned, *pgd_t, y));
  table += absl::StrFormat(
      "\ntraining %.1f s; post-training phase %.1f s (%.2f of training)\n",
      train_seconds, post_seconds, post_seconds / train_seconds);
  std::printf("\n%s", table.c_str());
  if (FILE* f = std::fopen((store_dir + "/before_after.md").c_str(), "w")) {
    std::fputs(table.c_str(), f);
    std::fclose(f);
  }
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
      "data set: Fashion-MNIST (IDX files in %s): %lld train, %lld "
      "validation, %lld test; %d threads\n",
      data_options.dir.c_str(), static_cast<long long>(data->train.size()),
      static_cast<long long>(data->validation.size()),
      static_cast<long long>(data->test.size()), torch::get_num_threads());

  torch::nn::Sequential model = fmnist::MakeCnn();
  torch::optim::Adam optimizer(
      model->parameters(), torch::optim::AdamOptions(absl::GetFlag(FLAGS_lr)));

  const std::string checkpoint = absl::GetFlag(FLAGS_checkpoint);
  const bool resuming =
      !checkpoint.empty() && std::filesystem::exists(checkpoint);
  // posttrain: the task and the one callback.
  posttrain::PostTrainCallbackOptions options;
  if (!ParseCodec(absl::GetFlag(FLAGS_codec), &options.history.store.codec)) {
    std::fprintf(stderr, "error: unknown --codec\n");
    return 1;
  }
  options.directory = absl::GetFlag(FLAGS_store);
  options.history.seed = seed;
  options.history.store.created_by = "examples/fashion_mnist";
  options.history.resume = resuming;  // continue the store after a restart
  // The loop knows its last epoch: only that one is profiled (the phase
  // uses the final epoch's profile; earlier ones would be discarded).
  options.profiler.final_epoch = absl::GetFlag(FLAGS_epochs) - 1;
  const std::string& store_dir = options.directory;
  const std::string variant = absl::GetFlag(FLAGS_variant);
  std::shared_ptr<posttrain::PostTrainTask> task;
  if (variant == "none") {
    options.run_phase = false;
  } else {
    posttrain::DareOptions dare;
    dare.variant = variant;
    dare.validation = {data->validation.images, data->validation.labels};
    dare.slice_data = {data->train.images, data->train.labels};
    dare.max_mine_inputs = absl::GetFlag(FLAGS_mine_inputs);
    dare.pipeline.max_slice_inputs = absl::GetFlag(FLAGS_slice_inputs);
    dare.pipeline.seed = seed;
    dare.pipeline.tuner.max_epochs = absl::GetFlag(FLAGS_tune_epochs);
    dare.pipeline.tuner.learning_rates.clear();
    for (absl::string_view lr : absl::StrSplit(absl::GetFlag(FLAGS_lrs), ',')) {
      dare.pipeline.tuner.learning_rates.push_back(std::stod(std::string(lr)));
    }
    auto made = posttrain::MakeDareTask(dare);
    if (!made.ok()) {
      std::fprintf(stderr, "error: %s\n", made.status().ToString().c_str());
      return 1;
    }
    task = std::move(*made);
  }
  posttrain::ProgressBar bar;
  if (absl::GetFlag(FLAGS_progress)) options.progress = &bar;
  posttrain::PostTrainCallback post(model, task, options);
  if (auto s = post.OnTrainBegin(); !s.ok()) {  // posttrain
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  }

  // The loop's own checkpoint, independent of posttrain.
  int64_t first_epoch = 0;
  if (resuming) {
    torch::load(model, checkpoint);
    torch::load(optimizer, checkpoint + ".optimizer");
    first_epoch = post.last_epoch() + 1;
    std::printf("resumed from %s at epoch %lld\n", checkpoint.c_str(),
                static_cast<long long>(first_epoch));
  }

  std::printf("%5s %10s %9s %8s\n", "epoch", "loss", "val_acc", "seconds");
  double train_seconds = 0;
  for (int64_t epoch = first_epoch; epoch < absl::GetFlag(FLAGS_epochs);
       ++epoch) {
    post.OnEpochBegin(epoch).IgnoreError();  // posttrain
    fmnist::EpochResult r = fmnist::TrainEpoch(
        model, optimizer, data->train, absl::GetFlag(FLAGS_batch_size),
        seed * 1000 + static_cast<uint64_t>(epoch),
        [&](const at::Tensor& x, const at::Tensor& y, const at::Tensor& logits,
            double loss) {
          post.OnBatchEnd({x, y, logits, loss}).IgnoreError();  // posttrain
        });
    train_seconds += r.seconds;
    const double val_acc = fmnist::Accuracy(model, data->validation);
    std::printf("%5lld %10.4f %9.4f %8.1f\n", static_cast<long long>(epoch),
                r.loss, val_acc, r.seconds);
    if (auto s = post.OnEpochEnd(  // posttrain
            epoch, {{"train_loss", r.loss}, {"val_acc", val_acc}});
        !s.ok()) {
      std::fprintf(stderr, "snapshot: %s\n", s.ToString().c_str());
    }
    if (!checkpoint.empty()) {
      torch::save(model, checkpoint);
      torch::save(optimizer, checkpoint + ".optimizer");
    }
  }
  std::printf("training: %.1f s\n", train_seconds);
  // Kept only to print the before/after table; posttrain does not need it.
  auto original = posttrain::CopyModel(model);
  if (!original.ok()) {
    std::fprintf(stderr, "error: %s\n", original.status().ToString().c_str());
    return 1;
  }
  const auto post_start = std::chrono::steady_clock::now();
  if (auto s = post.OnTrainEnd(); !s.ok()) {  // posttrain
    std::fprintf(stderr, "post-training: %s\n", s.ToString().c_str());
  }
  const double post_seconds = std::chrono::duration<double>(
                                  std::chrono::steady_clock::now() - post_start)
                                  .count();
  std::printf("test accuracy: %.4f\n", fmnist::Accuracy(model, data->test));

  if (const posttrain::PipelineResult* r = post.result()) {
    PrintBeforeAfter(*original, model, *data, variant, train_seconds,
                     post_seconds, store_dir);
    if (!r->tune.accepted) {
      std::printf("The original model was kept: %s.\n", r->tune.reason.c_str());
    }
  }
  if (posttrain::HistoryStore* store = post.recorder().store()) {
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

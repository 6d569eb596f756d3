// Fairness example: an ordinary LibTorch training loop for the reference
// MLP (d→64→32→16→8→4→2) on a tabular data set described by a schema file,
// with posttrain's one callback around the FMT task. At the end it prints a
// before/after table of accuracy and every fairness metric on the test
// split, naming the data set and the protected attribute.
//
//   adult_fairness                                   # Adult, protected sex
//   adult_fairness --protected=race
//   adult_fairness --schema=.../german.schema --data_dir=.../german
//   adult_fairness --schema=my.schema --data_dir=my_data/   # your own CSV
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "fairness/fmt.h"
#include "fairness/metrics.h"
#include "fairness/tabular.h"
#include "fairness/tabular_schema.h"
#include "hooks/post_train_callback.h"
#include "tuner/masked_tuner.h"

ABSL_FLAG(std::string, schema, POSTTRAIN_SCHEMAS "/adult.schema",
          "schema file of the data set");
ABSL_FLAG(std::string, data_dir, POSTTRAIN_TABULAR "/adult",
          "directory of the schema's data files");
ABSL_FLAG(std::string, protected_attribute, "",
          "protected attribute (default: the schema's)");
ABSL_FLAG(std::string, variant, "fmt",
          "fmt|fmt_single|fmt_random|fmt_no_slice|fmt_no_transform|fmt_last");
ABSL_FLAG(int, epochs, 0,
          "training epochs; 0: enough for 1,000 optimizer steps, at least 20 "
          "(Adult: 20, German: 200)");
ABSL_FLAG(int, batch_size, 128, "minibatch size");
ABSL_FLAG(double, lr, 1e-3, "Adam learning rate");
ABSL_FLAG(uint64_t, seed, 1, "seed of the split, initialisation and order");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(std::string, store, "runs/adult_fairness/history",
          "history store directory (must not hold an earlier run)");

namespace {

absl::StatusOr<posttrain::FairnessMetrics> Evaluate(
    torch::nn::Sequential& model, const posttrain::TabularSplit& s) {
  torch::NoGradGuard g;
  model->eval();
  const at::Tensor pred = model->forward(s.x).argmax(1).contiguous();
  auto vec = [](const at::Tensor& t) {
    const at::Tensor c = t.to(torch::kLong).contiguous();
    return std::vector<int64_t>(c.data_ptr<int64_t>(),
                                c.data_ptr<int64_t>() + c.numel());
  };
  return posttrain::ComputeFairnessMetrics(vec(s.y), vec(pred), vec(s.a));
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  auto schema = posttrain::ReadTabularSchema(absl::GetFlag(FLAGS_schema));
  if (!schema.ok()) {
    std::fprintf(stderr, "error: %s\n", schema.status().ToString().c_str());
    return 1;
  }
  auto rows =
      posttrain::ReadTabularRows(*schema, absl::GetFlag(FLAGS_data_dir),
                                 absl::GetFlag(FLAGS_protected_attribute));
  if (!rows.ok()) {
    std::fprintf(stderr, "error: %s\n", rows.status().ToString().c_str());
    return 1;
  }
  posttrain::TabularOptions split;
  split.seed = seed;
  auto encoded = posttrain::EncodeTabular(*schema, *rows, split);
  if (!encoded.ok()) {
    std::fprintf(stderr, "error: %s\n", encoded.status().ToString().c_str());
    return 1;
  }
  auto data = std::make_shared<posttrain::TabularData>(std::move(*encoded));
  std::printf(
      "data set: %s (%s), protected attribute: %s; %lld rows (%lld dropped "
      "for a missing value), %lld features; %lld train, %lld validation, "
      "%lld test\n",
      data->name.c_str(), absl::GetFlag(FLAGS_data_dir).c_str(),
      data->protected_name.c_str(), static_cast<long long>(data->rows),
      static_cast<long long>(data->rows_dropped_missing),
      static_cast<long long>(data->features),
      static_cast<long long>(data->train.size()),
      static_cast<long long>(data->validation.size()),
      static_cast<long long>(data->test.size()));

  torch::nn::Sequential model = posttrain::ReferenceMlp(data->features, seed);
  torch::optim::Adam optimizer(
      model->parameters(), torch::optim::AdamOptions(absl::GetFlag(FLAGS_lr)));

  // posttrain: the task and the one callback.
  posttrain::FmtOptions fmt;
  fmt.variant = absl::GetFlag(FLAGS_variant);
  fmt.data = data;
  fmt.pipeline.seed = seed;
  auto task = posttrain::MakeFmtTask(fmt);
  if (!task.ok()) {
    std::fprintf(stderr, "error: %s\n", task.status().ToString().c_str());
    return 1;
  }
  posttrain::PostTrainCallbackOptions options;
  options.directory = absl::GetFlag(FLAGS_store);
  options.history.seed = seed;
  posttrain::PostTrainCallback post(model, std::move(*task), options);
  if (auto s = post.OnTrainBegin(); !s.ok()) {  // posttrain
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  }
  const posttrain::TabularSplit& train = data->train;
  const int64_t bs = absl::GetFlag(FLAGS_batch_size);
  auto gen = at::detail::createCPUGenerator(seed);
  int epochs = absl::GetFlag(FLAGS_epochs);
  if (epochs <= 0) {
    const int64_t batches = (train.size() + bs - 1) / bs;
    epochs =
        static_cast<int>(std::max<int64_t>(20, (1000 + batches - 1) / batches));
  }
  for (int epoch = 0; epoch < epochs; ++epoch) {
    model->train();
    const at::Tensor order = torch::randperm(train.size(), gen);
    double loss_sum = 0;
    for (int64_t b = 0; b < train.size(); b += bs) {
      const at::Tensor idx = order.narrow(0, b, std::min(bs, train.size() - b));
      const at::Tensor x = train.x.index_select(0, idx);
      const at::Tensor y = train.y.index_select(0, idx);
      optimizer.zero_grad();
      at::Tensor loss =
          torch::nn::functional::cross_entropy(model->forward(x), y);
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>() * idx.numel();
      post.OnBatchEnd({x, y}).IgnoreError();  // posttrain
    }
    post.OnEpochEnd(epoch,
                    {{"train_loss", loss_sum / train.size()}})  // posttrain
        .IgnoreError();
  }
  auto before = Evaluate(model, data->test);
  if (auto s = post.OnTrainEnd(); !s.ok()) {  // posttrain
    std::fprintf(stderr, "post-training: %s\n", s.ToString().c_str());
  }
  auto after = Evaluate(model, data->test);
  if (!before.ok() || !after.ok()) {
    std::fprintf(
        stderr, "error: %s\n",
        (before.ok() ? after.status() : before.status()).ToString().c_str());
    return 1;
  }
  std::printf(
      "\n%s, protected %s, test split (%lld rows), %s:\n\n"
      "| metric | original | %s |\n|---|---|---|\n",
      data->name.c_str(), data->protected_name.c_str(),
      static_cast<long long>(data->test.size()),
      "AIF360 signs (unprivileged − privileged)", fmt.variant.c_str());
  const struct {
    const char* name;
    double b, a;
  } table[] = {{"accuracy", before->accuracy, after->accuracy},
               {"balanced accuracy", before->balanced_accuracy,
                after->balanced_accuracy},
               {"SPD", before->spd, after->spd},
               {"DI", before->di, after->di},
               {"EOD", before->eod, after->eod},
               {"AOD", before->aod, after->aod},
               {"AAOD", before->aaod, after->aaod},
               {"|SPD|", before->abs_spd(), after->abs_spd()},
               {"|EOD|", before->abs_eod(), after->abs_eod()}};
  for (const auto& row : table) {
    std::printf("| %s | %.4f | %.4f |\n", row.name, row.b, row.a);
  }
  double phase_s = 0;
  bool accepted = false;
  if (const posttrain::PipelineResult* r = post.result()) {
    phase_s = r->augment_seconds + r->slice_seconds + r->tune_seconds;
    accepted = r->tune.accepted;
    std::printf(
        "\n%d training epochs; post-training phase: %.1f s (pairing "
        "%.1f, slicing %.1f, tuning %.1f)\n",
        epochs, phase_s, r->augment_seconds, r->slice_seconds, r->tune_seconds);
    if (!r->tune.accepted) {
      std::printf("The original model was kept: %s.\n", r->tune.reason.c_str());
    }
  }
  // One line for scripts (bench/fmt_seeds.sh).
  std::printf(
      "RESULT data=%s protected=%s variant=%s seed=%llu accepted=%d "
      "acc_before=%.6f acc_after=%.6f aaod_before=%.6f aaod_after=%.6f "
      "abs_eod_before=%.6f abs_eod_after=%.6f abs_spd_before=%.6f "
      "abs_spd_after=%.6f phase_s=%.2f\n",
      data->name.c_str(), data->protected_name.c_str(), fmt.variant.c_str(),
      static_cast<unsigned long long>(seed), accepted ? 1 : 0, before->accuracy,
      after->accuracy, before->aaod, after->aaod, before->abs_eod(),
      after->abs_eod(), before->abs_spd(), after->abs_spd(), phase_s);
  return 0;
}

#include "fairness/baselines.h"

#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

std::vector<int64_t> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.to(torch::kCPU, torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(),
                              c.data_ptr<int64_t>() + c.numel());
}

}  // namespace

int TrainingEpochs(const TabularTrainOptions& options, int64_t rows) {
  if (options.epochs > 0) return options.epochs;
  const int64_t batches = (rows + options.batch_size - 1) / options.batch_size;
  return static_cast<int>(std::max<int64_t>(
      20, (1000 + batches - 1) / std::max<int64_t>(1, batches)));
}

absl::Status TrainTabular(torch::nn::Sequential& model,
                          const TabularSplit& train,
                          const TabularTrainOptions& options,
                          const std::vector<double>& weights,
                          Callback* callback) {
  if (train.size() == 0 || options.batch_size < 1 || !(options.lr > 0)) {
    return absl::InvalidArgumentError(
        "tabular training needs rows, batch_size >= 1 and lr > 0");
  }
  if (!weights.empty() &&
      static_cast<int64_t>(weights.size()) != train.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        weights.size(), " weights for ", train.size(), " training rows"));
  }
  return CallTorch("tabular training", [&] {
    torch::optim::Adam adam(model->parameters(),
                            torch::optim::AdamOptions(options.lr));
    auto gen = at::detail::createCPUGenerator(options.seed);
    const at::Tensor w =
        weights.empty()
            ? at::Tensor()
            : torch::tensor(weights, torch::kDouble).to(torch::kFloat);
    const int epochs = TrainingEpochs(options, train.size());
    for (int epoch = 0; epoch < epochs; ++epoch) {
      model->train();
      if (callback) callback->OnEpochBegin(epoch).IgnoreError();
      const at::Tensor order = torch::randperm(train.size(), gen);
      double loss_sum = 0;
      for (int64_t b = 0; b < train.size(); b += options.batch_size) {
        const at::Tensor idx =
            order.narrow(0, b, std::min(options.batch_size, train.size() - b));
        const at::Tensor x = train.x.index_select(0, idx);
        const at::Tensor y = train.y.index_select(0, idx);
        adam.zero_grad();
        const at::Tensor logits = model->forward(x);
        at::Tensor loss;
        if (w.defined()) {
          const at::Tensor wb = w.index_select(0, idx);
          loss =
              (torch::nn::functional::cross_entropy(
                   logits, y,
                   torch::nn::functional::CrossEntropyFuncOptions().reduction(
                       torch::kNone)) *
               wb)
                  .sum() /
              wb.sum();
        } else {
          loss = torch::nn::functional::cross_entropy(logits, y);
        }
        loss.backward();
        adam.step();
        loss_sum += loss.item<double>() * idx.numel();
        if (callback) {
          callback->OnBatchEnd({x, y, logits.detach(), loss.item<double>()})
              .IgnoreError();
        }
      }
      if (callback) {
        callback->OnEpochEnd(epoch, {{"train_loss", loss_sum / train.size()}})
            .IgnoreError();
      }
    }
  });
}

absl::StatusOr<std::vector<double>> FavourableProbability(
    const torch::nn::Sequential& model, const at::Tensor& x) {
  std::vector<double> p;
  PT_RETURN_IF_ERROR(CallTorch("favourable probability", [&] {
    torch::NoGradGuard g;
    torch::nn::Sequential m = model;
    EvalModeGuard eval(*m);
    const at::Tensor prob = torch::softmax(m->forward(x), 1)
                                .select(1, 1)
                                .to(torch::kDouble)
                                .contiguous();
    p.assign(prob.data_ptr<double>(), prob.data_ptr<double>() + prob.numel());
  }));
  return p;
}

absl::StatusOr<FairnessMetrics> EvaluateTabular(
    const torch::nn::Sequential& model, const TabularSplit& split) {
  at::Tensor pred;
  PT_RETURN_IF_ERROR(CallTorch("evaluating", [&] {
    torch::NoGradGuard g;
    torch::nn::Sequential m = model;
    EvalModeGuard eval(*m);
    pred = m->forward(split.x).argmax(1);
  }));
  return ComputeFairnessMetrics(ToVector(split.y), ToVector(pred),
                                ToVector(split.a));
}

absl::Status TrainReweighed(torch::nn::Sequential& model,
                            const TabularData& data,
                            const TabularTrainOptions& options) {
  PT_ASSIGN_OR_RETURN(
      std::vector<double> w,
      ReweighingWeights(ToVector(data.train.y), ToVector(data.train.a)));
  return TrainTabular(model, data.train, options, w);
}

TabularSplit DropProtected(const TabularSplit& split,
                           int64_t protected_feature) {
  const int64_t d = split.x.size(1);
  std::vector<at::Tensor> parts;
  if (protected_feature > 0)
    parts.push_back(split.x.narrow(1, 0, protected_feature));
  if (protected_feature + 1 < d) {
    parts.push_back(
        split.x.narrow(1, protected_feature + 1, d - protected_feature - 1));
  }
  return {torch::cat(parts, 1), split.y, split.a};
}

}  // namespace posttrain

#include "cnn_training.h"

#include <torch/torch.h>

#include <chrono>

namespace fmnist {

torch::nn::Sequential MakeCnn() {
  namespace nn = torch::nn;
  return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 16, 3).padding(1)),
                        nn::BatchNorm2d(16), nn::ReLU(), nn::MaxPool2d(2),
                        nn::Conv2d(nn::Conv2dOptions(16, 32, 3).padding(1)),
                        nn::BatchNorm2d(32), nn::ReLU(), nn::MaxPool2d(2),
                        nn::Flatten(), nn::Linear(32 * 7 * 7, 64), nn::ReLU(),
                        nn::Linear(64, 10));
}

EpochResult TrainEpoch(
    torch::nn::Sequential& model, torch::optim::Adam& optimizer,
    const posttrain::ImageDataset& train, int64_t batch_size, uint64_t seed,
    const std::function<void(const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, double)>& on_batch) {
  const auto start = std::chrono::steady_clock::now();
  model->train();
  auto gen = at::detail::createCPUGenerator(seed);
  const int64_t n = train.size();
  torch::Tensor order = torch::randperm(n, gen, torch::kLong);
  EpochResult r;
  double loss_sum = 0;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    torch::Tensor idx = order.slice(0, begin, std::min(n, begin + batch_size));
    torch::Tensor x = train.images.index_select(0, idx);
    torch::Tensor y = train.labels.index_select(0, idx);
    optimizer.zero_grad();
    torch::Tensor logits = model->forward(x);
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits, y);
    loss.backward();
    optimizer.step();
    const double l = loss.item<double>();
    loss_sum += l;
    ++r.steps;
    if (on_batch) on_batch(x, y, logits.detach(), l);
  }
  r.loss = loss_sum / static_cast<double>(std::max<int64_t>(r.steps, 1));
  r.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return r;
}

double Accuracy(torch::nn::Sequential& model,
                const posttrain::ImageDataset& data, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  int64_t correct = 0;
  for (int64_t b = 0; b < data.size(); b += batch_size) {
    const int64_t e = std::min(data.size(), b + batch_size);
    torch::Tensor pred = model->forward(data.images.slice(0, b, e)).argmax(1);
    correct += pred.eq(data.labels.slice(0, b, e)).sum().item<int64_t>();
  }
  model->train(was_training);
  return data.size() ? static_cast<double>(correct) / data.size() : 0.0;
}

}  // namespace fmnist

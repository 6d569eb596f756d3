// The Fashion-MNIST example's model and an ordinary LibTorch training loop,
// shared by the example program and the benchmarks that time it.
#ifndef POSTTRAIN_EXAMPLES_FASHION_MNIST_CNN_TRAINING_H_
#define POSTTRAIN_EXAMPLES_FASHION_MNIST_CNN_TRAINING_H_

#include <torch/nn/modules/container/sequential.h>
#include <torch/optim/adam.h>

#include <cstdint>
#include <functional>

#include "robustness/fashion_mnist.h"

namespace fmnist {

// Conv(1→16,3)+BN+ReLU+MaxPool, Conv(16→32,3)+BN+ReLU+MaxPool, Flatten,
// Linear(1568→64)+ReLU, Linear(64→10): 104k parameters.
torch::nn::Sequential MakeCnn();

struct EpochResult {
  double loss = 0;     // mean training loss
  double seconds = 0;  // wall time of the epoch's batches
  int64_t steps = 0;
};

// One epoch of minibatch Adam over `train` in a seeded random order. After
// every optimizer step `on_batch(inputs, targets, logits, loss)` runs when
// set (this is where a user's loop calls its callbacks).
EpochResult TrainEpoch(
    torch::nn::Sequential& model, torch::optim::Adam& optimizer,
    const posttrain::ImageDataset& train, int64_t batch_size, uint64_t seed,
    const std::function<void(const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, double)>& on_batch = {});

// Top-1 accuracy in [0, 1] of `model` on `data`, in eval mode.
double Accuracy(torch::nn::Sequential& model,
                const posttrain::ImageDataset& data, int64_t batch_size = 1000);

}  // namespace fmnist

#endif  // POSTTRAIN_EXAMPLES_FASHION_MNIST_CNN_TRAINING_H_

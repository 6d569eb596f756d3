// SequentialBlock: a Sequential that can sit inside another Sequential.
//
// LibTorch's AnyModule cannot hold a plain nn::Sequential (its forward is a
// template), so a nested Sequential must be a subclass with a plain
// forward(Tensor). Models that nest use this one (or any SequentialImpl
// subclass of their own; DescribeSequential accepts both), and
// BuildSequential rebuilds nested levels as SequentialBlock.
//
// Example:
//   torch::nn::Sequential net(
//       posttrain::SequentialBlock(torch::nn::Conv2d(1, 4, 3),
//       torch::nn::ReLU()), torch::nn::Flatten(), torch::nn::Linear(4 * 26 *
//       26, 10));
//
// Includes torch/nn/modules/container/sequential.h: include it only where a
// model is built.
#ifndef POSTTRAIN_COMMON_SEQUENTIAL_BLOCK_H_
#define POSTTRAIN_COMMON_SEQUENTIAL_BLOCK_H_

#include <torch/nn/modules/container/sequential.h>

#include <utility>

namespace posttrain {

class SequentialBlockImpl : public torch::nn::SequentialImpl {
 public:
  using torch::nn::SequentialImpl::SequentialImpl;
  at::Tensor forward(at::Tensor x) {
    return torch::nn::SequentialImpl::forward(std::move(x));
  }
};
TORCH_MODULE(SequentialBlock);

}  // namespace posttrain

#endif  // POSTTRAIN_COMMON_SEQUENTIAL_BLOCK_H_

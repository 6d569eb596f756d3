// BatchNormEval: a torch::nn::BatchNorm2d in eval mode (running statistics)
// whose backward computes only the gradients autograd asks for, with the
// same values and gradients as LibTorch 1.13's batch_norm, bit for bit.
//
// Why: LibTorch 1.13's batch-norm backward reduces grad_output and
// (input - mean) * grad_output over every channel's plane, for the weight
// and bias gradients, on every call, even when they are not wanted. The
// tuning loop freezes BatchNorm (it tunes the Linear and Conv2d layers), so
// that work is thrown away at every step (docs/BENCHMARKS.md, issue 13).
// Here the forward is LibTorch's own batch_norm call, as the module makes
// it. The backward, when only the input's gradient is wanted, is the eval
// kernel's formula: grad_input = (grad_output * invstd) * weight per
// channel, invstd = float(1 / sqrt(double(running_var) + eps)), the same
// two float roundings. When the weight's or bias's gradient is wanted it
// calls LibTorch's native_batch_norm_backward, as autograd would. One
// backward: a double backward (create_graph) is an error.
// Example:
//   torch::nn::BatchNorm2d bn(16);
//   bn->eval();
//   at::Tensor x = at::randn({8, 16, 28, 28}).requires_grad_();
//   at::Tensor y = BatchNormEval(*bn, x);  // as bn->forward(x)
//   y.sum().backward();
//
// Thread safety: stateless; safe to call concurrently. ModelView's switch
// for it is FastBatchNorm() in common/model_view.h.
#ifndef POSTTRAIN_COMMON_BATCH_NORM_EVAL_H_
#define POSTTRAIN_COMMON_BATCH_NORM_EVAL_H_

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/batchnorm.h>

namespace posttrain {

// True when `bn` is in eval mode with running statistics and affine
// parameters (float32, CPU) and `x` is a contiguous 4-D float32 CPU tensor
// with bn's number of channels.
bool BatchNormEvalApplies(const torch::nn::BatchNorm2dImpl& bn,
                          const at::Tensor& x);

// bn->forward(x) with the backward above. Throws c10::Error unless
// BatchNormEvalApplies(bn, x).
at::Tensor BatchNormEval(const torch::nn::BatchNorm2dImpl& bn,
                         const at::Tensor& x);

}  // namespace posttrain

#endif  // POSTTRAIN_COMMON_BATCH_NORM_EVAL_H_

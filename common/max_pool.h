// MaxPool2x2: max pooling with a 2x2 window and stride 2 (no padding,
// dilation 1, floor mode) on NCHW float CPU tensors, with the same values
// and the same gradients as LibTorch 1.13's max_pool2d, bit for bit.
//
// Why: that kernel scans each window with 64-bit index bookkeeping per
// element; in the tuning loop (grad mode, NCHW) its forward was the largest
// single op of the post-training phase (docs/BENCHMARKS.md, issue 13). Here
// one pass per plane keeps each window's maximum and a one-byte index of
// where it was (max_pool2d keeps an int64 index, 8 bytes); the backward
// writes each input's gradient in one pass (max_pool2d zeroes the input's
// gradient and then scatters). The index is the one max_pool2d's kernel
// picks: the first maximum in window order (0,0), (0,1), (1,0), (1,1); in
// a window with a NaN, the last NaN (its `val > max || isnan(val)`).
// Stride equals the kernel, so windows never overlap and each input
// element gets its window's gradient or zero, as with max_pool2d. One
// backward: a double backward (create_graph) is an error, not a silent
// zero. Planes run on LibTorch's intra-op threads when the unit is built
// with OpenMP (GCC, POSTTRAIN_OPENMP_POOL, the default), else on one.
// Example:
//   at::Tensor x = at::randn({8, 16, 28, 28}).requires_grad_();
//   at::Tensor y = MaxPool2x2(x);  // as at::max_pool2d(x, {2, 2})
//   y.sum().backward();
//
// Thread safety: stateless; safe to call concurrently. ModelView's switch
// for it is FastMaxPool() in common/model_view.h.
#ifndef POSTTRAIN_COMMON_MAX_POOL_H_
#define POSTTRAIN_COMMON_MAX_POOL_H_

#include <ATen/core/Tensor.h>
#include <torch/nn/options/pooling.h>

namespace posttrain {

// True when a MaxPool2d with `options` is what MaxPool2x2 computes (2x2
// kernel, stride 2, no padding, dilation 1, floor mode) and `x` is a
// contiguous 4-D float32 CPU tensor with channels and at least a 2x2 map.
bool MaxPool2x2Applies(const torch::nn::MaxPool2dOptions& options,
                       const at::Tensor& x);

// Throws c10::Error unless x is a 4-D float32 CPU tensor with channels and
// a map of at least 2x2.
at::Tensor MaxPool2x2(const at::Tensor& x);

}  // namespace posttrain

#endif  // POSTTRAIN_COMMON_MAX_POOL_H_

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
// backward (no double backward).
// Example:
//   at::Tensor x = at::randn({8, 16, 28, 28}).requires_grad_();
//   at::Tensor y = MaxPool2x2(x);  // as at::max_pool2d(x, {2, 2})
//   y.sum().backward();
//
// Thread safety: stateless; safe to call concurrently.
#ifndef POSTTRAIN_COMMON_MAX_POOL_H_
#define POSTTRAIN_COMMON_MAX_POOL_H_

#include <ATen/core/Tensor.h>

#include "common/model_spec.pb.h"

namespace posttrain {

// True when `spec` is a MaxPool2d that MaxPool2x2 computes exactly (2x2
// kernel, stride 2, no padding, dilation 1, floor mode) and `x` is a
// contiguous 4-D float32 CPU tensor with at least a 2x2 map.
bool MaxPool2x2Applies(const pb::LayerSpec& spec, const at::Tensor& x);

// REQUIRES: x is a 4-D float tensor with height and width >= 2.
at::Tensor MaxPool2x2(const at::Tensor& x);

// Whether ModelView::Forward uses MaxPool2x2 where it applies (default on;
// POSTTRAIN_FAST_MAX_POOL=0 turns it off, to compare).
bool FastMaxPool();
void SetFastMaxPool(bool on);

}  // namespace posttrain

#endif  // POSTTRAIN_COMMON_MAX_POOL_H_

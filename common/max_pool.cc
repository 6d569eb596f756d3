#include "common/max_pool.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace posttrain {
namespace {

// One pass over each plane: a window's maximum and its index k in window
// order (0,0), (0,1), (1,0), (1,1), kept as the kernel keeps it: a value
// replaces the running maximum when greater or NaN; the running maximum
// starts at the first value (max_pool2d starts at -inf with index 0, which
// chooses the same element).
void PoolForward(const float* x, int64_t planes, int64_t h, int64_t w,
                 float* out, uint8_t* index) {
  const int64_t oh = h / 2, ow = w / 2;
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      for (int64_t i = 0; i < oh; ++i) {
        const float* r0 = x + (p * h + 2 * i) * w;
        const float* r1 = r0 + w;
        float* o = out + (p * oh + i) * ow;
        uint8_t* k = index + (p * oh + i) * ow;
        for (int64_t j = 0; j < ow; ++j) {
          float best = r0[2 * j];
          uint8_t at = 0;
          const float v1 = r0[2 * j + 1];
          if (v1 > best || std::isnan(v1)) best = v1, at = 1;
          const float v2 = r1[2 * j];
          if (v2 > best || std::isnan(v2)) best = v2, at = 2;
          const float v3 = r1[2 * j + 1];
          if (v3 > best || std::isnan(v3)) best = v3, at = 3;
          o[j] = best;
          k[j] = at;
        }
      }
    }
  });
}

// Writes every element of grad_x: each window's gradient at its index,
// zero elsewhere (and in an odd map's last row and column). 0.0f + g, as
// max_pool2d's scatter-add into zeros computes it (a -0.0 becomes +0.0).
void PoolBackward(const float* grad, const uint8_t* index, int64_t planes,
                  int64_t h, int64_t w, float* grad_x) {
  const int64_t oh = h / 2, ow = w / 2;
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      float* plane = grad_x + p * h * w;
      for (int64_t i = 0; i < oh; ++i) {
        float* r0 = plane + 2 * i * w;
        float* r1 = r0 + w;
        const float* g = grad + (p * oh + i) * ow;
        const uint8_t* k = index + (p * oh + i) * ow;
        for (int64_t j = 0; j < ow; ++j) {
          const float v = 0.0f + g[j];
          r0[2 * j] = k[j] == 0 ? v : 0.0f;
          r0[2 * j + 1] = k[j] == 1 ? v : 0.0f;
          r1[2 * j] = k[j] == 2 ? v : 0.0f;
          r1[2 * j + 1] = k[j] == 3 ? v : 0.0f;
        }
        if (w % 2) r0[w - 1] = r1[w - 1] = 0.0f;
      }
      if (h % 2) std::fill(plane + (h - 1) * w, plane + h * w, 0.0f);
    }
  });
}

struct MaxPool2x2Function
    : public torch::autograd::Function<MaxPool2x2Function> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& input) {
    const at::Tensor x = input.contiguous();
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    at::Tensor out = at::empty({n, c, h / 2, w / 2}, x.options());
    at::Tensor index = at::empty(out.sizes(), x.options().dtype(at::kByte));
    PoolForward(x.data_ptr<float>(), n * c, h, w, out.data_ptr<float>(),
                index.data_ptr<uint8_t>());
    ctx->save_for_backward({index});
    ctx->saved_data["h"] = h;
    ctx->saved_data["w"] = w;
    return out;
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grads) {
    const at::Tensor index = ctx->get_saved_variables()[0];
    const int64_t h = ctx->saved_data["h"].toInt();
    const int64_t w = ctx->saved_data["w"].toInt();
    const at::Tensor grad = grads[0].contiguous();
    at::Tensor grad_x =
        at::empty({index.size(0), index.size(1), h, w}, grad.options());
    PoolBackward(grad.data_ptr<float>(), index.data_ptr<uint8_t>(),
                 index.size(0) * index.size(1), h, w, grad_x.data_ptr<float>());
    return {grad_x};
  }
};

std::atomic<bool>& FastMaxPoolFlag() {
  static std::atomic<bool> flag([] {
    const char* v = std::getenv("POSTTRAIN_FAST_MAX_POOL");
    return v == nullptr || std::string(v) != "0";
  }());
  return flag;
}

bool IsPair(const google::protobuf::RepeatedField<int64_t>& v, int64_t a) {
  return v.size() == 2 && v[0] == a && v[1] == a;
}

}  // namespace

bool MaxPool2x2Applies(const pb::LayerSpec& spec, const at::Tensor& x) {
  return spec.kind() == pb::LayerSpec::MAX_POOL2D &&
         IsPair(spec.kernel_size(), 2) && IsPair(spec.stride(), 2) &&
         IsPair(spec.padding(), 0) && IsPair(spec.dilation(), 1) &&
         !spec.ceil_mode() && x.defined() && x.dim() == 4 &&
         x.device().is_cpu() && x.scalar_type() == at::kFloat &&
         x.is_contiguous() && x.size(2) >= 2 && x.size(3) >= 2;
}

at::Tensor MaxPool2x2(const at::Tensor& x) {
  return MaxPool2x2Function::apply(x);
}

bool FastMaxPool() { return FastMaxPoolFlag().load(); }
void SetFastMaxPool(bool on) { FastMaxPoolFlag().store(on); }

}  // namespace posttrain

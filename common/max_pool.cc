#include "common/max_pool.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

// v != v is the NaN test of the kernel's tie and NaN rule; fast math would
// fold it away.
#if defined(__FAST_MATH__) || \
    defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__
#error "common/max_pool.cc needs IEEE NaN comparisons (no -ffast-math)"
#endif

namespace posttrain {
namespace {

// Four floats or four int32s, GCC/clang vector extensions
// (__builtin_shufflevector: GCC 12 or clang): SSE2 on
// x86-64 (the baseline every build has), NEON on arm64. Comparisons give
// -1/0 lanes, and `mask ? a : b` selects per lane.
typedef float V4f __attribute__((vector_size(16)));
typedef int32_t V4i __attribute__((vector_size(16)));

V4f Load(const float* p) {
  V4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void Store(float* p, V4f v) { std::memcpy(p, &v, sizeof v); }

// Four windows: their maxima and indexes k in window order (0,0), (0,1),
// (1,0), (1,1), as max_pool2d's kernel keeps them: a value replaces the
// running maximum when greater or NaN (v != v). The running maximum starts
// at the first value (the kernel starts at -inf with index 0, which picks
// the same element). r0 and r1 hold 8 floats each.
void Pool4(const float* r0, const float* r1, V4f* best, V4i* at) {
  const V4f r0a = Load(r0), r0b = Load(r0 + 4);
  const V4f r1a = Load(r1), r1b = Load(r1 + 4);
  const V4f v[4] = {__builtin_shufflevector(r0a, r0b, 0, 2, 4, 6),
                    __builtin_shufflevector(r0a, r0b, 1, 3, 5, 7),
                    __builtin_shufflevector(r1a, r1b, 0, 2, 4, 6),
                    __builtin_shufflevector(r1a, r1b, 1, 3, 5, 7)};
  *best = v[0];
  *at = V4i{0, 0, 0, 0};
  for (int k = 1; k < 4; ++k) {
    const V4i update = (v[k] > *best) | (v[k] != v[k]);
    *best = update ? v[k] : *best;
    *at = update ? V4i{k, k, k, k} : *at;
  }
}

// One row of windows (ow of them) over input rows r0 and r1. The last
// windows, fewer than four, go through Pool4 on a copy padded with -inf.
void PoolRows(const float* r0, const float* r1, int64_t ow, float* out,
              uint8_t* index) {
  V4f best;
  V4i at;
  int64_t j = 0;
  for (; j + 4 <= ow; j += 4) {
    Pool4(r0 + 2 * j, r1 + 2 * j, &best, &at);
    Store(out + j, best);
    for (int l = 0; l < 4; ++l) index[j + l] = static_cast<uint8_t>(at[l]);
  }
  if (j == ow) return;
  float t0[8], t1[8];
  std::fill(t0, t0 + 8, -INFINITY);
  std::fill(t1, t1 + 8, -INFINITY);
  std::copy(r0 + 2 * j, r0 + 2 * ow, t0);
  std::copy(r1 + 2 * j, r1 + 2 * ow, t1);
  Pool4(t0, t1, &best, &at);
  for (int l = 0; j + l < ow; ++l) {
    out[j + l] = best[l];
    index[j + l] = static_cast<uint8_t>(at[l]);
  }
}

// The gradients of eight inputs of each of two rows from four windows'
// gradient and indexes: each window's gradient at its index, zero
// elsewhere. 0.0f + g, as max_pool2d's scatter-add into zeros computes it
// (a -0.0 becomes +0.0).
void Unpool4(V4f g, V4i at, float* r0, float* r1) {
  const V4f zero = {0, 0, 0, 0};
  g = zero + g;
  V4f e[4];
  for (int k = 0; k < 4; ++k) e[k] = at == V4i{k, k, k, k} ? g : zero;
  Store(r0, __builtin_shufflevector(e[0], e[1], 0, 4, 1, 5));
  Store(r0 + 4, __builtin_shufflevector(e[0], e[1], 2, 6, 3, 7));
  Store(r1, __builtin_shufflevector(e[2], e[3], 0, 4, 1, 5));
  Store(r1 + 4, __builtin_shufflevector(e[2], e[3], 2, 6, 3, 7));
}

void UnpoolRows(const float* grad, const uint8_t* index, int64_t ow, float* r0,
                float* r1) {
  int64_t j = 0;
  for (; j + 4 <= ow; j += 4) {
    Unpool4(Load(grad + j),
            V4i{index[j], index[j + 1], index[j + 2], index[j + 3]}, r0 + 2 * j,
            r1 + 2 * j);
  }
  if (j == ow) return;
  V4f g = {0, 0, 0, 0};
  V4i at = {0, 0, 0, 0};
  for (int l = 0; j + l < ow; ++l) g[l] = grad[j + l], at[l] = index[j + l];
  float t0[8], t1[8];
  Unpool4(g, at, t0, t1);
  std::copy(t0, t0 + 2 * (ow - j), r0 + 2 * j);
  std::copy(t1, t1 + 2 * (ow - j), r1 + 2 * j);
}

// Planes are split over LibTorch's intra-op threads (at::parallel_for;
// this file is compiled with OpenMP under GCC, see common/CMakeLists.txt,
// and runs serially without it), at least 32768 input values a task
// (ATen's GRAIN_SIZE for elementwise kernels).
int64_t PlanesPerTask(int64_t h, int64_t w) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, h * w));
}

void PoolForward(const float* x, int64_t planes, int64_t h, int64_t w,
                 float* out, uint8_t* index) {
  const int64_t oh = h / 2, ow = w / 2;
  at::parallel_for(0, planes, PlanesPerTask(h, w), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      for (int64_t i = 0; i < oh; ++i) {
        const float* r0 = x + (p * h + 2 * i) * w;
        PoolRows(r0, r0 + w, ow, out + (p * oh + i) * ow,
                 index + (p * oh + i) * ow);
      }
    }
  });
}

// Writes every element of grad_x, an odd map's last row and column too.
void PoolBackward(const float* grad, const uint8_t* index, int64_t planes,
                  int64_t h, int64_t w, float* grad_x) {
  const int64_t oh = h / 2, ow = w / 2;
  at::parallel_for(0, planes, PlanesPerTask(h, w), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      float* plane = grad_x + p * h * w;
      for (int64_t i = 0; i < oh; ++i) {
        float* r0 = plane + 2 * i * w;
        float* r1 = r0 + w;
        UnpoolRows(grad + (p * oh + i) * ow, index + (p * oh + i) * ow, ow, r0,
                   r1);
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
    TORCH_CHECK(input.dim() == 4 && input.device().is_cpu() &&
                    input.scalar_type() == at::kFloat && input.size(1) > 0 &&
                    input.size(2) >= 2 && input.size(3) >= 2,
                "MaxPool2x2: needs a 4-D float CPU tensor with channels and "
                "a map of at least 2x2, got ",
                input.sizes(), " ", input.toString());
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
    // The gradient below is written by hand and has no graph of its own.
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "MaxPool2x2: no double backward (create_graph)");
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

}  // namespace

bool MaxPool2x2Applies(const torch::nn::MaxPool2dOptions& o,
                       const at::Tensor& x) {
  auto all = [](const torch::ExpandingArray<2>& v, int64_t a) {
    return (*v)[0] == a && (*v)[1] == a;
  };
  return all(o.kernel_size(), 2) && all(o.stride(), 2) && all(o.padding(), 0) &&
         all(o.dilation(), 1) && !o.ceil_mode() && x.defined() &&
         x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
         x.is_contiguous() && x.size(1) > 0 && x.size(2) >= 2 && x.size(3) >= 2;
}

at::Tensor MaxPool2x2(const at::Tensor& x) {
  return MaxPool2x2Function::apply(x);
}

}  // namespace posttrain

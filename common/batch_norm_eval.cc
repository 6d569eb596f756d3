#include "common/batch_norm_eval.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/functional/batchnorm.h>

#include <cmath>
#include <tuple>
#include <vector>

namespace posttrain {
namespace {

struct BatchNormEvalFunction
    : public torch::autograd::Function<BatchNormEvalFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias,
                            const at::Tensor& running_mean,
                            const at::Tensor& running_var, double momentum,
                            double eps) {
    ctx->save_for_backward({x, weight, running_mean, running_var});
    ctx->saved_data["eps"] = eps;
    // The module's own call (BatchNorm2dImpl::forward in eval mode).
    return torch::nn::functional::detail::batch_norm(
        x, running_mean, running_var, weight, bias, /*training=*/false,
        momentum, eps);
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grads) {
    // The gradient below is written by hand and has no graph of its own.
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "BatchNormEval: no double backward (create_graph)");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &mean = saved[2],
                     &var = saved[3];
    const double eps = ctx->saved_data["eps"].toDouble();
    const at::Tensor& grad = grads[0];
    const bool want_x = ctx->needs_input_grad(0);
    const bool want_weight = ctx->needs_input_grad(1);
    const bool want_bias = ctx->needs_input_grad(2);
    torch::autograd::variable_list out(7);
    if (!grad.defined()) return out;
    if (want_weight || want_bias) {
      // What autograd runs for the module: LibTorch's own backward.
      auto r = at::native_batch_norm_backward(
          grad, x, weight, mean, var, /*save_mean=*/{}, /*save_invstd=*/{},
          /*train=*/false, eps, {want_x, want_weight, want_bias});
      out[0] = std::get<0>(r);
      out[1] = std::get<1>(r);
      out[2] = std::get<2>(r);
      return out;
    }
    if (!want_x) return out;
    // The eval kernel's grad_input: dy * invstd * w, left to right, with
    // invstd = 1 / std::sqrt(running_var[c] + eps) in double, kept as float.
    const int64_t c = var.numel();
    at::Tensor invstd = at::empty({c}, var.options());
    const at::Tensor v = var.contiguous();
    const float* vp = v.data_ptr<float>();
    float* ip = invstd.data_ptr<float>();
    for (int64_t i = 0; i < c; ++i) {
      ip[i] = static_cast<float>(1 / std::sqrt(vp[i] + eps));
    }
    const std::vector<int64_t> shape = {1, c, 1, 1};
    at::Tensor grad_x = at::mul(grad, invstd.view(shape));
    grad_x.mul_(weight.view(shape));
    out[0] = grad_x;
    return out;
  }
};

}  // namespace

bool BatchNormEvalApplies(const torch::nn::BatchNorm2dImpl& bn,
                          const at::Tensor& x) {
  if (bn.is_training() || !bn.options.track_running_stats() ||
      !bn.options.affine()) {
    return false;
  }
  const at::Tensor* params[] = {&bn.weight, &bn.bias, &bn.running_mean,
                                &bn.running_var};
  for (const at::Tensor* p : params) {
    if (!p->defined() || p->dim() != 1 || !p->device().is_cpu() ||
        p->scalar_type() != at::kFloat ||
        p->numel() != bn.options.num_features()) {
      return false;
    }
  }
  return x.defined() && x.dim() == 4 && x.device().is_cpu() &&
         x.scalar_type() == at::kFloat && x.is_contiguous() &&
         x.size(1) == bn.options.num_features();
}

at::Tensor BatchNormEval(const torch::nn::BatchNorm2dImpl& bn,
                         const at::Tensor& x) {
  TORCH_CHECK(BatchNormEvalApplies(bn, x),
              "BatchNormEval: needs an eval-mode affine BatchNorm2d with "
              "running statistics (float32, CPU) and a contiguous 4-D "
              "float32 CPU input with its channels, got ",
              x.sizes(), " ", x.toString());
  return BatchNormEvalFunction::apply(
      x, bn.weight, bn.bias, bn.running_mean, bn.running_var,
      bn.options.momentum().value_or(0.0), bn.options.eps());
}

}  // namespace posttrain

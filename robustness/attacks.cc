#include "robustness/attacks.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

std::string ShapeString(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

// What every entry point checks before running the model.
absl::Status CheckArguments(const torch::nn::Sequential& model,
                            const at::Tensor& inputs, const at::Tensor& labels,
                            int64_t batch_size) {
  if (model.is_empty()) {
    return absl::InvalidArgumentError("model is empty (a null Sequential)");
  }
  if (batch_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size must be positive, got ", batch_size));
  }
  if (!inputs.defined() || inputs.dim() == 0 || inputs.size(0) == 0 ||
      inputs.numel() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inputs are empty (shape ",
        inputs.defined() ? ShapeString(inputs) : "undefined", ")"));
  }
  if (!at::isFloatingType(inputs.scalar_type())) {
    return absl::InvalidArgumentError(
        absl::StrCat("inputs must be floating point, got ",
                     c10::toString(inputs.scalar_type())));
  }
  if (!labels.defined() || labels.dim() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "labels must have shape [N] (one class index per input), got ",
        labels.defined() ? ShapeString(labels) : "undefined"));
  }
  if (!at::isIntegralType(labels.scalar_type(), /*includeBool=*/false)) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels must be an integer tensor, got ",
                     c10::toString(labels.scalar_type())));
  }
  if (labels.size(0) != inputs.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels count ", labels.size(0),
                     " does not match inputs count ", inputs.size(0)));
  }
  return absl::OkStatus();
}

absl::Status CheckAttackOptions(const AttackOptions& options, bool pgd) {
  // Written so that NaN fails too.
  if (!(options.epsilon >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("epsilon must be >= 0, got ", options.epsilon));
  }
  if (pgd && !(options.alpha > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("alpha must be > 0, got ", options.alpha));
  }
  if (pgd && options.steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("steps must be >= 1, got ", options.steps));
  }
  return absl::OkStatus();
}

// Runs fn() (which returns a status) under CallTorch.
template <typename Fn>
absl::Status RunTorch(absl::string_view context, Fn&& fn) {
  absl::Status inner;
  absl::Status outer = CallTorch(context, [&] { inner = fn(); });
  return outer.ok() ? inner : outer;
}

// The model, where it runs, and the labels' range, found once per call.
struct Setup {
  std::shared_ptr<torch::nn::SequentialImpl> model;
  c10::Device device = c10::kCPU;
  int64_t max_label = 0;
};

// REQUIRES: CheckArguments passed.
absl::StatusOr<Setup> MakeSetup(const torch::nn::Sequential& model,
                                const at::Tensor& inputs,
                                const at::Tensor& labels) {
  Setup setup;
  setup.model = model.ptr();
  int64_t min_label = 0;
  PT_RETURN_IF_ERROR(CallTorch("reading the model and labels", [&] {
    std::vector<at::Tensor> params = setup.model->parameters();
    setup.device = params.empty() ? inputs.device() : params[0].device();
    min_label = labels.min().item<int64_t>();
    setup.max_label = labels.max().item<int64_t>();
  }));
  if (min_label < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels out of range: label ", min_label, " is negative"));
  }
  return setup;
}

// The model's logits for x, checked to be [B, C] with every label < C.
absl::StatusOr<at::Tensor> Logits(const Setup& setup, const at::Tensor& x) {
  at::Tensor logits = setup.model->forward(x);
  if (logits.dim() != 2 || logits.size(0) != x.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model must return logits [B, C]; for a batch of ",
                     x.size(0), " it returned ", ShapeString(logits)));
  }
  if (setup.max_label >= logits.size(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels out of range: label ", setup.max_label,
                     " but the model has ", logits.size(1), " outputs"));
  }
  return logits;
}

// sign(∇x CE(model(x), y)), summed over the batch (each input's gradient is
// its own). Only x receives a gradient; parameters' .grad are not touched.
absl::StatusOr<at::Tensor> LossGradientSign(const Setup& setup,
                                            const at::Tensor& x,
                                            const at::Tensor& y) {
  at::Tensor leaf = x.detach().requires_grad_(true);
  PT_ASSIGN_OR_RETURN(at::Tensor logits, Logits(setup, leaf));
  at::Tensor loss = torch::nn::functional::cross_entropy(
      logits, y,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  std::vector<at::Tensor> grads =
      torch::autograd::grad({loss}, {leaf}, /*grad_outputs=*/{},
                            /*retain_graph=*/false, /*create_graph=*/false,
                            /*allow_unused=*/true);
  // Undefined when the output does not depend on the input.
  if (!grads[0].defined()) return torch::zeros_like(x);
  return grads[0].sign();
}

// Projects `adv` onto the ε-ball around x, then onto [0, 1].
at::Tensor Project(const at::Tensor& adv, const at::Tensor& x, double epsilon) {
  return torch::min(torch::max(adv, x - epsilon), x + epsilon).clamp_(0, 1);
}

// fn(x, y, begin, end) for each batch of inputs[begin:end] (x a copy on the
// model's device, y int64 labels there); the results, moved to the inputs'
// device, concatenated along dimension 0.
using BatchFn = std::function<absl::StatusOr<at::Tensor>(
    const at::Tensor& x, const at::Tensor& y, int64_t begin, int64_t end)>;

absl::StatusOr<at::Tensor> MapBatches(
    const Setup& setup, const at::Tensor& inputs, const at::Tensor& labels,
    int64_t batch_size, absl::string_view context, const BatchFn& fn) {
  at::Tensor result;
  PT_RETURN_IF_ERROR(RunTorch(context, [&]() -> absl::Status {
    const int64_t n = inputs.size(0);
    std::vector<at::Tensor> parts;
    for (int64_t begin = 0; begin < n; begin += batch_size) {
      const int64_t end = std::min(n, begin + batch_size);
      // Copies, so that nothing the model does can reach the caller's data.
      at::Tensor x = inputs.slice(0, begin, end)
                         .detach()
                         .to(setup.device, /*non_blocking=*/false,
                             /*copy=*/true);
      at::Tensor y = labels.slice(0, begin, end).to(setup.device, at::kLong);
      PT_ASSIGN_OR_RETURN(at::Tensor out, fn(x, y, begin, end));
      parts.push_back(out.detach().to(inputs.device()));
    }
    result = parts.size() == 1 ? std::move(parts[0]) : torch::cat(parts);
    return absl::OkStatus();
  }));
  return result;
}

}  // namespace

absl::StatusOr<at::Tensor> Fgsm(const torch::nn::Sequential& model,
                                const at::Tensor& inputs,
                                const at::Tensor& labels,
                                const AttackOptions& options) {
  PT_RETURN_IF_ERROR(CheckAttackOptions(options, /*pgd=*/false));
  PT_RETURN_IF_ERROR(CheckArguments(model, inputs, labels, options.batch_size));
  PT_ASSIGN_OR_RETURN(Setup setup, MakeSetup(model, inputs, labels));
  EvalModeGuard eval(*setup.model);
  torch::AutoGradMode grad_mode(true);
  const double epsilon = options.epsilon;
  return MapBatches(setup, inputs, labels, options.batch_size, "FGSM",
                    [&](const at::Tensor& x, const at::Tensor& y, int64_t,
                        int64_t) -> absl::StatusOr<at::Tensor> {
                      PT_ASSIGN_OR_RETURN(at::Tensor sign,
                                          LossGradientSign(setup, x, y));
                      return (x + epsilon * sign).clamp_(0, 1);
                    });
}

absl::StatusOr<at::Tensor> Pgd(const torch::nn::Sequential& model,
                               const at::Tensor& inputs,
                               const at::Tensor& labels,
                               const AttackOptions& options) {
  PT_RETURN_IF_ERROR(CheckAttackOptions(options, /*pgd=*/true));
  PT_RETURN_IF_ERROR(CheckArguments(model, inputs, labels, options.batch_size));
  PT_ASSIGN_OR_RETURN(Setup setup, MakeSetup(model, inputs, labels));
  // U(0, 1) for every input element at once, so that the start does not
  // depend on batch_size.
  at::Tensor noise;
  if (options.random_start) {
    PT_RETURN_IF_ERROR(CallTorch("PGD random start", [&] {
      at::Generator generator = at::detail::createCPUGenerator(options.seed);
      noise = torch::rand(inputs.sizes(), generator,
                          torch::TensorOptions().dtype(inputs.scalar_type()));
    }));
  }
  EvalModeGuard eval(*setup.model);
  torch::AutoGradMode grad_mode(true);
  const double epsilon = options.epsilon;
  return MapBatches(
      setup, inputs, labels, options.batch_size, "PGD",
      [&](const at::Tensor& x, const at::Tensor& y, int64_t begin,
          int64_t end) -> absl::StatusOr<at::Tensor> {
        at::Tensor adv = x;
        if (noise.defined()) {
          at::Tensor u = noise.slice(0, begin, end).to(setup.device);
          adv = (x + (2 * u - 1) * epsilon).clamp_(0, 1);
        }
        for (int step = 0; step < options.steps; ++step) {
          PT_ASSIGN_OR_RETURN(at::Tensor sign, LossGradientSign(setup, adv, y));
          adv = Project(adv + options.alpha * sign, x, epsilon);
        }
        return adv;
      });
}

absl::StatusOr<double> Accuracy(const torch::nn::Sequential& model,
                                const at::Tensor& inputs,
                                const at::Tensor& labels, int64_t batch_size) {
  PT_RETURN_IF_ERROR(CheckArguments(model, inputs, labels, batch_size));
  PT_ASSIGN_OR_RETURN(Setup setup, MakeSetup(model, inputs, labels));
  EvalModeGuard eval(*setup.model);
  torch::NoGradGuard no_grad;
  PT_ASSIGN_OR_RETURN(
      at::Tensor correct,
      MapBatches(setup, inputs, labels, batch_size, "accuracy",
                 [&](const at::Tensor& x, const at::Tensor& y, int64_t,
                     int64_t) -> absl::StatusOr<at::Tensor> {
                   PT_ASSIGN_OR_RETURN(at::Tensor logits, Logits(setup, x));
                   return logits.argmax(1).eq(y).sum().reshape({1});
                 }));
  int64_t hits = 0;
  PT_RETURN_IF_ERROR(
      CallTorch("accuracy", [&] { hits = correct.sum().item<int64_t>(); }));
  return static_cast<double>(hits) / static_cast<double>(inputs.size(0));
}

}  // namespace posttrain

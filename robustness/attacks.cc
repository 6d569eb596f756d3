#include "robustness/attacks.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/allocator.h"
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

absl::Status CheckCwOptions(const CwOptions& o) {
  if (!(o.kappa >= 0) || !(o.lr > 0) || o.binary_search_steps < 1 ||
      !(o.initial_c > 0) || o.iterations < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "C&W needs kappa >= 0, lr > 0, binary_search_steps >= 1, "
        "initial_c > 0 and iterations >= 1; got kappa ",
        o.kappa, ", lr ", o.lr, ", binary_search_steps ", o.binary_search_steps,
        ", initial_c ", o.initial_c, ", iterations ", o.iterations));
  }
  return absl::OkStatus();
}

absl::Status CheckJsmaOptions(const JsmaOptions& o) {
  if (!(o.theta != 0 && std::isfinite(o.theta)) ||
      !(o.gamma > 0 && o.gamma <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSMA needs theta != 0 and gamma in (0, 1]; got theta ",
                     o.theta, ", gamma ", o.gamma));
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
  KeepFreedMemory();  // per-step activations reused, not re-faulted
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

// JSMA's pair search on the CPU without the [B, n, n] matrices: per input,
// over the pairs p < q of its domain in lexicographic order, keeping the
// first strict maximum of −α·β. That is the pair the matrix search picks
// (max returns the first maximum in row-major order, and the matrix is
// symmetric), with the same floating-point sums, so both give identical
// attacks (JsmaPairSearchMatchesTheMatrixSearch). Inputs run in parallel.
void BestPairsCpu(const at::Tensor& dt, const at::Tensor& doth,
                  const at::Tensor& domain, const at::Tensor& active,
                  bool increase, at::Tensor* p, at::Tensor* q, at::Tensor* go) {
  const at::Tensor a = dt.contiguous(), o = doth.contiguous();
  const at::Tensor dom = domain.contiguous(), act = active.contiguous();
  const int64_t b = a.size(0), n = a.size(1);
  *p = torch::zeros({b}, torch::TensorOptions(at::kLong));
  *q = torch::zeros({b}, torch::TensorOptions(at::kLong));
  *go = torch::zeros({b}, torch::TensorOptions(at::kBool));
  int64_t* const P = p->data_ptr<int64_t>();
  int64_t* const Q = q->data_ptr<int64_t>();
  bool* const GO = go->data_ptr<bool>();
  const bool* const D = dom.data_ptr<bool>();
  const bool* const ACT = act.data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "JSMA pair search", [&] {
    const scalar_t* const A = a.data_ptr<scalar_t>();
    const scalar_t* const O = o.data_ptr<scalar_t>();
    at::parallel_for(0, b, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> index;
      std::vector<scalar_t> ca, co;
      for (int64_t i = begin; i < end; ++i) {
        if (!ACT[i]) continue;
        index.clear();
        ca.clear();
        co.clear();
        for (int64_t j = 0; j < n; ++j) {
          if (!D[i * n + j]) continue;
          index.push_back(j);
          ca.push_back(A[i * n + j]);
          co.push_back(O[i * n + j]);
        }
        const size_t m = index.size();
        scalar_t best = -std::numeric_limits<scalar_t>::infinity();
        size_t bu = m, bv = m;
        for (size_t u = 0; u < m; ++u) {
          const scalar_t au = ca[u], ou = co[u];
          for (size_t v = u + 1; v < m; ++v) {
            const scalar_t alpha = au + ca[v];
            const scalar_t beta = ou + co[v];
            const bool ok =
                increase ? (alpha > 0 && beta < 0) : (alpha < 0 && beta > 0);
            if (!ok) continue;
            const scalar_t score = -alpha * beta;
            if (score > best) {
              best = score;
              bu = u;
              bv = v;
            }
          }
        }
        if (bu < m) {
          P[i] = index[bu];
          Q[i] = index[bv];
          GO[i] = true;
        }
      }
    });
  });
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

std::string AttackOptions::Describe(const std::string& name) const {
  return absl::StrFormat(
      "{\"attack\": \"%s\", \"epsilon\": %g, \"alpha\": %g, \"steps\": %d, "
      "\"random_start\": %s, \"seed\": %d, \"batch_size\": %d}",
      name, epsilon, alpha, name == "fgsm" ? 1 : steps,
      name == "pgd" && random_start ? "true" : "false", seed, batch_size);
}

std::string CwOptions::Describe() const {
  return absl::StrFormat(
      "{\"attack\": \"cw\", \"norm\": \"L2\", \"kappa\": %g, \"lr\": %g, "
      "\"binary_search_steps\": %d, \"initial_c\": %g, \"iterations\": %d, "
      "\"abort_early\": %s, \"batch_size\": %d}",
      kappa, lr, binary_search_steps, initial_c, iterations,
      abort_early ? "true" : "false", batch_size);
}

std::string JsmaOptions::Describe() const {
  return absl::StrFormat(
      "{\"attack\": \"jsma\", \"theta\": %g, \"gamma\": %g, \"saliency\": "
      "\"pairwise, logits\", \"batch_size\": %d}",
      theta, gamma, batch_size);
}

std::string AttackReport::ToJson() const {
  return absl::StrFormat(
      "{\"inputs\": %d, \"correct\": %d, \"successes\": %d, "
      "\"success_rate\": %.6f, \"robust_accuracy\": %.6f, \"mean_l2\": %.6f, "
      "\"mean_linf\": %.6f}",
      inputs, correct, successes, success_rate, robust_accuracy, mean_l2,
      mean_linf);
}

AttackOptions BimDefaults() {
  AttackOptions o;
  o.epsilon = 0.1;
  o.alpha = 0.01;
  o.steps = 20;
  o.random_start = false;
  return o;
}

absl::StatusOr<at::Tensor> Bim(const torch::nn::Sequential& model,
                               const at::Tensor& inputs,
                               const at::Tensor& labels,
                               const AttackOptions& options) {
  AttackOptions o = options;
  o.random_start = false;
  return Pgd(model, inputs, labels, o);
}

absl::StatusOr<at::Tensor> CarliniWagnerL2(const torch::nn::Sequential& model,
                                           const at::Tensor& inputs,
                                           const at::Tensor& labels,
                                           const CwOptions& options) {
  PT_RETURN_IF_ERROR(CheckCwOptions(options));
  PT_RETURN_IF_ERROR(CheckArguments(model, inputs, labels, options.batch_size));
  PT_ASSIGN_OR_RETURN(Setup setup, MakeSetup(model, inputs, labels));
  EvalModeGuard eval(*setup.model);
  torch::AutoGradMode grad_mode(true);
  const CwOptions o = options;
  return MapBatches(
      setup, inputs, labels, o.batch_size, "C&W",
      [&](const at::Tensor& x, const at::Tensor& y, int64_t,
          int64_t) -> absl::StatusOr<at::Tensor> {
        const int64_t b = x.size(0);
        const auto fopt = x.options();
        // tanh space; 1 − 1e-6 keeps atanh finite at 0 and 1.
        const at::Tensor w0 =
            torch::atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach();
        at::Tensor lower = torch::zeros({b}, fopt);
        at::Tensor upper = torch::full({b}, 1e10, fopt);
        at::Tensor c = torch::full({b}, o.initial_c, fopt);
        at::Tensor best_l2 =
            torch::full({b}, std::numeric_limits<double>::infinity(), fopt);
        at::Tensor best = x.clone();
        const at::Tensor y1 = y.unsqueeze(1);
        const int check_every = std::max(1, o.iterations / 10);
        for (int search = 0; search < o.binary_search_steps; ++search) {
          at::Tensor w = w0.clone().requires_grad_(true);
          torch::optim::Adam adam(std::vector<at::Tensor>{w},
                                  torch::optim::AdamOptions(o.lr));
          at::Tensor succeeded =
              torch::zeros({b}, y.options().dtype(at::kBool));
          double previous = std::numeric_limits<double>::infinity();
          for (int it = 0; it < o.iterations; ++it) {
            const at::Tensor adv = (torch::tanh(w) + 1) / 2;
            PT_ASSIGN_OR_RETURN(at::Tensor logits, Logits(setup, adv));
            const at::Tensor real = logits.gather(1, y1).squeeze(1);
            const at::Tensor other =
                logits.scatter(1, y1, -std::numeric_limits<float>::infinity())
                    .amax(1);
            const at::Tensor margin = real - other;
            const at::Tensor l2 = (adv - x).pow(2).flatten(1).sum(1);
            const at::Tensor loss =
                (l2 + c * torch::clamp_min(margin, -o.kappa)).sum();
            {
              torch::NoGradGuard no_grad;
              // Fooled (with the margin κ), at this iterate.
              // Fooled with the margin κ (κ = 0: another logit is higher).
              const at::Tensor fooled = margin.detach() < -o.kappa;
              const at::Tensor better = fooled & (l2.detach() < best_l2);
              best_l2 = torch::where(better, l2.detach(), best_l2);
              const std::vector<int64_t> view = [&] {
                std::vector<int64_t> v(x.dim(), 1);
                v[0] = b;
                return v;
              }();
              best = torch::where(better.view(view), adv.detach(), best);
              succeeded = succeeded | fooled;
            }
            if (o.abort_early && it % check_every == 0) {
              const double now = loss.item<double>();
              if (now > previous * 0.9999) break;
              previous = now;
            }
            std::vector<at::Tensor> g =
                torch::autograd::grad({loss}, {w}, {}, false, false, true);
            w.mutable_grad() = g[0].defined() ? g[0] : torch::zeros_like(w);
            adam.step();
          }
          // The binary search over c, per input.
          upper = torch::where(succeeded, torch::min(upper, c), upper);
          lower = torch::where(succeeded, lower, torch::max(lower, c));
          c = torch::where(succeeded | (upper < 1e9), (lower + upper) / 2,
                           c * 10);
        }
        return best;
      });
}

absl::StatusOr<at::Tensor> Jsma(const torch::nn::Sequential& model,
                                const at::Tensor& inputs,
                                const at::Tensor& targets,
                                const JsmaOptions& options) {
  PT_RETURN_IF_ERROR(CheckJsmaOptions(options));
  PT_RETURN_IF_ERROR(
      CheckArguments(model, inputs, targets, options.batch_size));
  PT_ASSIGN_OR_RETURN(Setup setup, MakeSetup(model, inputs, targets));
  EvalModeGuard eval(*setup.model);
  torch::AutoGradMode grad_mode(true);
  const JsmaOptions o = options;
  return MapBatches(
      setup, inputs, targets, o.batch_size, "JSMA",
      [&](const at::Tensor& x, const at::Tensor& t, int64_t,
          int64_t) -> absl::StatusOr<at::Tensor> {
        const int64_t b = x.size(0);
        const int64_t n = x[0].numel();
        const int64_t budget = static_cast<int64_t>(
            std::ceil(o.gamma * static_cast<double>(n) - 1e-9));
        const int64_t max_iters = budget / 2;  // two features per iteration
        at::Tensor adv = x.reshape({b, n}).clone();
        // Features that can still move in θ's direction.
        at::Tensor domain = o.theta > 0 ? adv < 1 : adv > 0;
        at::Tensor active = torch::ones({b}, t.options().dtype(at::kBool));
        // The loop handles float and double; other types (half) and GPUs
        // use the matrix search, 32 inputs at a time (three B·n² matrices).
        const bool matrix =
            o.pair_matrix || !x.device().is_cpu() ||
            (x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble);
        const at::Tensor eye =
            matrix ? torch::eye(n, x.options().dtype(at::kBool)) : at::Tensor();
        const at::Tensor t1 = t.unsqueeze(1);
        const float neg_inf = -std::numeric_limits<float>::infinity();
        for (int64_t it = 0; it < max_iters; ++it) {
          at::Tensor leaf = adv.detach().requires_grad_(true);
          PT_ASSIGN_OR_RETURN(at::Tensor logits,
                              Logits(setup, leaf.view(x.sizes())));
          {
            torch::NoGradGuard no_grad;
            active = active & logits.argmax(1).ne(t) & (domain.sum(1) >= 2);
          }
          if (!active.any().item<bool>()) break;
          const at::Tensor zt = logits.gather(1, t1).sum();
          const at::Tensor zall = logits.sum();
          std::vector<at::Tensor> gt =
              torch::autograd::grad({zt}, {leaf}, {}, true, false, true);
          std::vector<at::Tensor> ga =
              torch::autograd::grad({zall}, {leaf}, {}, false, false, true);
          torch::NoGradGuard no_grad;
          const at::Tensor dt =
              gt[0].defined() ? gt[0] : torch::zeros_like(adv);
          const at::Tensor doth =
              (ga[0].defined() ? ga[0] : torch::zeros_like(adv)) - dt;
          at::Tensor p, q, go;
          if (matrix) {
            std::vector<at::Tensor> ps, qs, gos;
            for (int64_t c = 0; c < b; c += 32) {
              const int64_t len = std::min<int64_t>(32, b - c);
              const at::Tensor dtc = dt.narrow(0, c, len);
              const at::Tensor dotc = doth.narrow(0, c, len);
              const at::Tensor domc = domain.narrow(0, c, len);
              // Pair sums [len, n, n].
              const at::Tensor alpha = dtc.unsqueeze(2) + dtc.unsqueeze(1);
              const at::Tensor beta = dotc.unsqueeze(2) + dotc.unsqueeze(1);
              at::Tensor ok = domc.unsqueeze(2) & domc.unsqueeze(1) &
                              eye.logical_not().unsqueeze(0);
              ok = o.theta > 0 ? ok & (alpha > 0) & (beta < 0)
                               : ok & (alpha < 0) & (beta > 0);
              const at::Tensor score = torch::where(
                  ok, -alpha * beta, torch::full({}, neg_inf, alpha.options()));
              const auto [best, idx] = score.view({len, n * n}).max(1);
              gos.push_back(active.narrow(0, c, len) & best.gt(neg_inf));
              ps.push_back(idx.div(n, "floor"));
              qs.push_back(idx.remainder(n));
            }
            p = torch::cat(ps);
            q = torch::cat(qs);
            go = torch::cat(gos);
          } else {
            BestPairsCpu(dt, doth, domain, active, o.theta > 0, &p, &q, &go);
          }
          if (!go.any().item<bool>()) break;
          const at::Tensor rows = torch::arange(b, p.options());
          const at::Tensor step =
              go.to(adv.scalar_type()) * static_cast<float>(o.theta);
          // Rows that do not step are written back unchanged (not clamped:
          // their p and q are placeholders).
          const at::Tensor op = adv.index({rows, p}), oq = adv.index({rows, q});
          adv.index_put_({rows, p},
                         torch::where(go, (op + step).clamp(0, 1), op));
          adv.index_put_({rows, q},
                         torch::where(go, (oq + step).clamp(0, 1), oq));
          // Out of the domain once used (the step is never repeated).
          const at::Tensor keep = go.logical_not();
          domain.index_put_({rows, p}, domain.index({rows, p}) & keep);
          domain.index_put_({rows, q}, domain.index({rows, q}) & keep);
          active = active & go;
        }
        return adv.view(x.sizes());
      });
}

absl::StatusOr<at::Tensor> RandomTargets(const at::Tensor& labels,
                                         int64_t classes, uint64_t seed) {
  if (classes < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("random targets need at least 2 classes, got ", classes));
  }
  at::Tensor out;
  PT_RETURN_IF_ERROR(CallTorch("random targets", [&] {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    const at::Tensor y = labels.to(at::kCPU, at::kLong);
    const at::Tensor k = torch::randint(1, classes, y.sizes(), gen,
                                        torch::TensorOptions(at::kLong));
    out = (y + k).remainder(classes).to(labels.device());
  }));
  return out;
}

absl::StatusOr<AttackReport> EvaluateAttack(const torch::nn::Sequential& model,
                                            const at::Tensor& inputs,
                                            const at::Tensor& adversarial,
                                            const at::Tensor& labels,
                                            const at::Tensor& targets,
                                            int64_t batch_size) {
  PT_RETURN_IF_ERROR(CheckArguments(model, inputs, labels, batch_size));
  if (!adversarial.defined() || adversarial.sizes() != inputs.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adversarial inputs must have the inputs' shape ", ShapeString(inputs),
        ", got ",
        adversarial.defined() ? ShapeString(adversarial) : "undefined"));
  }
  if (targets.defined() && targets.sizes() != labels.sizes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("targets must have the labels' shape ",
                     ShapeString(labels), ", got ", ShapeString(targets)));
  }
  PT_ASSIGN_OR_RETURN(Setup setup, MakeSetup(model, inputs, labels));
  EvalModeGuard eval(*setup.model);
  torch::NoGradGuard no_grad;
  auto predict = [&](const at::Tensor& x) {
    return MapBatches(setup, x, labels, batch_size, "evaluating an attack",
                      [&](const at::Tensor& xb, const at::Tensor&, int64_t,
                          int64_t) -> absl::StatusOr<at::Tensor> {
                        PT_ASSIGN_OR_RETURN(at::Tensor logits,
                                            Logits(setup, xb));
                        return logits.argmax(1);
                      });
  };
  PT_ASSIGN_OR_RETURN(at::Tensor before, predict(inputs));
  PT_ASSIGN_OR_RETURN(at::Tensor after, predict(adversarial));
  AttackReport r;
  PT_RETURN_IF_ERROR(CallTorch("evaluating an attack", [&] {
    const at::Tensor y = labels.to(before.device(), at::kLong);
    const at::Tensor correct = before.eq(y);
    const at::Tensor success =
        correct &
        (targets.defined() ? after.eq(targets.to(after.device(), at::kLong))
                           : after.ne(y));
    const at::Tensor delta =
        (adversarial.to(at::kDouble) - inputs.to(at::kDouble))
            .flatten(1)
            .to(success.device());
    r.inputs = inputs.size(0);
    r.correct = correct.sum().item<int64_t>();
    r.successes = success.sum().item<int64_t>();
    r.success_rate =
        r.correct ? static_cast<double>(r.successes) / r.correct : 0;
    r.robust_accuracy = after.eq(y).to(at::kDouble).mean().item<double>();
    if (r.successes > 0) {
      const at::Tensor d = delta.index({success});
      r.mean_l2 = d.norm(2, 1).mean().item<double>();
      r.mean_linf = d.abs().amax(1).mean().item<double>();
    }
  }));
  return r;
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

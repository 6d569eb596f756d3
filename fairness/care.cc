#include "fairness/care.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

// Forward through the Sequential; after module `module` (when >= 0), unit
// `unit` of its output is set to `value` for every row.
at::Tensor Forward(torch::nn::Sequential& model, at::Tensor h, int64_t module,
                   int64_t unit, double value) {
  int64_t i = 0;
  for (auto it = model->begin(); it != model->end(); ++it, ++i) {
    h = it->forward(h);
    if (i == module) {
      h = h.clone();
      h.select(1, unit).fill_(value);
    }
  }
  return h;
}

// Both members of every pair: rows with the protected feature 1, then 0.
at::Tensor Counterfactuals(const at::Tensor& x, int64_t protected_feature) {
  at::Tensor on = x.clone(), off = x.clone();
  on.select(1, protected_feature).fill_(1);
  off.select(1, protected_feature).fill_(0);
  return torch::cat({on, off});
}

}  // namespace

std::string CareResult::Describe(const CareOptions& o) const {
  std::string kept;
  for (const CareNeuron& n : neurons) {
    absl::StrAppend(&kept, kept.empty() ? "" : ", ",
                    absl::StrFormat("{\"module\": %d, \"unit\": %d, "
                                    "\"effect\": %.6f}",
                                    n.module, n.unit, n.effect));
  }
  return absl::StrFormat(
      "{\"method\": \"CARE\", \"rows\": %d, \"neurons\": [%s], "
      "\"effect\": \"mean_v |D(do(n = v)) - D|, D = mean |P(fav | x, A=1) - "
      "P(fav | x, A=0)|\", \"intervention_values\": %d, \"parameters\": "
      "\"incoming weights and bias of the kept neurons\", \"particles\": %d, "
      "\"iterations\": %d, \"inertia\": %g, \"c1\": %g, \"c2\": %g, "
      "\"init_spread\": %g, \"fitness\": \"(1 - alpha) * U + alpha * (1 - "
      "accuracy)\", \"alpha\": %g, \"seed\": %d, \"evaluations\": %d, "
      "\"fitness_before\": %.6f, \"fitness_after\": %.6f, \"U_before\": %.6f, "
      "\"U_after\": %.6f, \"accuracy_before\": %.6f, \"accuracy_after\": "
      "%.6f}",
      rows, kept, o.intervention_values, o.particles, o.iterations, o.inertia,
      o.c1, o.c2, o.init_spread, o.alpha, o.seed, evaluations, fitness_before,
      fitness_after, unfair_before, unfair_after, accuracy_before,
      accuracy_after);
}

absl::StatusOr<double> CounterfactualFlipRate(
    const torch::nn::Sequential& model, const at::Tensor& x,
    int64_t protected_feature) {
  if (!x.defined() || x.dim() != 2 || x.size(0) == 0 || protected_feature < 0 ||
      protected_feature >= x.size(1)) {
    return absl::InvalidArgumentError(
        "counterfactual flip rate: needs rows [N, d] and a protected feature "
        "in [0, d)");
  }
  double u = 0;
  PT_RETURN_IF_ERROR(CallTorch("counterfactual flip rate", [&] {
    torch::NoGradGuard g;
    torch::nn::Sequential m = model;
    EvalModeGuard eval(*m);
    const int64_t n = x.size(0);
    const at::Tensor pred =
        m->forward(Counterfactuals(x, protected_feature)).argmax(1);
    u = pred.narrow(0, 0, n)
            .ne(pred.narrow(0, n, n))
            .to(torch::kDouble)
            .mean()
            .item<double>();
  }));
  return u;
}

absl::StatusOr<CareResult> RepairWithCare(torch::nn::Sequential& model,
                                          const TabularSplit& split,
                                          int64_t protected_feature,
                                          const CareOptions& o) {
  if (split.size() < 2 || protected_feature < 0 ||
      protected_feature >= split.x.size(1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CARE: needs at least 2 rows and a protected feature in [0, ",
        split.size() < 2 ? 0 : split.x.size(1), "), got ", split.size(),
        " rows and feature ", protected_feature));
  }
  if (o.max_rows < 2 || o.neurons < 1 || o.intervention_values < 2 ||
      o.particles < 1 || o.iterations < 0 || !(o.alpha >= 0 && o.alpha <= 1) ||
      !(o.init_spread >= 0)) {
    return absl::InvalidArgumentError(
        "CARE: needs max_rows >= 2, neurons >= 1, intervention_values >= 2, "
        "particles >= 1, iterations >= 0, alpha in [0, 1], init_spread >= 0");
  }
  // The ReLUs (the hidden neurons) and the Linear feeding each.
  std::vector<std::pair<int64_t, torch::nn::Linear>> relus;
  {
    torch::nn::Linear last{nullptr};
    for (size_t i = 0; i < model->size(); ++i) {
      if (model[i]->as<torch::nn::Linear>() != nullptr) {
        last = torch::nn::Linear(
            std::dynamic_pointer_cast<torch::nn::LinearImpl>(model->ptr(i)));
      } else if (model[i]->as<torch::nn::ReLU>() != nullptr &&
                 !last.is_empty()) {
        relus.push_back({static_cast<int64_t>(i), last});
      }
    }
  }
  if (relus.empty()) {
    return absl::InvalidArgumentError(
        "CARE: the model has no ReLU after a Linear layer (no hidden neuron "
        "to localize)");
  }
  CareResult result;
  PT_RETURN_IF_ERROR(CallTorch("CARE", [&] {
    torch::NoGradGuard g;
    EvalModeGuard eval(*model);
    const int64_t n = std::min(o.max_rows, split.size());
    result.rows = n;
    const at::Tensor x = split.x.narrow(0, 0, n);
    const at::Tensor y = split.y.narrow(0, 0, n);
    const at::Tensor a = split.a.narrow(0, 0, n).to(torch::kBool);
    const at::Tensor xc = Counterfactuals(x, protected_feature);
    auto gap = [&](const at::Tensor& logits) {
      const at::Tensor p = torch::softmax(logits, 1).select(1, 1);
      return (p.narrow(0, 0, n) - p.narrow(0, n, n))
          .abs()
          .mean()
          .item<double>();
    };
    // 1. Fault localization.
    const double d0 = gap(Forward(model, xc, -1, 0, 0));
    std::vector<CareNeuron> all;
    for (const auto& [module, linear] : relus) {
      // The range of each unit on the rows (their own protected values).
      at::Tensor h = x;
      int64_t i = 0;
      for (auto it = model->begin(); i <= module; ++it, ++i) h = it->forward(h);
      const at::Tensor lo = std::get<0>(h.min(0)), hi = std::get<0>(h.max(0));
      for (int64_t u = 0; u < h.size(1); ++u) {
        const double l = lo[u].item<double>(), r = hi[u].item<double>();
        double effect = 0;
        for (int k = 0; k < o.intervention_values; ++k) {
          const double v = l + (r - l) * k / (o.intervention_values - 1);
          effect += std::fabs(gap(Forward(model, xc, module, u, v)) - d0);
        }
        all.push_back({module, u, effect / o.intervention_values});
      }
    }
    std::stable_sort(all.begin(), all.end(),
                     [](const CareNeuron& l, const CareNeuron& r) {
                       return l.effect > r.effect;
                     });
    all.resize(std::min<size_t>(all.size(), o.neurons));
    result.neurons = all;

    // 2. Repair: the kept neurons' weight rows and biases as one vector.
    struct Slot {
      at::Tensor weight_row, bias;  // views into the model's parameters
      double scale;
    };
    std::vector<Slot> slots;
    for (const CareNeuron& nr : result.neurons) {
      for (const auto& [module, linear] : relus) {
        if (module != nr.module) continue;
        const double sd = linear->weight.std().item<double>();
        slots.push_back({linear->weight[nr.unit],
                         linear->bias.defined()
                             ? linear->bias.narrow(0, nr.unit, 1)
                             : at::Tensor(),
                         sd > 0 ? sd : 1.0});
      }
    }
    std::vector<at::Tensor> parts, scales;
    for (const Slot& s : slots) {
      parts.push_back(s.weight_row.flatten());
      scales.push_back(torch::full({s.weight_row.numel()}, s.scale));
      if (s.bias.defined()) {
        parts.push_back(s.bias.flatten());
        scales.push_back(torch::full({1}, s.scale));
      }
    }
    const at::Tensor theta0 = torch::cat(parts).clone();
    const at::Tensor scale = torch::cat(scales).to(theta0.scalar_type());
    const int64_t dim = theta0.numel();
    auto write = [&](const at::Tensor& theta) {
      int64_t off = 0;
      for (const Slot& s : slots) {
        const int64_t w = s.weight_row.numel();
        s.weight_row.copy_(theta.narrow(0, off, w).view_as(s.weight_row));
        off += w;
        if (s.bias.defined()) {
          s.bias.copy_(theta.narrow(0, off, 1));
          off += 1;
        }
      }
    };
    struct Score {
      double fitness, unfair, accuracy;
    };
    auto evaluate = [&](const at::Tensor& theta) {
      write(theta);
      ++result.evaluations;
      const at::Tensor pred = Forward(model, xc, -1, 0, 0).argmax(1);
      const at::Tensor p1 = pred.narrow(0, 0, n), p0 = pred.narrow(0, n, n);
      const double unfair = p1.ne(p0).to(torch::kDouble).mean().item<double>();
      const double acc = torch::where(a, p1, p0)
                             .eq(y)
                             .to(torch::kDouble)
                             .mean()
                             .item<double>();
      return Score{(1 - o.alpha) * unfair + o.alpha * (1 - acc), unfair, acc};
    };
    auto gen = at::detail::createCPUGenerator(o.seed);
    auto uniform = [&](int64_t rows) {  // U(−1, 1) [rows, dim]
      return torch::rand({rows, dim}, gen, theta0.options()) * 2 - 1;
    };
    const double spread = o.init_spread;
    at::Tensor pos =
        theta0.unsqueeze(0) + uniform(o.particles) * scale * spread;
    pos[0].copy_(theta0);
    const at::Tensor vmax = scale * std::max(spread, 1e-3);
    at::Tensor vel = uniform(o.particles) * vmax * 0.1;
    at::Tensor best_pos = pos.clone();
    std::vector<Score> best(o.particles);
    for (int64_t p = 0; p < o.particles; ++p) best[p] = evaluate(pos[p]);
    const Score original = best[0];
    int64_t g_best = 0;
    for (int64_t p = 1; p < o.particles; ++p) {
      if (best[p].fitness < best[g_best].fitness) g_best = p;
    }
    for (int it = 0; it < o.iterations; ++it) {
      const at::Tensor r1 = torch::rand({o.particles, dim}, gen, pos.options());
      const at::Tensor r2 = torch::rand({o.particles, dim}, gen, pos.options());
      vel = o.inertia * vel + o.c1 * r1 * (best_pos - pos) +
            o.c2 * r2 * (best_pos[g_best].unsqueeze(0) - pos);
      vel = torch::max(torch::min(vel, vmax), -vmax);
      pos = pos + vel;
      for (int64_t p = 0; p < o.particles; ++p) {
        const Score s = evaluate(pos[p]);
        if (s.fitness < best[p].fitness) {
          best[p] = s;
          best_pos[p].copy_(pos[p]);
          if (s.fitness < best[g_best].fitness) g_best = p;
        }
      }
    }
    write(best_pos[g_best]);
    result.fitness_before = original.fitness;
    result.unfair_before = original.unfair;
    result.accuracy_before = original.accuracy;
    result.fitness_after = best[g_best].fitness;
    result.unfair_after = best[g_best].unfair;
    result.accuracy_after = best[g_best].accuracy;
  }));
  return result;
}

}  // namespace posttrain

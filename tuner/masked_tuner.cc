#include "tuner/masked_tuner.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model_spec.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

at::Tensor NamedParameter(torch::nn::Module& m, const char* name) {
  const auto params = m.named_parameters(/*recurse=*/false);
  const at::Tensor* t = params.find(name);
  return t ? *t : at::Tensor();
}

}  // namespace

absl::StatusOr<double> ClassifierAccuracy(const torch::nn::Sequential& model,
                                          const LabelledData& data) {
  if (!data.inputs.defined() || !data.labels.defined() ||
      data.inputs.size(0) == 0 || data.labels.numel() != data.inputs.size(0)) {
    return absl::InvalidArgumentError(
        "accuracy needs inputs and one label per input");
  }
  int64_t correct = 0;
  const int64_t n = data.inputs.size(0);
  // A label the model cannot predict would silently count as wrong.
  absl::Status labels_ok;
  PT_RETURN_IF_ERROR(CallTorch(
      absl::StrCat("computing accuracy on inputs [",
                   absl::StrJoin(data.inputs.sizes(), ", "), "]"),
      [&] {
        torch::NoGradGuard no_grad;
        torch::nn::Sequential m = model;
        EvalModeGuard eval(*m);
        at::Device device(torch::kCPU);
        if (!m->parameters().empty()) device = m->parameters()[0].device();
        const at::Tensor labels = data.labels.reshape({-1}).cpu();
        const int64_t lo = labels.min().item<int64_t>();
        const int64_t hi = labels.max().item<int64_t>();
        // 256 per batch, as the miner's: at 1000 the guard's forwards were
        // the phase's peak of live tensors (about 100 MiB of activations
        // on the example CNN against 25 MiB; bench/dare_bench).
        for (int64_t b = 0; b < n; b += 256) {
          const int64_t len = std::min<int64_t>(256, n - b);
          at::Tensor logits =
              m->forward(data.inputs.narrow(0, b, len).to(device));
          if (lo < 0 || hi >= logits.size(-1)) {
            labels_ok = absl::InvalidArgumentError(absl::StrCat(
                "accuracy: labels out of range: label ", lo < 0 ? lo : hi,
                " but the model has ", logits.size(-1), " outputs"));
            return;
          }
          correct += logits.argmax(1)
                         .cpu()
                         .eq(labels.narrow(0, b, len))
                         .sum()
                         .item<int64_t>();
        }
      }));
  PT_RETURN_IF_ERROR(labels_ok);
  return static_cast<double>(correct) / static_cast<double>(n);
}

namespace {

// Mean Eq. 8 loss over a data set, no grad, batched.
absl::StatusOr<double> DatasetLoss(const RegressionView& view,
                                   const std::vector<CriterionMask>& masks,
                                   const TuningData& data,
                                   const at::Device& device) {
  torch::NoGradGuard no_grad;
  double sum = 0;
  const int64_t n = data.size();
  for (int64_t b = 0; b < n; b += 512) {
    const int64_t len = std::min<int64_t>(512, n - b);
    PT_ASSIGN_OR_RETURN(
        at::Tensor loss,
        RegressionLoss(view, masks, data.inputs.narrow(0, b, len).to(device),
                       data.references.narrow(0, b, len).to(device),
                       data.criteria.narrow(0, b, len),
                       data.labels.defined() ? data.labels.narrow(0, b, len)
                                             : at::Tensor()));
    sum += loss.item<double>() * static_cast<double>(len);
  }
  return sum / static_cast<double>(n);
}

absl::Status CheckData(const TuningData& d, const char* what, int64_t outputs,
                       int num_criteria) {
  if (d.size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", what, " set is empty"));
  }
  if (!d.references.defined() || d.references.dim() != 2 ||
      d.references.size(0) != d.size() || d.references.size(1) != outputs) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " set: references must be [", d.size(), ", ", outputs, "]"));
  }
  if (!d.criteria.defined() || d.criteria.numel() != d.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " set: one criterion id per sample needed"));
  }
  const at::Tensor c = d.criteria.cpu();
  if (c.min().item<int64_t>() < 0 || c.max().item<int64_t>() >= num_criteria) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " set: criterion ids outside [0, ", num_criteria, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<at::Tensor> TrainableParameters::all() const {
  std::vector<at::Tensor> out;
  for (size_t k = 0; k < weight.size(); ++k) {
    out.push_back(weight[k]);
    if (bias[k].defined()) out.push_back(bias[k]);
  }
  return out;
}

TrainableParameters Trainable(const RegressionView& view) {
  TrainableParameters t;
  const std::vector<int>& weighted = view.view().weighted_layers();
  for (int k = 0; k <= view.target(); ++k) {
    torch::nn::Module& m = view.view().module(weighted[k]);
    t.weight.push_back(NamedParameter(m, "weight"));
    t.bias.push_back(NamedParameter(m, "bias"));
  }
  return t;
}

absl::StatusOr<std::vector<CriterionMask>> MasksFromSlices(
    const RegressionView& view, const std::vector<Slice>& slices) {
  const TrainableParameters params = Trainable(view);
  const std::vector<int>& weighted = view.view().weighted_layers();
  std::vector<CriterionMask> masks;
  absl::Status status;
  PT_RETURN_IF_ERROR(CallTorch("building masks", [&] {
    for (size_t c = 0; c < slices.size(); ++c) {
      const Slice& s = slices[c];
      if (static_cast<int>(s.layers.size()) !=
          static_cast<int>(weighted.size())) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "slice of criterion ", c, " has ", s.layers.size(),
            " layers, the model ", weighted.size(), " weighted layers"));
        return;
      }
      CriterionMask m;
      for (int k = 0; k <= view.target(); ++k) {
        const LayerSlice& l = s.layers[k];
        const at::Tensor& w = params.weight[k];
        if (l.layer != view.view().layers()[weighted[k]].name ||
            !l.synapse_mask.sizes().equals(w.sizes())) {
          status = absl::InvalidArgumentError(
              absl::StrCat("slice of criterion ", c, ": layer '", l.layer,
                           "' does not match the model's '",
                           view.view().layers()[weighted[k]].name, "'"));
          return;
        }
        m.weight.push_back(l.synapse_mask.to(w.device()));
        m.bias.push_back(params.bias[k].defined() ? l.neuron_mask.to(w.device())
                                                  : at::Tensor());
      }
      const at::Tensor& w = params.weight[view.target()];
      if (view.p() == 0) {
        m.output = torch::ones({1}, w.options().dtype(torch::kFloat));
      } else {
        m.output = s.layers[view.target()]
                       .neuron_mask.to(w.device(), torch::kFloat)
                       .repeat_interleave(view.per_neuron());
      }
      masks.push_back(std::move(m));
    }
  }));
  PT_RETURN_IF_ERROR(status);
  return masks;
}

absl::StatusOr<std::vector<CriterionMask>> FullMasks(const RegressionView& view,
                                                     int num_criteria) {
  const TrainableParameters params = Trainable(view);
  std::vector<CriterionMask> masks;
  PT_RETURN_IF_ERROR(CallTorch("building masks", [&] {
    for (int c = 0; c < num_criteria; ++c) {
      CriterionMask m;
      for (size_t k = 0; k < params.weight.size(); ++k) {
        m.weight.push_back(torch::ones_like(params.weight[k], torch::kBool));
        m.bias.push_back(params.bias[k].defined()
                             ? torch::ones_like(params.bias[k], torch::kBool)
                             : at::Tensor());
      }
      m.output = torch::ones({view.outputs()},
                             params.weight[0].options().dtype(torch::kFloat));
      masks.push_back(std::move(m));
    }
  }));
  return masks;
}

absl::StatusOr<at::Tensor> RegressionLoss(
    const RegressionView& view, const std::vector<CriterionMask>& masks,
    const at::Tensor& inputs, const at::Tensor& references,
    const at::Tensor& criteria, const at::Tensor& labels) {
  PT_ASSIGN_OR_RETURN(at::Tensor y, view.Forward(inputs, labels));
  at::Tensor loss;
  PT_RETURN_IF_ERROR(CallTorch("regression loss", [&] {
    std::vector<at::Tensor> rows;
    for (const CriterionMask& m : masks) rows.push_back(m.output);
    const at::Tensor table = torch::stack(rows);  // [C, outputs]
    const at::Tensor mask =
        table.index_select(0, criteria.to(table.device(), torch::kLong));
    const at::Tensor per_sample =
        ((y - references.to(y.device(), y.scalar_type())).pow(2) * mask)
            .sum(1) /
        mask.sum(1).clamp_min(1.0);
    loss = per_sample.mean();
  }));
  return loss;
}

static absl::Status MaskedBackwardImpl(const RegressionView& view,
                                       const std::vector<CriterionMask>& masks,
                                       const at::Tensor& inputs,
                                       const at::Tensor& references,
                                       const at::Tensor& criteria,
                                       const at::Tensor& labels) {
  const TrainableParameters params = Trainable(view);
  const std::vector<at::Tensor> all = params.all();
  const at::Tensor crit = criteria.to(torch::kCPU, torch::kLong);
  const int64_t batch = crit.numel();
  at::Tensor ids = std::get<0>(at::_unique(crit));
  for (int64_t i = 0; i < ids.numel(); ++i) {
    const int64_t c = ids[i].item<int64_t>();
    if (c < 0 || c >= static_cast<int64_t>(masks.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("criterion ", c, " has no mask"));
    }
    const bool whole = ids.numel() == 1;
    at::Tensor rows = crit.eq(c).nonzero().reshape({-1});
    auto pick = [&](const at::Tensor& t) {
      return whole || !t.defined() ? t : t.index_select(0, rows.to(t.device()));
    };
    PT_ASSIGN_OR_RETURN(
        at::Tensor loss,
        RegressionLoss(view, masks, pick(inputs), pick(references), pick(crit),
                       pick(labels)));
    PT_RETURN_IF_ERROR(CallTorch("masked backward", [&] {
      loss = loss * (static_cast<double>(rows.numel()) / batch);
      std::vector<at::Tensor> grads =
          torch::autograd::grad({loss}, all, /*grad_outputs=*/{},
                                /*retain_graph=*/false, /*create_graph=*/false,
                                /*allow_unused=*/true);
      torch::NoGradGuard no_grad;
      size_t g = 0;
      const CriterionMask& m = masks[c];
      for (size_t k = 0; k < params.weight.size(); ++k) {
        for (int which = 0; which < 2; ++which) {
          const at::Tensor& p = which == 0 ? params.weight[k] : params.bias[k];
          if (!p.defined()) continue;
          const at::Tensor& mask = which == 0 ? m.weight[k] : m.bias[k];
          at::Tensor& grad = const_cast<at::Tensor&>(p).mutable_grad();
          if (!grad.defined()) grad = torch::zeros_like(p);
          // where(), not grads * mask: a bool mask would be converted to
          // float on every step. Equal for finite gradients (0 + -0 = +0).
          if (grads[g].defined()) grad.add_(at::where(mask, grads[g], 0.0f));
          ++g;
        }
      }
    }));
  }
  return absl::OkStatus();
}

absl::Status SyncLayers(const torch::nn::Module& from, torch::nn::Module& to,
                        const std::vector<std::string>& layers) {
  auto selected = [&](const std::string& name) {
    for (const std::string& l : layers) {
      if (absl::StartsWith(name, l + ".")) return true;
    }
    return false;
  };
  PT_ASSIGN_OR_RETURN(NamedTensors source, CopyModuleState(from));
  auto dest = to.named_parameters(true);
  auto dest_buffers = to.named_buffers(true);
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  for (const NamedTensor& t : source) {
    if (!selected(t.name)) continue;
    const at::Tensor* d = dest.find(t.name);
    if (d == nullptr) d = dest_buffers.find(t.name);
    if (d == nullptr || !d->sizes().equals(t.tensor.sizes()) ||
        d->scalar_type() != t.tensor.scalar_type()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sync: tensor '", t.name,
                       "' is missing from the target or differs in shape"));
    }
    copies.emplace_back(*d, t.tensor);
  }
  return CallTorch("sync", [&] {
    torch::NoGradGuard no_grad;
    for (auto& [d, s] : copies) d.copy_(s);
  });
}

absl::StatusOr<torch::nn::Sequential> CopyModel(
    const torch::nn::Sequential& model) {
  PT_ASSIGN_OR_RETURN(pb::ModelSpec spec, DescribeSequential(model));
  PT_ASSIGN_OR_RETURN(torch::nn::Sequential copy, BuildSequential(spec));
  PT_ASSIGN_OR_RETURN(NamedTensors state, CopyModuleState(*model));
  PT_RETURN_IF_ERROR(CallTorch("copying the model", [&] {
    auto params = model->parameters();
    if (!params.empty()) copy->to(params[0].device());
    copy->train(model->is_training());
  }));
  PT_RETURN_IF_ERROR(LoadModuleState(state, *copy));
  return copy;
}

static absl::StatusOr<TuneReport> TuneModelImpl(
    torch::nn::Sequential& model, const std::vector<Slice>& slices,
    const TuningData& train, const TuningData& validation,
    const ModelMetric& guard, const TunerOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (options.learning_rates.empty() || options.max_epochs < 1 ||
      options.batch_size < 1 || options.patience < 1) {
    return absl::InvalidArgumentError(
        "tuner options: learning_rates, max_epochs, batch_size and patience "
        "must be non-empty / positive");
  }
  if (!guard) return absl::InvalidArgumentError("no guard metric");
  PT_ASSIGN_OR_RETURN(RegressionView probe,
                      RegressionView::Create(model, options.p));
  int num_criteria = static_cast<int>(slices.size());
  if (slices.empty()) {  // as many as the data name
    num_criteria = 1;
    for (const TuningData* d : {&train, &validation}) {
      if (d->criteria.defined() && d->criteria.numel() > 0) {
        num_criteria = std::max<int>(
            num_criteria,
            1 + static_cast<int>(d->criteria.max().item<int64_t>()));
      }
    }
  }
  PT_RETURN_IF_ERROR(
      CheckData(train, "training", probe.outputs(), num_criteria));
  PT_RETURN_IF_ERROR(
      CheckData(validation, "validation", probe.outputs(), num_criteria));
  at::Device device(torch::kCPU);
  if (!model->parameters().empty()) device = model->parameters()[0].device();

  const at::Tensor train_crit = train.criteria.cpu().to(torch::kLong);
  auto make = [&](torch::nn::Sequential& copy,
                  double lr) -> absl::StatusOr<LearningRateCandidate> {
    PT_ASSIGN_OR_RETURN(RegressionView copy_view,
                        RegressionView::Create(copy, options.p));
    auto view = std::make_shared<RegressionView>(std::move(copy_view));
    auto masks = std::make_shared<std::vector<CriterionMask>>();
    if (slices.empty()) {
      PT_ASSIGN_OR_RETURN(*masks, FullMasks(*view, num_criteria));
    } else {
      PT_ASSIGN_OR_RETURN(*masks, MasksFromSlices(*view, slices));
    }
    const TrainableParameters params = Trainable(*view);
    std::shared_ptr<torch::optim::Optimizer> optimizer;
    if (options.optimizer == TunerOptions::Optimizer::kAdam) {
      optimizer = std::make_shared<torch::optim::Adam>(
          params.all(),
          torch::optim::AdamOptions(lr).weight_decay(options.weight_decay));
    } else {
      optimizer = std::make_shared<torch::optim::SGD>(
          params.all(), torch::optim::SGDOptions(lr)
                            .momentum(options.momentum)
                            .weight_decay(options.weight_decay));
    }
    auto gen = std::make_shared<at::Generator>(
        at::detail::createCPUGenerator(options.seed));
    LearningRateCandidate candidate;
    candidate.validation_loss = [=, &validation]() {
      return DatasetLoss(*view, *masks, validation, device);
    };
    candidate.train_epoch = [=, &train, &train_crit,
                             &options](int epoch) -> absl::Status {
      // Batches of one criterion each, in a shuffled order.
      std::vector<at::Tensor> batches;
      for (int c = 0; c < num_criteria; ++c) {
        at::Tensor rows = train_crit.eq(c).nonzero().reshape({-1});
        if (rows.numel() == 0) continue;
        rows = rows.index_select(0, torch::randperm(rows.numel(), *gen));
        for (int64_t b = 0; b < rows.numel(); b += options.batch_size) {
          batches.push_back(rows.narrow(
              0, b, std::min(options.batch_size, rows.numel() - b)));
        }
      }
      at::Tensor order =
          torch::randperm(static_cast<int64_t>(batches.size()), *gen);
      for (int64_t i = 0; i < order.numel(); ++i) {
        const at::Tensor& rows = batches[order[i].item<int64_t>()];
        const int64_t c = train_crit[rows[0].item<int64_t>()].item<int64_t>();
        std::vector<at::Tensor> before;
        {
          torch::NoGradGuard no_grad;
          for (const at::Tensor& p : params.all()) before.push_back(p.clone());
        }
        optimizer->zero_grad();
        PT_RETURN_IF_ERROR(MaskedBackward(
            *view, *masks,
            train.inputs.index_select(0, rows.to(train.inputs.device()))
                .to(device),
            train.references.index_select(0, rows.to(train.references.device()))
                .to(device),
            train_crit.index_select(0, rows),
            train.labels.defined()
                ? train.labels.index_select(0, rows.to(train.labels.device()))
                : at::Tensor()));
        PT_RETURN_IF_ERROR(CallTorch("optimizer step", [&] {
          optimizer->step();
          // Entries outside this criterion's masks get their pre-step
          // values back: Adam moments, momentum and weight decay must not
          // move them.
          torch::NoGradGuard no_grad;
          size_t j = 0;
          for (size_t k = 0; k < params.weight.size(); ++k) {
            for (int which = 0; which < 2; ++which) {
              at::Tensor p = which == 0 ? params.weight[k] : params.bias[k];
              if (!p.defined()) continue;
              const at::Tensor& mask =
                  which == 0 ? (*masks)[c].weight[k] : (*masks)[c].bias[k];
              at::where_out(p, mask, p, before[j]);  // in place
              ++j;
            }
          }
        }));
        if (options.on_step) {
          TuneStep step;
          step.lr = lr;
          step.epoch = epoch;
          step.criterion = c;
          step.params = &params;
          options.on_step(step);
        }
      }
      return absl::OkStatus();
    };
    return candidate;
  };
  PT_ASSIGN_OR_RETURN(
      TuneReport report,
      SearchLearningRates(model, guard, options, probe.layer_names(), make));
  report.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return report;
}

namespace {

// One learning rate's trial while it runs: its copy of the model (in eval
// mode), its candidate, and the best epoch's state so far.
struct Contender {
  size_t index = 0;  // in TunerOptions::learning_rates
  std::optional<torch::nn::Sequential> copy;
  std::unique_ptr<EvalModeGuard> eval;
  LearningRateCandidate candidate;
  LearningRateTrial trial;
  NamedTensors best_state;
  int since_best = 0;
  bool stopped = false;  // early stop or max_epochs: no more epochs
};

// The shared state of one search.
class LearningRateSearch {
 public:
  LearningRateSearch(torch::nn::Sequential& model, const ModelMetric& guard,
                     const TunerOptions& options,
                     const std::function<absl::StatusOr<LearningRateCandidate>(
                         torch::nn::Sequential& copy, double lr)>& make)
      : model_(model),
        guard_(guard),
        options_(options),
        make_(make),
        lrs_(static_cast<int64_t>(options.learning_rates.size())),
        accounted_(options.learning_rates.size(), 0),
        trials_(options.learning_rates.size()) {}

  absl::Status Begin() {
    ReportProgress(options_.progress, "evaluation", evaluations_, lrs_ + 1,
                   "evaluations");
    PT_ASSIGN_OR_RETURN(report_.guard_accuracy_before, guard_(model_));
    ReportProgress(options_.progress, "evaluation", ++evaluations_, lrs_ + 1,
                   "evaluations");
    return absl::OkStatus();
  }

  // A fresh copy of the model for grid entry `index`, and its validation
  // loss before any epoch.
  absl::StatusOr<std::unique_ptr<Contender>> Start(size_t index) {
    auto c = std::make_unique<Contender>();
    c->index = index;
    const double lr = options_.learning_rates[index];
    PT_ASSIGN_OR_RETURN(torch::nn::Sequential copy, CopyModel(model_));
    c->copy = copy;
    // Eval mode: BatchNorm keeps M's statistics, Dropout is off.
    c->eval = std::make_unique<EvalModeGuard>(**c->copy);
    PT_ASSIGN_OR_RETURN(c->candidate, make_(*c->copy, lr));
    PT_ASSIGN_OR_RETURN(const double loss0, c->candidate.validation_loss());
    if (index == 0) report_.validation_loss_before = loss0;
    c->trial.lr = lr;
    c->trial.best_validation_loss = loss0;
    PT_ASSIGN_OR_RETURN(c->best_state, CopyModuleState(**c->copy));
    return c;
  }

  // Runs epochs of `c` until it has run `budget` in all or stops early.
  absl::Status Run(Contender& c, int budget) {
    budget = std::min(budget, options_.max_epochs);
    while (!c.stopped && c.trial.epochs < budget) {
      const int epoch = c.trial.epochs + 1;
      PT_RETURN_IF_ERROR(c.candidate.train_epoch(epoch));
      ++report_.epochs_run;
      c.trial.epochs = epoch;
      PT_ASSIGN_OR_RETURN(const double loss, c.candidate.validation_loss());
      if (loss < c.trial.best_validation_loss) {
        c.trial.best_validation_loss = loss;
        c.trial.best_epoch = epoch;
        PT_ASSIGN_OR_RETURN(c.best_state, CopyModuleState(**c.copy));
        c.since_best = 0;
      } else if (++c.since_best >= options_.patience) {
        c.stopped = true;
      }
      if (epoch >= options_.max_epochs) c.stopped = true;
      Account(c, epoch);
      // An early stop counts the trial's remaining epochs as done.
      if (c.stopped) Account(c, options_.max_epochs);
    }
    return absl::OkStatus();
  }

  // Ends `c`'s trial: its best epoch's model faces the guard and becomes the
  // winner if it passes with the lowest validation loss so far (ties: the
  // earlier grid entry). Only the winner's copy is kept.
  absl::Status Finish(std::unique_ptr<Contender> c, bool eliminated) {
    c->trial.eliminated = eliminated;
    Account(*c, options_.max_epochs);
    PT_RETURN_IF_ERROR(LoadModuleState(c->best_state, **c->copy));
    PT_ASSIGN_OR_RETURN(c->trial.guard_accuracy, guard_(*c->copy));
    ReportProgress(options_.progress, "evaluation", ++evaluations_, lrs_ + 1,
                   "evaluations");
    c->trial.passes_guard =
        report_.guard_accuracy_before - c->trial.guard_accuracy <=
        options_.max_accuracy_drop + 1e-12;
    const LearningRateTrial& t = c->trial;
    trials_[c->index] = t;
    const bool better =
        t.best_validation_loss < winner_loss_ ||
        (t.best_validation_loss == winner_loss_ && c->index < winner_index_);
    if (t.best_epoch > 0 && t.passes_guard && better) {
      winner_loss_ = t.best_validation_loss;
      winner_index_ = c->index;
      winner_ = *c->copy;
      report_.lr = t.lr;
      report_.best_epoch = t.best_epoch;
      report_.guard_accuracy_after = t.guard_accuracy;
      report_.validation_loss_after = t.best_validation_loss;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<TuneReport> End(const std::vector<std::string>& layers) {
    report_.trials = trials_;
    if (winner_.has_value()) {
      PT_RETURN_IF_ERROR(SyncLayers(**winner_, *model_, layers));
      report_.accepted = true;
      return report_;
    }
    bool improved = false;
    for (const auto& t : report_.trials) improved |= t.best_epoch > 0;
    report_.reason =
        improved ? absl::StrCat("every tuned candidate lost more than ",
                                100 * options_.max_accuracy_drop,
                                " points of guard accuracy; original kept")
                 : "no learning rate improved the validation loss; original "
                   "kept";
    report_.guard_accuracy_after = report_.guard_accuracy_before;
    report_.validation_loss_after = report_.validation_loss_before;
    return report_;
  }

 private:
  // Progress over lrs × max_epochs: a trial counts the epochs it ran, and
  // all of max_epochs once it stops or is eliminated.
  void Account(const Contender& c, int epochs) {
    if (accounted_[c.index] >= epochs) return;
    accounted_[c.index] = epochs;
    int64_t done = 0;
    for (int a : accounted_) done += a;
    ReportProgress(options_.progress, "tuning", done,
                   lrs_ * options_.max_epochs, "epochs");
  }

  torch::nn::Sequential& model_;
  const ModelMetric& guard_;
  const TunerOptions& options_;
  const std::function<absl::StatusOr<LearningRateCandidate>(
      torch::nn::Sequential& copy, double lr)>& make_;
  const int64_t lrs_;
  std::vector<int> accounted_;
  std::vector<LearningRateTrial> trials_;
  int64_t evaluations_ = 0;
  TuneReport report_;
  std::optional<torch::nn::Sequential> winner_;
  double winner_loss_ = std::numeric_limits<double>::infinity();
  size_t winner_index_ = 0;
};

}  // namespace

absl::StatusOr<TuneReport> SearchLearningRates(
    torch::nn::Sequential& model, const ModelMetric& guard,
    const TunerOptions& options, const std::vector<std::string>& layers,
    const std::function<absl::StatusOr<LearningRateCandidate>(
        torch::nn::Sequential& copy, double lr)>& make) {
  if (options.search == TunerOptions::Search::kSuccessiveHalving &&
      (options.halving_min_epochs < 1 || options.halving_factor < 2)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tuner options: successive halving needs halving_min_epochs >= 1 "
        "and halving_factor >= 2 (got ",
        options.halving_min_epochs, " and ", options.halving_factor, ")"));
  }
  LearningRateSearch search(model, guard, options, make);
  PT_RETURN_IF_ERROR(search.Begin());
  const size_t lrs = options.learning_rates.size();
  if (options.search == TunerOptions::Search::kGrid) {
    // One trial at a time: at most the running copy and the winner's.
    for (size_t i = 0; i < lrs; ++i) {
      PT_ASSIGN_OR_RETURN(std::unique_ptr<Contender> c, search.Start(i));
      PT_RETURN_IF_ERROR(search.Run(*c, options.max_epochs));
      PT_RETURN_IF_ERROR(search.Finish(std::move(c), /*eliminated=*/false));
    }
    return search.End(layers);
  }
  // Successive halving: every lr runs halving_min_epochs; the best
  // 1/halving_factor of them (lowest best validation loss; an lr that never
  // improved ranks last) run on to halving_factor times as many epochs, and
  // so on until one is left, which runs to max_epochs. Each trial keeps its
  // own copy, optimizer and shuffling generator across rungs, so a trial's
  // epochs are the ones the grid search runs for that lr.
  std::vector<std::unique_ptr<Contender>> alive;
  for (size_t i = 0; i < lrs; ++i) {
    PT_ASSIGN_OR_RETURN(std::unique_ptr<Contender> c, search.Start(i));
    alive.push_back(std::move(c));
  }
  int64_t budget = options.halving_min_epochs;
  while (alive.size() > 1 && budget < options.max_epochs) {
    for (auto& c : alive) {
      PT_RETURN_IF_ERROR(search.Run(*c, static_cast<int>(budget)));
    }
    std::stable_sort(alive.begin(), alive.end(),
                     [](const std::unique_ptr<Contender>& a,
                        const std::unique_ptr<Contender>& b) {
                       const bool ia = a->trial.best_epoch > 0;
                       const bool ib = b->trial.best_epoch > 0;
                       if (ia != ib) return ia;
                       return a->trial.best_validation_loss <
                              b->trial.best_validation_loss;
                     });
    const size_t keep =
        (alive.size() + options.halving_factor - 1) / options.halving_factor;
    for (size_t k = keep; k < alive.size(); ++k) {
      PT_RETURN_IF_ERROR(search.Finish(std::move(alive[k]),
                                       /*eliminated=*/true));
    }
    alive.resize(keep);
    budget *= options.halving_factor;
  }
  for (auto& c : alive) {
    PT_RETURN_IF_ERROR(search.Run(*c, options.max_epochs));
    PT_RETURN_IF_ERROR(search.Finish(std::move(c), /*eliminated=*/false));
  }
  return search.End(layers);
}

absl::StatusOr<TuneReport> TuneModel(torch::nn::Sequential& model,
                                     const std::vector<Slice>& slices,
                                     const TuningData& train,
                                     const TuningData& validation,
                                     const ModelMetric& guard,
                                     const TunerOptions& options) {
  try {
    return TuneModelImpl(model, slices, train, validation, guard, options);
  } catch (...) {
    return StatusFromCurrentException("tuning");
  }
}

ModelMetric AccuracyOn(const LabelledData& data) {
  return [data](const torch::nn::Sequential& m) {
    return ClassifierAccuracy(m, data);
  };
}

absl::StatusOr<TuneReport> TuneModel(torch::nn::Sequential& model,
                                     const std::vector<Slice>& slices,
                                     const TuningData& train,
                                     const TuningData& validation,
                                     const LabelledData& guard,
                                     const TunerOptions& options) {
  if (!guard.inputs.defined() || guard.inputs.size(0) == 0) {
    return absl::InvalidArgumentError("the guard split is empty");
  }
  try {
    return TuneModelImpl(model, slices, train, validation, AccuracyOn(guard),
                         options);
  } catch (...) {
    return StatusFromCurrentException("tuning");
  }
}

absl::Status MaskedBackward(const RegressionView& view,
                            const std::vector<CriterionMask>& masks,
                            const at::Tensor& inputs,
                            const at::Tensor& references,
                            const at::Tensor& criteria,
                            const at::Tensor& labels) {
  try {
    return MaskedBackwardImpl(view, masks, inputs, references, criteria,
                              labels);
  } catch (...) {
    return StatusFromCurrentException("masked backward");
  }
}

}  // namespace posttrain

#include "robustness/history_miner.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

// Predictions of `model` on D: label confidence when right (else 0), and
// the regression output, batched; eval mode, no grad.
struct Predictions {
  at::Tensor confidence;  // float [N]: P(label) when argmax == label, else 0
  at::Tensor outputs;     // float [N, outputs]
};

absl::StatusOr<Predictions> Predict(const torch::nn::Sequential& model,
                                    const RegressionView& view,
                                    const at::Tensor& inputs,
                                    const at::Tensor& labels,
                                    int64_t batch_size, bool need_outputs) {
  torch::NoGradGuard no_grad;
  torch::nn::Sequential m = model;
  EvalModeGuard eval(*m);
  at::Device device(torch::kCPU);
  if (!m->parameters().empty()) device = m->parameters()[0].device();
  const int64_t n = inputs.size(0);
  Predictions p;
  std::vector<at::Tensor> conf, outs;
  for (int64_t b = 0; b < n; b += batch_size) {
    const int64_t len = std::min(batch_size, n - b);
    at::Tensor x = inputs.narrow(0, b, len).to(device);
    at::Tensor y = labels.narrow(0, b, len).to(device);
    std::vector<at::Tensor> tapped;
    std::vector<int> taps;
    if (need_outputs && view.p() > 0) taps.push_back(view.end() - 1);
    PT_ASSIGN_OR_RETURN(
        at::Tensor logits,
        view.view().Forward(x, view.view().size(), taps, &tapped));
    PT_RETURN_IF_ERROR(CallTorch("history predictions", [&] {
      at::Tensor prob = torch::softmax(logits, 1);
      at::Tensor p_label = prob.gather(1, y.reshape({-1, 1})).reshape({-1});
      at::Tensor right = prob.argmax(1).eq(y);
      conf.push_back(
          torch::where(right, p_label, torch::zeros_like(p_label)).cpu());
      if (need_outputs) {
        outs.push_back(view.p() > 0 ? tapped[0].reshape({len, -1}).cpu()
                                    : p_label.reshape({-1, 1}).cpu());
      }
    }));
  }
  p.confidence = torch::cat(conf);
  if (need_outputs) p.outputs = torch::cat(outs);
  return p;
}

bool SameWeights(const torch::nn::Module& a, const torch::nn::Module& b) {
  const auto pa = a.named_parameters(true), pb = b.named_parameters(true);
  const auto ba = a.named_buffers(true), bb = b.named_buffers(true);
  if (pa.size() != pb.size() || ba.size() != bb.size()) return false;
  for (const auto& [x, y] :
       {std::make_pair(&pa, &pb), std::make_pair(&ba, &bb)}) {
    for (const auto& item : *x) {
      const at::Tensor* other = y->find(item.key());
      if (other == nullptr || !torch::equal(item.value().cpu(), other->cpu())) {
        return false;
      }
    }
  }
  return true;
}

}  // namespace

static absl::StatusOr<MinedSet> MineHistoryImpl(
    const torch::nn::Sequential& model, const HistoryStore& store,
    const at::Tensor& inputs, const at::Tensor& labels,
    const MinerOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (!inputs.defined() || inputs.dim() == 0 || inputs.size(0) == 0) {
    return absl::InvalidArgumentError("no inputs to mine");
  }
  if (!labels.defined() || labels.numel() != inputs.size(0)) {
    return absl::InvalidArgumentError("one label per input needed");
  }
  if (options.batch_size <= 0) {
    return absl::InvalidArgumentError("batch_size must be positive");
  }
  // Models stored by the post-training phase itself are not history.
  std::vector<pb::EpochEntry> entries;
  for (const pb::EpochEntry& e : store.Epochs()) {
    if (!e.metrics().contains(kPostTrainMetric)) entries.push_back(e);
  }
  if (entries.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("history store '", store.dir(), "' holds no epochs"));
  }
  // The window (ALGORITHMS.md §3): the latest ceil(t/2) stored training
  // epochs, counted as stored entries, not by epoch number, so that sparse
  // snapshots and retention gaps do not shrink it: with a thinned history
  // the window reaches back to older stored epochs (at most all of them).
  // t = the training epochs ever appended, less the post-training phase's
  // models still stored (one that retention dropped is still counted in
  // t, which can only widen the window by one).
  int64_t marked = 0;
  for (const pb::EpochEntry& e : store.Epochs()) {
    marked += e.metrics().contains(kPostTrainMetric);
  }
  const int64_t stored = static_cast<int64_t>(entries.size());
  const int64_t t = std::max<int64_t>(store.epochs_appended() - marked, stored);
  const int64_t want = std::min<int64_t>((t + 1) / 2, stored);
  MinedSet mined;
  mined.candidates = inputs.size(0);
  for (int64_t i = stored - want; i < stored; ++i) {
    mined.epochs.push_back(entries[i].epoch());
  }
  at::Tensor y;
  PT_RETURN_IF_ERROR(CallTorch("reading labels", [&] {
    y = labels.to(torch::kCPU, torch::kLong).reshape({-1});
  }));
  PT_ASSIGN_OR_RETURN(RegressionView m_view,
                      RegressionView::Create(model, options.p));
  PT_ASSIGN_OR_RETURN(Predictions base,
                      Predict(model, m_view, inputs, y, options.batch_size,
                              /*need_outputs=*/false));
  const int64_t n = inputs.size(0);
  at::Tensor best_conf = base.confidence.clone();
  at::Tensor best_epoch = torch::full({n}, -1, torch::kLong);
  at::Tensor references;
  // kRandom (Dare_rand): Algorithm 1 runs all the same, to count the
  // samples it selects; then as many samples are drawn from D, each with
  // the output of a window model drawn for it (`pick`, seeded).
  const bool random = options.mode == MinerOptions::Mode::kRandom;
  at::Tensor pick, random_refs;
  std::optional<at::Generator> gen;
  if (random) {
    gen = at::detail::createCPUGenerator(options.seed);
    pick = torch::randint(0, static_cast<int64_t>(mined.epochs.size()), {n},
                          *gen, torch::kLong);
  }
  PT_ASSIGN_OR_RETURN(torch::nn::Sequential history, CopyModel(model));
  PT_ASSIGN_OR_RETURN(RegressionView h_view,
                      RegressionView::Create(history, options.p));
  for (size_t i = 0; i < mined.epochs.size(); ++i) {
    const int64_t epoch = mined.epochs[i];
    ReportProgress(options.progress, options.stage, static_cast<int64_t>(i),
                   static_cast<int64_t>(mined.epochs.size()), "epochs");
    PT_RETURN_IF_ERROR(Annotate(store.LoadEpoch(epoch, *history),
                                absl::StrCat("mining epoch ", epoch)));
    // M itself can never be strictly more confident than M; Dare_rand
    // still draws its outputs.
    const bool is_m = SameWeights(*history, *model);
    if (is_m && !random) continue;
    PT_ASSIGN_OR_RETURN(Predictions p,
                        Predict(history, h_view, inputs, y, options.batch_size,
                                /*need_outputs=*/true));
    if (!references.defined()) {
      references = torch::zeros({n, p.outputs.size(1)}, torch::kFloat);
    }
    if (!is_m) {
      // Algorithm 1, lines 9-15: right and strictly more confident.
      at::Tensor take = p.confidence.gt(best_conf);
      best_conf = torch::where(take, p.confidence, best_conf);
      best_epoch.masked_fill_(take, epoch);
      references.index_copy_(0, take.nonzero().reshape({-1}),
                             p.outputs.index({take}).to(torch::kFloat));
    }
    if (random) {
      if (!random_refs.defined()) random_refs = torch::zeros_like(references);
      at::Tensor take = pick.eq(static_cast<int64_t>(i));
      random_refs.index_copy_(0, take.nonzero().reshape({-1}),
                              p.outputs.index({take}).to(torch::kFloat));
    }
  }
  ReportProgress(options.progress, options.stage,
                 static_cast<int64_t>(mined.epochs.size()),
                 static_cast<int64_t>(mined.epochs.size()), "epochs");
  if (!references.defined()) {  // every visited epoch was M itself
    references = torch::zeros({n, m_view.outputs()}, torch::kFloat);
  }
  at::Tensor rows = best_epoch.ge(0).nonzero().reshape({-1});
  if (random) {
    // As many as Algorithm 1 selected, drawn uniformly from D (in D's
    // order), each with its drawn window model's output.
    const int64_t k = rows.numel();
    rows = std::get<0>(torch::randperm(n, *gen).narrow(0, 0, k).sort());
    at::Tensor epochs = torch::tensor(mined.epochs, torch::kLong);
    best_epoch = torch::full({n}, -1, torch::kLong);
    best_epoch.index_copy_(0, rows,
                           epochs.index_select(0, pick.index_select(0, rows)));
    references = random_refs.defined() ? random_refs : references;
  }
  for (int64_t e : mined.epochs) {
    const int64_t c = best_epoch.eq(e).sum().item<int64_t>();
    if (c > 0) mined.chosen[e] = c;
  }
  mined.data.inputs = inputs.index_select(0, rows.to(inputs.device()));
  mined.data.references = references.index_select(0, rows);
  mined.data.labels = y.index_select(0, rows);
  mined.data.criteria = mined.data.labels;
  mined.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return mined;
}

absl::StatusOr<MinedSet> MineHistory(const torch::nn::Sequential& model,
                                     const HistoryStore& store,
                                     const at::Tensor& inputs,
                                     const at::Tensor& labels,
                                     const MinerOptions& options) {
  try {
    return MineHistoryImpl(model, store, inputs, labels, options);
  } catch (...) {
    return StatusFromCurrentException("mining the history");
  }
}

}  // namespace posttrain

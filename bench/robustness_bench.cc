// The robustness comparison (issue 10; the paper's Tables 2, 4 and 5 and
// Figures 4 and 5) on Fashion-MNIST: per seed, the original model trained
// with the history recorder (or reused from its store), the transfer sets
// crafted once against it and stored as float32 IDX, then Dare, its four
// ablations and the four adversarial-training baselines, each evaluated on
// clean test images, under the transfer protocol (all attacked inputs, and
// the subset that fooled the original), and under the adaptive protocol
// (FGSM and PGD re-run against the model; all five with --full). Every
// finished (model, seed, method) is cached, so a stopped run resumes.
//
//   robustness_bench                         # the example CNN, 6 seeds
//   robustness_bench --model=vgg --seeds=3   # the larger model
//   robustness_bench --full                  # 5,000 images, 9 seeds
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "bench/result_cache.h"
#include "cnn_training.h"
#include "history/store.h"
#include "hooks/callback.h"
#include "hooks/history_recorder.h"
#include "robustness/adversarial_training.h"
#include "robustness/attacks.h"
#include "robustness/dare.h"
#include "robustness/fashion_mnist.h"
#include "tuner/masked_tuner.h"
#include "tuner/pipeline.h"

ABSL_FLAG(std::string, model, "cnn",
          "cnn (the example's, 104k parameters) or vgg (1.3M)");
ABSL_FLAG(int, seeds, 0, "seeds 1..N (0: 6, or 9 with --full; vgg: 3)");
ABSL_FLAG(bool, full, false,
          "5,000 attacked images, 9 seeds, adaptive runs of all five attacks");
ABSL_FLAG(int64_t, images, 0, "attacked test images (0: 2,000; --full 5,000)");
ABSL_FLAG(int, epochs, 0, "training epochs (0: cnn 8, vgg 5)");
ABSL_FLAG(std::string, methods, "", "subset of the methods (default: all)");
ABSL_FLAG(bool, q_sweep, true, "Dare at q = 75..100 on the first seed");
ABSL_FLAG(std::string, lrs, "1e-4", "tuner lr grid (the main job's)");
ABSL_FLAG(int, tune_epochs, 10, "most tuning epochs per lr");
ABSL_FLAG(int64_t, mine_inputs, 10000, "held-out images mined by Dare");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(std::string, cache_dir, "build/robustness_bench/cache",
          "stores, transfer sets and one file per finished result");
ABSL_FLAG(std::string, report, "build/robustness_bench/RESULTS-robustness.md",
          "the Markdown report written from the cache");
ABSL_FLAG(std::string, notes, "", "Markdown inserted after the header");
ABSL_FLAG(std::string, machine, "", "machine description for the report");

namespace posttrain {
namespace {

namespace fs = std::filesystem;
using bench::Cell;
using bench::PValue;
using bench::Row;
using Clock = std::chrono::steady_clock;

const std::vector<double> kEpsilons = {0.02, 0.05, 0.1};

const std::vector<std::string>& AllMethods() {
  static const std::vector<std::string> m = {
      "original",    "dare",  "dare_no_slice", "dare_no_transform", "dare_last",
      "dare_random", "cw_at", "fgsm_at",       "jsma_at",           "pgd_at"};
  return m;
}

// A VGG-style network for 28×28 grey images: two blocks of two 3×3
// convolutions with BatchNorm, then two fully connected layers; 1.27M
// parameters.
torch::nn::Sequential MakeVgg() {
  namespace nn = torch::nn;
  auto conv = [](int64_t in, int64_t out) {
    return nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1));
  };
  return nn::Sequential(
      conv(1, 32), nn::BatchNorm2d(32), nn::ReLU(), conv(32, 32),
      nn::BatchNorm2d(32), nn::ReLU(), nn::MaxPool2d(2), conv(32, 64),
      nn::BatchNorm2d(64), nn::ReLU(), conv(64, 64), nn::BatchNorm2d(64),
      nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(), nn::Linear(64 * 7 * 7, 384),
      nn::ReLU(), nn::Linear(384, 10));
}

torch::nn::Sequential MakeModel() {
  return absl::GetFlag(FLAGS_model) == "vgg" ? MakeVgg() : fmnist::MakeCnn();
}

using bench::Value;

const bench::ResultCache& Cache() {
  static const bench::ResultCache* c =
      new bench::ResultCache(absl::GetFlag(FLAGS_cache_dir));
  return *c;
}

std::string Group() { return absl::GetFlag(FLAGS_model); }

std::string SeedDir(int seed) {
  return absl::StrCat(absl::GetFlag(FLAGS_cache_dir), "/", Group(), "/seed",
                      seed);
}

// One transfer set: crafted against the original, stored as float32 IDX.
struct AttackSet {
  std::string name;                    // "fgsm_0.05", "cw", ...
  at::Tensor images, labels, targets;  // targets: JSMA only
  at::Tensor fooled;                   // bool: fooled the original
};

struct Setup {
  FashionMnist data;
  at::Tensor x, y;  // the attacked test images
  torch::nn::Sequential original{nullptr};
  std::unique_ptr<HistoryStore> store;
  double train_s = 0;
  std::vector<AttackSet> sets;
};

bool Full() { return absl::GetFlag(FLAGS_full); }

int64_t Images() {
  const int64_t n = absl::GetFlag(FLAGS_images);
  return n > 0 ? n : Full() ? 5000 : 2000;
}

std::vector<std::string> SetNames() {
  std::vector<std::string> names;
  for (const char* a : {"fgsm", "bim", "pgd"}) {
    for (double e : kEpsilons) names.push_back(absl::StrFormat("%s_%g", a, e));
  }
  names.push_back("cw");
  names.push_back("jsma");
  return names;
}

// Trains the original (with the history recorder) or loads it from its
// complete store.
void Prepare(int seed, Setup* s) {
  FashionMnistOptions data_options;
  data_options.seed = seed;
  s->data = Value(LoadFashionMnist(data_options));
  const int64_t n = std::min(Images(), s->data.test.size());
  s->x = s->data.test.images.narrow(0, 0, n);
  s->y = s->data.test.labels.narrow(0, 0, n);
  int epochs = absl::GetFlag(FLAGS_epochs);
  if (epochs <= 0) epochs = Group() == "vgg" ? 5 : 8;
  const std::string dir = SeedDir(seed) + "/history";
  s->original = MakeModel();
  std::optional<Row> trained = Cache().Load(Group(), seed, "training", "s");
  if (trained && fs::exists(dir)) {
    auto store = HistoryStore::OpenReadOnly(dir);
    if (store.ok() && (*store)->last_epoch() == epochs - 1 &&
        (*store)->LoadEpoch(epochs - 1, *s->original).ok()) {
      s->store = std::move(*store);
      s->train_s = trained->v.at("s");
    }
  }
  if (!s->store) {
    fs::remove_all(SeedDir(seed));
    torch::manual_seed(seed);
    s->original = MakeModel();
    torch::optim::Adam adam(s->original->parameters(),
                            torch::optim::AdamOptions(1e-3));
    HistoryRecorderOptions ro;
    ro.seed = seed;
    HistoryRecorder recorder(s->original, dir, ro);
    bench::CheckOk(recorder.OnTrainBegin());
    for (int e = 0; e < epochs; ++e) {
      std::fprintf(stderr, "%s seed %d: training epoch %d\n", Group().c_str(),
                   seed, e);
      s->train_s += fmnist::TrainEpoch(s->original, adam, s->data.train, 128,
                                       seed * 1000 + static_cast<uint64_t>(e))
                        .seconds;
      bench::CheckOk(recorder.OnEpochEnd(e, {}));
    }
    bench::CheckOk(recorder.OnTrainEnd());
    s->store = Value(HistoryStore::OpenReadOnly(dir));
    Row r;
    r.v["s"] = s->train_s;
    r.v["epochs"] = epochs;
    Cache().Store(Group(), seed, "training", r, "");
  }
  s->original->eval();
  // The transfer sets.
  auto craft = [&](const std::string& name) -> at::Tensor {
    const std::string img = SeedDir(seed) + "/sets/" + name + "-images.idx";
    const std::string lab = SeedDir(seed) + "/sets/" + name + "-labels.idx";
    if (fs::exists(img) && fs::exists(lab)) {
      auto d = ReadIdxDataset(img, lab);
      if (d.ok() && d->size() == n) return d->images;
    }
    std::fprintf(stderr, "%s seed %d: crafting %s\n", Group().c_str(), seed,
                 name.c_str());
    const auto t0 = Clock::now();
    at::Tensor adv;
    const std::vector<std::string> p = absl::StrSplit(name, '_');
    if (p[0] == "cw") {
      adv = Value(CarliniWagnerL2(s->original, s->x, s->y, {}));
    } else if (p[0] == "jsma") {
      adv = Value(
          Jsma(s->original, s->x, Value(RandomTargets(s->y, 10, seed)), {}));
    } else {
      AttackOptions o = p[0] == "bim" ? BimDefaults() : AttackOptions();
      o.epsilon = std::stod(p[1]);
      o.seed = seed;
      adv = Value(p[0] == "fgsm"  ? Fgsm(s->original, s->x, s->y, o)
                  : p[0] == "bim" ? Bim(s->original, s->x, s->y, o)
                                  : Pgd(s->original, s->x, s->y, o));
    }
    Row r;
    r.v["s"] = bench::Seconds(t0);
    r.v["images_per_s"] = static_cast<double>(n) / r.v["s"];
    Cache().Store(Group(), seed, "craft_" + name, r, "");
    fs::create_directories(SeedDir(seed) + "/sets");
    bench::CheckOk(WriteIdxDataset({adv, s->y}, img, lab));
    return adv;
  };
  for (const std::string& name : SetNames()) {
    AttackSet set;
    set.name = name;
    set.images = craft(name);
    set.labels = s->y;
    if (name == "jsma") set.targets = Value(RandomTargets(s->y, 10, seed));
    torch::NoGradGuard g;
    set.fooled = s->original->forward(set.images).argmax(1).ne(s->y);
    s->sets.push_back(std::move(set));
  }
}

double Acc(const torch::nn::Sequential& m, const at::Tensor& x,
           const at::Tensor& y) {
  return Value(Accuracy(m, x, y));
}

// Every figure of one model.
Row Evaluate(const torch::nn::Sequential& model, const Setup& s, int seed) {
  Row r;
  r.v["clean"] = Acc(model, s.x, s.y);
  for (const AttackSet& set : s.sets) {
    r.v["t_" + set.name] = Acc(model, set.images, set.labels);
    const at::Tensor idx = set.fooled.nonzero().squeeze(1);
    r.v["tf_" + set.name] = idx.numel()
                                ? Acc(model, set.images.index_select(0, idx),
                                      set.labels.index_select(0, idx))
                                : std::nan("");
    r.v["fooled_" + set.name] = static_cast<double>(idx.numel());
  }
  for (double e : kEpsilons) {
    AttackOptions o;
    o.epsilon = e;
    o.seed = seed;
    r.v[absl::StrFormat("a_fgsm_%g", e)] =
        Acc(model, Value(Fgsm(model, s.x, s.y, o)), s.y);
    r.v[absl::StrFormat("a_pgd_%g", e)] =
        Acc(model, Value(Pgd(model, s.x, s.y, o)), s.y);
    if (Full()) {
      AttackOptions b = BimDefaults();
      b.epsilon = e;
      r.v[absl::StrFormat("a_bim_%g", e)] =
          Acc(model, Value(Bim(model, s.x, s.y, b)), s.y);
    }
  }
  if (Full()) {
    const at::Tensor cw = Value(CarliniWagnerL2(model, s.x, s.y, {}));
    AttackReport c = Value(EvaluateAttack(model, s.x, cw, s.y));
    r.v["a_cw_success"] = c.success_rate;
    r.v["a_cw_l2"] = c.mean_l2;
    const at::Tensor t = Value(RandomTargets(s.y, 10, seed));
    const at::Tensor j = Value(Jsma(model, s.x, t, {}));
    AttackReport jr = Value(EvaluateAttack(model, s.x, j, s.y, t));
    r.v["a_jsma_success"] = jr.success_rate;
    r.v["a_jsma_l2"] = jr.mean_l2;
  }
  return r;
}

PipelineOptions Pipeline(int seed) {
  PipelineOptions p = DefaultDarePipeline();
  p.seed = seed;
  p.tuner.max_epochs = absl::GetFlag(FLAGS_tune_epochs);
  p.tuner.learning_rates.clear();
  for (absl::string_view lr : absl::StrSplit(absl::GetFlag(FLAGS_lrs), ',')) {
    p.tuner.learning_rates.push_back(std::stod(std::string(lr)));
  }
  return p;
}

void RunMethod(const std::string& m, int seed, Setup& s) {
  if (Cache().Load(Group(), seed, m, "clean")) return;
  std::fprintf(stderr, "%s seed %d: %s ...\n", Group().c_str(), seed,
               m.c_str());
  if (m == "original") {
    Row r = Evaluate(s.original, s, seed);
    r.v["s"] = s.train_s;
    Cache().Store(Group(), seed, m, r, "");
    return;
  }
  torch::nn::Sequential model = Value(CopyModel(s.original));
  std::unique_ptr<PostTrainTask> task;
  if (m.rfind("dare", 0) == 0) {
    DareOptions dare;
    dare.variant = m.rfind("dare_q", 0) == 0 ? "dare" : m;
    dare.validation = {s.data.validation.images, s.data.validation.labels};
    dare.slice_data = {s.data.train.images, s.data.train.labels};
    dare.max_mine_inputs = absl::GetFlag(FLAGS_mine_inputs);
    dare.pipeline = Pipeline(seed);
    if (m.rfind("dare_q", 0) == 0)
      dare.pipeline.slicer.q = std::stod(m.substr(6));
    task = Value(MakeDareTask(dare));
  } else {
    // As many samples as Dare's T, its guard counterpart as many as Dare's.
    RunMethod("dare", seed, s);
    std::optional<Row> dare = Cache().Load(Group(), seed, "dare", "clean");
    AdversarialTrainingOptions at;
    at.method = m;
    at.train = {s.data.train.images, s.data.train.labels};
    at.validation = {s.data.validation.images, s.data.validation.labels};
    // 0 when Dare found none: the baseline then keeps the original too.
    at.samples = static_cast<int64_t>(dare->v.count("T") ? dare->v.at("T") : 0);
    at.validation_samples = static_cast<int64_t>(
        dare->v.count("guard_T") ? dare->v.at("guard_T") : 0);
    at.pipeline = Pipeline(seed);
    task = Value(MakeAdversarialTrainingTask(at));
  }
  TaskContext ctx;
  ctx.model = model;
  ctx.history = s.store.get();
  const auto t0 = Clock::now();
  PipelineResult pr = Value(RunPipeline(*task, ctx));
  const double phase_s = bench::Seconds(t0);
  Row r = Evaluate(model, s, seed);
  r.v["s"] = phase_s;
  r.v["augment_s"] = pr.augment_seconds;
  r.v["slice_s"] = pr.slice_seconds;
  r.v["tune_s"] = pr.tune_seconds;
  r.v["accepted"] = pr.tune.accepted;
  r.v["lr"] = pr.tune.lr;
  for (const char* k : {"T", "guard_T", "T/D"}) {
    auto it = pr.augmentation.figures.find(k);
    if (it != pr.augmentation.figures.end()) {
      r.v[k == std::string("T/D") ? "T_over_D" : k] = it->second;
    }
  }
  std::string extra = pr.tune.reason;
  for (const auto& [k, v] : task->Describe()) {
    absl::StrAppend(&extra, " ", k, "=", v);
  }
  Cache().Store(Group(), seed, m, r, extra);
}

// ---- The report.

std::string Label(const std::string& m) {
  static const std::map<std::string, std::string> l = {
      {"dare_no_slice", "Dare−s (no slice)"},
      {"dare_no_transform", "Dare−sl (no transform)"},
      {"dare_last", "Dare (last layer)"},
      {"dare_random", "Dare_rand"},
      {"cw_at", "C&W-AT"},
      {"fgsm_at", "FGSM-AT"},
      {"jsma_at", "JSMA-AT"},
      {"pgd_at", "PGD-AT"}};
  auto it = l.find(m);
  return it == l.end() ? m : it->second;
}

std::vector<double> Col(const std::string& m, const std::string& key,
                        int seeds) {
  return Cache().Column(Group(), m, key, seeds, "clean");
}

// method × columns, mean ± std, with "(p ...)" against `base` when given.
std::string MethodTable(const std::vector<std::string>& methods,
                        const std::vector<std::pair<std::string, std::string>>&
                            columns,  // (key, header)
                        int seeds, const std::string& base) {
  std::vector<std::string> header = {"method"};
  for (const auto& c : columns) header.push_back(c.second);
  MarkdownTable t(header);
  for (const std::string& m : methods) {
    std::vector<std::string> cells = {Label(m)};
    for (const auto& [key, h] : columns) {
      const std::vector<double> v = Col(m, key, seeds);
      std::string cell = Cell(v, 4);
      if (!base.empty() && m != base) {
        const std::string p = PValue(v, Col(base, key, seeds));
        if (!p.empty()) absl::StrAppend(&cell, " (", p, ")");
      }
      cells.push_back(cell);
    }
    t.AddRow(cells);
  }
  return t.ToString();
}

std::string Report(const std::vector<std::string>& methods, int seeds,
                   const std::string& command) {
  std::string md = absl::StrCat(
      "# Robustness results (", Group(), ")\n\n",
      "Written by `bench/robustness_bench` (issue 10) from its cache; rerun "
      "with\n\n    ",
      command, "\n\n",
      absl::GetFlag(FLAGS_machine).empty()
          ? ""
          : absl::StrCat("Machine: ", absl::GetFlag(FLAGS_machine), ". "),
      absl::StrFormat(
          "LibTorch intra-op threads: %d. Seeds 1–%d. %d attacked test images "
          "per attack. Tuning: lr grid {%s}, up to %d epochs, Dare mining %d "
          "held-out images; the baselines tune on as many adversarial "
          "examples as Dare's T, with the same grid, epochs and guard. "
          "Attacks: ALGORITHMS.md §6 defaults; the C&W-AT tuning set is "
          "crafted with 2 binary-search steps of 50 iterations. Figures are "
          "accuracies, mean ± sample std over the seeds; p: the paired "
          "two-sided Wilcoxon signed-rank test against Dare over the seeds "
          "(common/results.h).\n\n",
          absl::GetFlag(FLAGS_threads), seeds, Images(),
          absl::GetFlag(FLAGS_lrs), absl::GetFlag(FLAGS_tune_epochs),
          absl::GetFlag(FLAGS_mine_inputs)));
  absl::StrAppend(&md, bench::Notes(absl::GetFlag(FLAGS_notes)));
  std::vector<std::pair<std::string, std::string>> transfer = {
      {"clean", "clean"}};
  std::vector<std::pair<std::string, std::string>> fooled, adaptive;
  for (const std::string& n : SetNames()) {
    transfer.push_back({"t_" + n, n});
    fooled.push_back({"tf_" + n, n});
  }
  for (const char* a : {"fgsm", "pgd", "bim"}) {
    if (std::string(a) == "bim" && !Full()) continue;
    for (double e : kEpsilons) {
      const std::string k = absl::StrFormat("%s_%g", a, e);
      adaptive.push_back({"a_" + k, k});
    }
  }
  if (Full()) {
    adaptive.push_back({"a_cw_success", "C&W success"});
    adaptive.push_back({"a_jsma_success", "JSMA success"});
  }
  absl::StrAppend(
      &md, "## Table 2 (transfer protocol, all attacked inputs)\n\n",
      "Sets crafted once against the original model and fed to every "
      "model.\n\n",
      MethodTable(methods, transfer, seeds, "dare"), "\n",
      "## Table 2 (transfer protocol, the inputs that fooled the original)\n\n",
      "The original scores 0 here by construction; this is the likely reading "
      "of the paper's Table 2.\n\n",
      MethodTable(methods, fooled, seeds, "dare"), "\n",
      "## Table 2 (adaptive protocol)\n\n",
      "Each attack re-run against the model judged.\n\n",
      MethodTable(methods, adaptive, seeds, "dare"), "\n");
  // Table 4: Dare against Dare_rand.
  // PGD at 0.1 leaves every model at 0 here; the smaller budgets tell the
  // methods apart.
  std::vector<std::pair<std::string, std::string>> t4 = {
      {"T_over_D", "T/D"},
      {"clean", "clean"},
      {"t_fgsm_0.1", "FGSM 0.1 (transfer)"},
      {"t_pgd_0.02", "PGD 0.02 (transfer)"},
      {"t_pgd_0.05", "PGD 0.05 (transfer)"},
      {"a_pgd_0.02", "PGD 0.02 (adaptive)"},
      {"a_pgd_0.05", "PGD 0.05 (adaptive)"}};
  absl::StrAppend(&md, "## Table 4: Dare against Dare_rand\n\n",
                  MethodTable({"dare", "dare_random"}, t4, seeds, "dare"),
                  "\n");
  // Figure 4: the ablations.
  absl::StrAppend(
      &md, "## Figure 4: the ablations\n\n",
      MethodTable({"dare", "dare_no_slice", "dare_no_transform", "dare_last"},
                  t4, seeds, "dare"),
      "\n");
  // Figure 5: the q sweep (first seed).
  if (absl::GetFlag(FLAGS_q_sweep)) {
    std::vector<std::string> qh = {"q"};
    for (size_t c = 1; c < t4.size(); ++c) qh.push_back(t4[c].second);
    MarkdownTable q(qh);
    for (int qq = 75; qq <= 100; qq += 5) {
      const std::string m = qq == 95 ? "dare" : absl::StrCat("dare_q", qq);
      std::optional<Row> r = Cache().Load(Group(), 1, m, "clean");
      if (!r) continue;
      std::vector<std::string> cells = {absl::StrCat(qq)};
      for (size_t c = 1; c < t4.size(); ++c) {
        cells.push_back(absl::StrFormat("%.4f", r->v[t4[c].first]));
      }
      q.AddRow(cells);
    }
    absl::StrAppend(&md, "## Figure 5: q (seed 1)\n\n", q.ToString(), "\n");
  }
  // Table 5: time.
  MarkdownTable t5({"method", "phase s", "augment / craft s", "slice s",
                    "tune s", "phase / training", "accepted by the guard"});
  const std::vector<double> train = Col("original", "s", seeds);
  for (const std::string& m : methods) {
    if (m == "original") continue;
    const std::vector<double> s = Col(m, "s", seeds);
    std::vector<double> ratio;
    for (size_t i = 0; i < s.size(); ++i) ratio.push_back(s[i] / train[i]);
    int accepted = 0, runs = 0;
    for (double a : Col(m, "accepted", seeds)) {
      if (std::isnan(a)) continue;
      ++runs;
      accepted += a > 0.5;
    }
    t5.AddRow({Label(m), Cell(s, 1), Cell(Col(m, "augment_s", seeds), 1),
               Cell(Col(m, "slice_s", seeds), 1),
               Cell(Col(m, "tune_s", seeds), 1), Cell(ratio, 3),
               absl::StrCat(accepted, " of ", runs)});
  }
  std::vector<double> pgd_at = Col("pgd_at", "s", seeds),
                      dare = Col("dare", "s", seeds), r;
  for (size_t i = 0; i < dare.size(); ++i) r.push_back(pgd_at[i] / dare[i]);
  absl::StrAppend(&md, "## Table 5: time (seconds)\n\n",
                  "Training: ", Cell(train, 1), " s.\n\n", t5.ToString(),
                  "\nPGD-AT time / Dare's phase: ", Cell(r, 2), "\n\n");
  MarkdownTable speed({"attack", "images / s (crafting the transfer set)"});
  for (const std::string& n : SetNames()) {
    std::vector<double> v;
    for (int sd = 1; sd <= seeds; ++sd) {
      auto row = Cache().Load(Group(), sd, "craft_" + n, "s");
      v.push_back(row ? row->v["images_per_s"] : std::nan(""));
    }
    speed.AddRow({n, Cell(v, 1)});
  }
  absl::StrAppend(&md, "## Attack speed\n\n", speed.ToString());
  return md;
}

}  // namespace
}  // namespace posttrain

int main(int argc, char** argv) {
  using namespace posttrain;
  absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  const std::string command =
      bench::CommandLine("robustness_bench", argc, argv);
  int seeds = absl::GetFlag(FLAGS_seeds);
  if (seeds <= 0) seeds = Group() == "vgg" ? 3 : Full() ? 9 : 6;
  std::vector<std::string> methods = AllMethods();
  if (!absl::GetFlag(FLAGS_methods).empty()) {
    methods = absl::StrSplit(absl::GetFlag(FLAGS_methods), ',');
    if (std::find(methods.begin(), methods.end(), "original") ==
        methods.end()) {
      methods.insert(methods.begin(), "original");
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  // After each seed, the time so far and the rest's estimate: the mean of
  // this run's seeds that computed (a seed read from the cache takes
  // seconds), without the q sweep. A --full run says early what it costs.
  double computed_s = 0;
  int computed = 0;
  for (int seed = 1; seed <= seeds; ++seed) {
    const auto seed_t0 = std::chrono::steady_clock::now();
    Setup s;
    Prepare(seed, &s);
    for (const std::string& m : methods) RunMethod(m, seed, s);
    const double seed_s = bench::Seconds(seed_t0);
    if (seed_s > 60) {
      computed_s += seed_s;
      ++computed;
    }
    if (seed == 1 && absl::GetFlag(FLAGS_q_sweep)) {
      for (int q = 75; q <= 100; q += 5) {
        if (q != 95) RunMethod(absl::StrCat("dare_q", q), seed, s);
      }
    }
    const std::string rest =
        computed > 0 ? absl::StrFormat(", about %.0f s to go",
                                       computed_s / computed * (seeds - seed))
                     : std::string(" (no estimate: no seed took over 60 s)");
    std::fprintf(stderr, "%s seed %d of %d done in %.0f s; %.0f s so far%s\n",
                 Group().c_str(), seed, seeds, seed_s, bench::Seconds(t0),
                 rest.c_str());
  }
  const std::string md = Report(methods, seeds, command);
  std::filesystem::create_directories(
      std::filesystem::path(absl::GetFlag(FLAGS_report)).parent_path());
  std::ofstream(absl::GetFlag(FLAGS_report)) << md;
  std::printf("%s\n{\"wall_s\": %.1f, \"report\": \"%s\"}\n", md.c_str(),
              bench::Seconds(t0), absl::GetFlag(FLAGS_report).c_str());
  return 0;
}

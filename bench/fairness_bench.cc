// The fairness comparison (issue 9; the paper's Tables 7-9 and Figure 8):
// for each case (data set, protected attribute) and seed, the reference MLP
// trained with the seed (the original model), then every method on it:
// FMT's three strategies and three ablations, REW, ROC, SUPP, ADV and CARE.
// Every figure is on the test split. Each finished (case, seed, method)
// result is cached as one line under --cache_dir, so a stopped run resumes;
// the Markdown report (--report) is written from the cache.
//
//   fairness_bench                          # adult:sex and german:sex, 10
//   seeds fairness_bench --cases=adult:race,german:age fairness_bench --seeds=3
//   --methods=original,fmt,REW
//
// Configuration, shared by every method (fairness/baselines.h): Adam 1e-3,
// batch 128, enough epochs for 1,000 optimizer steps (at least 20); the
// split 70/30 with 20% of the training part for validation, seeded.
#include <torch/torch.h>

#include <algorithm>
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
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "bench/result_cache.h"
#include "common/results.h"
#include "fairness/adversarial_debiasing.h"
#include "fairness/baselines.h"
#include "fairness/care.h"
#include "fairness/fmt.h"
#include "fairness/metrics.h"
#include "fairness/reject_option.h"
#include "fairness/tabular.h"
#include "fairness/tabular_schema.h"
#include "tuner/pipeline.h"

ABSL_FLAG(std::string, cases, "adult:sex,german:sex",
          "data:attribute pairs (adult:sex, adult:race, german:sex, "
          "german:age)");
ABSL_FLAG(int, seeds, 10, "seeds 1..N");
ABSL_FLAG(std::string, methods, "",
          "comma-separated subset of the methods (default: all)");
ABSL_FLAG(std::string, schema_dir, POSTTRAIN_SCHEMA_DIR, "built-in schemas");
ABSL_FLAG(std::string, data_root, POSTTRAIN_TABULAR,
          "directory holding adult/ and german/");
ABSL_FLAG(std::string, cache_dir, "build/fairness_bench/cache",
          "one file per finished (case, seed, method)");
ABSL_FLAG(std::string, report, "build/fairness_bench/RESULTS-fairness.md",
          "the Markdown report written from the cache");
ABSL_FLAG(std::string, notes, "",
          "a Markdown file inserted after the report's header (the reading "
          "of the figures, written by hand)");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(std::string, machine, "", "machine description for the report");

namespace posttrain {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const std::vector<std::string>& AllMethods() {
  static const std::vector<std::string> m = {
      "original",   "fmt",          "fmt_single",
      "fmt_random", "fmt_no_slice", "fmt_no_transform",
      "fmt_last",   "REW",          "ROC",
      "SUPP",       "ADV",          "CARE"};
  return m;
}

std::string Label(const std::string& m) {
  static const std::map<std::string, std::string> l = {
      {"original", "original"},
      {"fmt", "FMT (double, Td)"},
      {"fmt_single", "FMT single (Ts)"},
      {"fmt_random", "FMT random"},
      {"fmt_no_slice", "FMT no slice"},
      {"fmt_no_transform", "FMT no transform"},
      {"fmt_last", "FMT last layer"},
  };
  auto it = l.find(m);
  return it == l.end() ? m : it->second;
}

using bench::Cell;
using bench::PValue;
using bench::Row;

const bench::ResultCache& Cache() {
  static const bench::ResultCache* cache =
      new bench::ResultCache(absl::GetFlag(FLAGS_cache_dir));
  return *cache;
}

std::optional<Row> Load(const std::string& c, int seed, const std::string& m) {
  return Cache().Load(c, seed, m, "acc");
}

Row FromMetrics(const FairnessMetrics& m, double seconds) {
  Row r;
  r.v = {{"acc", m.accuracy},      {"bal", m.balanced_accuracy},
         {"spd", m.spd},           {"di", m.di},
         {"eod", m.eod},           {"aod", m.aod},
         {"aaod", m.aaod},         {"abs_spd", m.abs_spd()},
         {"abs_eod", m.abs_eod()}, {"s", seconds}};
  return r;
}

std::vector<int64_t> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.to(torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(),
                              c.data_ptr<int64_t>() + c.numel());
}

torch::nn::Sequential Clone(const torch::nn::Sequential& m) {
  return torch::nn::Sequential(
      std::dynamic_pointer_cast<torch::nn::SequentialImpl>(m->clone()));
}

using bench::Value;

// Runs the missing methods of one (case, seed).
void RunSeed(const std::string& c, const TabularSchema& schema,
             const TabularRows& rows, int seed,
             const std::vector<std::string>& methods) {
  std::vector<std::string> todo;
  for (const std::string& m : methods) {
    if (!Load(c, seed, m)) todo.push_back(m);
  }
  if (todo.empty()) return;
  TabularOptions split;
  split.seed = seed;
  auto data =
      std::make_shared<TabularData>(Value(EncodeTabular(schema, rows, split)));
  TabularTrainOptions train;
  train.seed = seed;
  // The original model: every method but REW, SUPP and ADV starts from it.
  torch::nn::Sequential original{nullptr};
  double original_s = 0;
  auto need_original = [&] {
    if (!original.is_empty()) return;
    const auto t0 = Clock::now();
    original = ReferenceMlp(data->features, seed);
    bench::CheckOk(TrainTabular(original, data->train, train));
    original_s = bench::Seconds(t0);
  };
  for (const std::string& m : todo) {
    std::fprintf(stderr, "%s seed %d: %s ...\n", c.c_str(), seed, m.c_str());
    const auto t0 = Clock::now();
    Row row;
    std::string extra;
    if (m == "original") {
      need_original();
      row =
          FromMetrics(Value(EvaluateTabular(original, data->test)), original_s);
    } else if (m.rfind("fmt", 0) == 0) {
      need_original();
      const auto t1 = Clock::now();  // the phase only
      FmtOptions fmt;
      fmt.variant = m;
      fmt.data = data;
      fmt.pipeline.seed = seed;
      auto task = Value(MakeFmtTask(fmt));
      TaskContext ctx;
      ctx.model = Clone(original);
      PipelineResult r = Value(RunPipeline(*task, ctx));
      row = FromMetrics(Value(EvaluateTabular(ctx.model, data->test)),
                        bench::Seconds(t1));
      row.v["accepted"] = r.tune.accepted ? 1 : 0;
      row.v["augment_s"] = r.augment_seconds;
      row.v["slice_s"] = r.slice_seconds;
      row.v["tune_s"] = r.tune_seconds;
      row.v["lr"] = r.tune.accepted ? r.tune.lr : 0;
      extra = r.tune.reason;
    } else if (m == "REW") {
      torch::nn::Sequential model = ReferenceMlp(data->features, seed);
      bench::CheckOk(TrainReweighed(model, *data, train));
      row = FromMetrics(Value(EvaluateTabular(model, data->test)),
                        bench::Seconds(t0));
    } else if (m == "SUPP") {
      torch::nn::Sequential model = ReferenceMlp(data->features - 1, seed);
      bench::CheckOk(TrainTabular(
          model, DropProtected(data->train, data->protected_feature), train));
      row = FromMetrics(
          Value(EvaluateTabular(
              model, DropProtected(data->test, data->protected_feature))),
          bench::Seconds(t0));
    } else if (m == "ROC") {
      need_original();
      const auto t1 = Clock::now();  // post-processing only
      const std::vector<double> pv =
          Value(FavourableProbability(original, data->validation.x));
      RejectOption roc = Value(FitRejectOption(pv, ToVector(data->validation.y),
                                               ToVector(data->validation.a)));
      const std::vector<double> pt =
          Value(FavourableProbability(original, data->test.x));
      const std::vector<int64_t> pred =
          ApplyRejectOption(pt, ToVector(data->test.a), roc);
      row =
          FromMetrics(Value(ComputeFairnessMetrics(ToVector(data->test.y), pred,
                                                   ToVector(data->test.a))),
                      bench::Seconds(t1));
      row.v["feasible"] = roc.feasible ? 1 : 0;
      extra = absl::StrFormat("threshold %.4f margin %.4f", roc.threshold,
                              roc.margin);
    } else if (m == "ADV") {
      AdversarialDebiasingOptions adv;
      adv.train = train;
      torch::nn::Sequential model = ReferenceMlp(data->features, seed);
      AdversarialDebiasingResult r =
          Value(TrainAdversarialDebiasing(model, data->train, adv));
      row = FromMetrics(Value(EvaluateTabular(model, data->test)),
                        bench::Seconds(t0));
      extra = r.Describe(adv);
    } else if (m == "CARE") {
      need_original();
      const auto t1 = Clock::now();
      torch::nn::Sequential model = Clone(original);
      CareOptions care;
      care.seed = seed;
      CareResult r = Value(
          RepairWithCare(model, data->train, data->protected_feature, care));
      row = FromMetrics(Value(EvaluateTabular(model, data->test)),
                        bench::Seconds(t1));
      row.v["care_u_before"] = r.unfair_before;
      row.v["care_u_after"] = r.unfair_after;
      extra = r.Describe(care);
    } else {
      std::fprintf(stderr, "error: unknown method '%s'\n", m.c_str());
      std::exit(1);
    }
    Cache().Store(c, seed, m, row, extra);
  }
}

// ---- The report, from the cache.

std::vector<double> Column(const std::string& c, const std::string& m,
                           const std::string& key, int seeds) {
  return Cache().Column(c, m, key, seeds, "acc");
}

std::string Report(const std::vector<std::string>& cases,
                   const std::vector<std::string>& methods, int seeds,
                   const std::string& command) {
  std::string md;
  absl::StrAppend(
      &md, "# Fairness results\n\n",
      "Written by `bench/fairness_bench` (issue 9) from its cache; rerun "
      "with\n\n",
      "    ", command, "\n\n",
      absl::GetFlag(FLAGS_machine).empty()
          ? ""
          : absl::StrCat("Machine: ", absl::GetFlag(FLAGS_machine), ". "),
      "LibTorch intra-op threads: ", absl::GetFlag(FLAGS_threads), ". Seeds 1–",
      seeds,
      ". Every figure is on the test split (30% of the rows), mean ± sample "
      "standard deviation over the seeds. Signed metrics follow AIF360 "
      "(unprivileged − privileged); lower |SPD|, |EOD| and AAOD are fairer. "
      "p: the paired two-sided Wilcoxon signed-rank test against the "
      "original model over the seeds (common/results.h); with 10 seeds "
      "p < 0.05 needs a consistent direction in most seeds.\n\n");

  absl::StrAppend(&md, bench::Notes(absl::GetFlag(FLAGS_notes)));
  // Table 7: the original models.
  absl::StrAppend(&md, "## Table 7: the original models\n\n");
  MarkdownTable t7({"case", "seeds", "accuracy", "balanced accuracy", "SPD",
                    "DI", "EOD", "AOD", "AAOD", "training s"});
  for (const std::string& c : cases) {
    auto col = [&](const char* k, int d) {
      return Cell(Column(c, "original", k, seeds), d);
    };
    t7.AddRow({c,
               absl::StrCat(Summarize(Column(c, "original", "acc", seeds)).n),
               col("acc", 4), col("bal", 4), col("spd", 4), col("di", 3),
               col("eod", 4), col("aod", 4), col("aaod", 4), col("s", 1)});
  }
  absl::StrAppend(&md, t7.ToString(), "\n");

  // Table 8: method × metric, per case.
  absl::StrAppend(&md, "## Table 8: every method against the original\n\n");
  for (const std::string& c : cases) {
    absl::StrAppend(&md, "### ", c, "\n\n");
    MarkdownTable t8({"method", "accuracy", "balanced accuracy", "\\|SPD\\|",
                      "\\|EOD\\|", "AAOD", "DI"});
    const char* keys[] = {"acc", "bal", "abs_spd", "abs_eod", "aaod", "di"};
    const int digits[] = {4, 4, 4, 4, 4, 3};
    for (const std::string& m : methods) {
      std::vector<std::string> cells = {Label(m)};
      for (int k = 0; k < 6; ++k) {
        const std::vector<double> v = Column(c, m, keys[k], seeds);
        std::string cell = Cell(v, digits[k]);
        if (m != "original") {
          const std::string p =
              PValue(v, Column(c, "original", keys[k], seeds));
          if (!p.empty()) absl::StrAppend(&cell, " (", p, ")");
        }
        cells.push_back(cell);
      }
      t8.AddRow(cells);
    }
    absl::StrAppend(&md, t8.ToString(), "\n");
    // FMT against each baseline, paired.
    MarkdownTable vs({"FMT (double) vs", "AAOD: FMT lower in", "AAOD p",
                      "\\|EOD\\|: FMT lower in", "\\|EOD\\| p",
                      "accuracy: FMT higher in", "accuracy p"});
    for (const std::string& m : methods) {
      if (m == "fmt") continue;
      std::vector<std::string> cells = {Label(m)};
      const char* keys2[] = {"aaod", "abs_eod", "acc"};
      for (int k = 0; k < 3; ++k) {
        const std::vector<double> f = Column(c, "fmt", keys2[k], seeds);
        const std::vector<double> o = Column(c, m, keys2[k], seeds);
        cells.push_back(bench::Wins(f, o, /*lower_is_better=*/k < 2));
        cells.push_back(PValue(f, o));
      }
      vs.AddRow(cells);
    }
    absl::StrAppend(&md,
                    "FMT (double) paired with each other method, seed "
                    "by seed:\n\n",
                    vs.ToString(), "\n");
  }

  // Figure 8: the accuracy change.
  absl::StrAppend(&md,
                  "## Figure 8: accuracy change against the original "
                  "(points)\n\n",
                  "Each bar: the mean change over the seeds, one `#` per "
                  "0.25 point (`-` for a loss).\n\n");
  for (const std::string& c : cases) {
    MarkdownTable f8(
        {"method", absl::StrCat(c, ": Δ accuracy (points)"), "bar"});
    const std::vector<double> base = Column(c, "original", "acc", seeds);
    for (const std::string& m : methods) {
      if (m == "original") continue;
      const std::vector<double> v = Column(c, m, "acc", seeds);
      std::vector<double> d;
      for (size_t i = 0; i < v.size(); ++i) d.push_back(100 * (v[i] - base[i]));
      const MeanStd s = Summarize(d);
      const int n = static_cast<int>(std::lround(std::fabs(s.mean) / 0.25));
      f8.AddRow({Label(m), FormatMeanStd(s, 2),
                 std::string(std::min(n, 60), s.mean < 0 ? '-' : '#')});
    }
    absl::StrAppend(&md, f8.ToString(), "\n");
  }

  // Table 9: time per method.
  absl::StrAppend(
      &md, "## Table 9: time per method (seconds)\n\n",
      "original: its training. FMT: the whole post-training phase (pairing, "
      "slicing, tuning, guard). REW, SUPP, ADV: their training. ROC: "
      "fitting and applying the post-processing. CARE: localization and "
      "the swarm search.\n\n");
  std::vector<std::string> header = {"method"};
  for (const std::string& c : cases) header.push_back(c);
  MarkdownTable t9(header);
  for (const std::string& m : methods) {
    std::vector<std::string> cells = {Label(m)};
    for (const std::string& c : cases) {
      cells.push_back(Cell(Column(c, m, "s", seeds), 1));
    }
    t9.AddRow(cells);
  }
  absl::StrAppend(&md, t9.ToString(), "\n");
  // What ADV and CARE ran with (every choice; CARE's also its neurons).
  absl::StrAppend(&md, "## Recorded settings (seed 1)\n\n");
  for (const std::string& c : cases) {
    for (const char* m : {"ADV", "CARE"}) {
      if (std::find(methods.begin(), methods.end(), m) == methods.end()) {
        continue;
      }
      const std::string extra = Cache().Extra(c, 1, m);
      if (!extra.empty()) {
        absl::StrAppend(&md, "- ", c, " ", m, ": `", extra, "`\n");
      }
    }
  }
  absl::StrAppend(&md, "\n");
  // FMT's guard.
  absl::StrAppend(&md, "FMT's guard kept the tuned model in:\n\n");
  for (const std::string& c : cases) {
    std::vector<std::string> parts;
    for (const std::string& m : methods) {
      if (m.rfind("fmt", 0) != 0) continue;
      const std::vector<double> a = Column(c, m, "accepted", seeds);
      int acc = 0, n = 0;
      for (double x : a) {
        if (std::isfinite(x)) {
          ++n;
          acc += x > 0.5;
        }
      }
      parts.push_back(absl::StrCat(m, " ", acc, "/", n));
    }
    absl::StrAppend(&md, "- ", c, ": ", absl::StrJoin(parts, ", "), "\n");
  }
  return md;
}

}  // namespace
}  // namespace posttrain

int main(int argc, char** argv) {
  using namespace posttrain;
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  const std::string command = bench::CommandLine("fairness_bench", argc, argv);
  const int seeds = absl::GetFlag(FLAGS_seeds);
  std::vector<std::string> methods;
  if (absl::GetFlag(FLAGS_methods).empty()) {
    methods = AllMethods();
  } else {
    methods = absl::StrSplit(absl::GetFlag(FLAGS_methods), ',');
    if (std::find(methods.begin(), methods.end(), "original") ==
        methods.end()) {
      methods.insert(methods.begin(), "original");
    }
  }
  for (const std::string& m : methods) {
    if (std::find(AllMethods().begin(), AllMethods().end(), m) ==
        AllMethods().end()) {
      std::fprintf(stderr, "error: unknown method '%s' (known: %s)\n",
                   m.c_str(), absl::StrJoin(AllMethods(), ", ").c_str());
      return 1;
    }
  }
  std::vector<std::string> cases =
      absl::StrSplit(absl::GetFlag(FLAGS_cases), ',');
  const auto t0 = std::chrono::steady_clock::now();
  for (const std::string& c : cases) {
    std::vector<std::string> p = absl::StrSplit(c, ':');
    if (p.size() != 2) {
      std::fprintf(stderr, "error: case '%s' is not data:attribute\n",
                   c.c_str());
      return 1;
    }
    auto schema = ReadTabularSchema(
        absl::StrCat(absl::GetFlag(FLAGS_schema_dir), "/", p[0], ".schema"));
    if (!schema.ok()) {
      std::fprintf(stderr, "error: %s\n", schema.status().ToString().c_str());
      return 1;
    }
    auto rows = ReadTabularRows(
        *schema, absl::StrCat(absl::GetFlag(FLAGS_data_root), "/", p[0]), p[1]);
    if (!rows.ok()) {
      std::fprintf(stderr, "error: %s\n", rows.status().ToString().c_str());
      return 1;
    }
    for (int seed = 1; seed <= seeds; ++seed) {
      RunSeed(c, *schema, *rows, seed, methods);
    }
  }
  const std::string md = Report(cases, methods, seeds, command);
  std::filesystem::create_directories(
      std::filesystem::path(absl::GetFlag(FLAGS_report)).parent_path());
  std::ofstream(absl::GetFlag(FLAGS_report)) << md;
  std::printf("%s\n{\"wall_s\": %.1f, \"report\": \"%s\"}\n", md.c_str(),
              bench::Seconds(t0), absl::GetFlag(FLAGS_report).c_str());
  return 0;
}

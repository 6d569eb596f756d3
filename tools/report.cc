#include "tools/report.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/util/json_util.h"
#include "history/env.h"

namespace posttrain {
namespace {

std::string Html(absl::string_view s) {
  return absl::StrReplaceAll(
      s, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&quot;"}});
}

std::string Num(double v) {
  if (!std::isfinite(v)) return "n/a";
  return absl::StrFormat("%.4f", v);
}

std::string AttackLabel(const pb::AttackFigure& a) {
  return a.epsilon() > 0 ? absl::StrFormat("%s ε=%g %s", a.attack(),
                                           a.epsilon(), a.protocol())
                         : absl::StrCat(a.attack(), " ", a.protocol());
}

// Figures of `after` matched to those of `before` by attack, ε and protocol.
struct Pair {
  std::string label;
  double before = NAN, after = NAN;
};

std::vector<Pair> RobustnessPairs(const pb::RunReport& run) {
  std::vector<Pair> out;
  auto key = [](const pb::AttackFigure& a) {
    return absl::StrCat(a.attack(), "/", a.epsilon(), "/", a.protocol());
  };
  std::map<std::string, double> before;
  for (const auto& a : run.before().attacks())
    before[key(a)] = a.robust_accuracy();
  for (const auto& a : run.after().attacks()) {
    Pair p;
    p.label = AttackLabel(a);
    auto it = before.find(key(a));
    if (it != before.end()) p.before = it->second;
    p.after = a.robust_accuracy();
    out.push_back(p);
  }
  return out;
}

bool HasFairness(const pb::EvalResult& e) {
  return !e.fairness().protected_attribute().empty();
}

std::vector<Pair> FairnessPairs(const pb::RunReport& run) {
  if (!HasFairness(run.before()) || !HasFairness(run.after())) return {};
  const pb::FairnessFigures &b = run.before().fairness(),
                            &a = run.after().fairness();
  return {{"accuracy", b.accuracy(), a.accuracy()},
          {"balanced accuracy", b.balanced_accuracy(), a.balanced_accuracy()},
          {"SPD", b.spd(), a.spd()},
          {"DI", b.di(), a.di()},
          {"EOD", b.eod(), a.eod()},
          {"AOD", b.aod(), a.aod()},
          {"AAOD", b.aaod(), a.aaod()}};
}

int FiniteCount(const std::vector<Pair>& pairs) {
  int n = 0;
  for (const Pair& p : pairs)
    n += std::isfinite(p.before) + std::isfinite(p.after);
  return n;
}

// Series of the history chart: metric -> (epoch, value), finite values only.
std::map<std::string, std::vector<std::pair<int64_t, double>>> HistorySeries(
    const pb::RunReport& run) {
  std::map<std::string, std::vector<std::pair<int64_t, double>>> out;
  for (const auto& e : run.history()) {
    if (e.posttrain()) continue;
    for (const auto& [k, v] : e.metrics()) {
      if (std::isfinite(v)) out[k].push_back({e.epoch(), v});
    }
  }
  for (auto& [k, v] : out) std::sort(v.begin(), v.end());
  return out;
}

constexpr char kBefore[] = "#9e9e9e";
constexpr char kAfter[] = "#1f77b4";
constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                    "#9467bd", "#8c564b", "#e377c2", "#17becf"};

// Five horizontal grid lines from `lo` to `hi`, labelled at `x0`; `y` maps
// a value to its pixel row.
template <typename Y>
std::string YGrid(double lo, double hi, double x0, double x1, const Y& y) {
  std::string s;
  for (int t = 0; t <= 4; ++t) {
    const double v = lo + (hi - lo) * t / 4;
    absl::StrAppendFormat(
        &s,
        "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" "
        "stroke=\"#ddd\"/><text x=\"%.0f\" y=\"%.1f\" font-size=\"10\" "
        "text-anchor=\"end\">%.3g</text>\n",
        x0, x1, y(v), y(v), x0 - 4, y(v) + 3, v);
  }
  return s;
}

// A bar chart of labelled groups of bars; values may be negative.
std::string BarChart(const std::string& name, const std::string& title,
                     const std::vector<std::string>& labels,
                     const std::vector<std::vector<double>>& series,
                     const std::vector<std::string>& series_names,
                     const std::vector<std::string>& colors) {
  double lo = 0, hi = 0;
  int marks = 0;
  for (const auto& s : series) {
    for (double v : s) {
      if (!std::isfinite(v)) continue;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      ++marks;
    }
  }
  if (hi - lo <= 0) hi = lo + 1;
  const int groups = static_cast<int>(labels.size());
  const int per = static_cast<int>(series.size());
  const double bar = 16, gap = 14, left = 60, top = 50, plot_h = 200;
  const double width =
      std::max(std::max(480.0, left + 7.5 * static_cast<double>(title.size())),
               left + groups * (per * bar + gap) + gap + 20);
  const double height = top + plot_h + 130;
  auto y = [&](double v) { return top + plot_h * (hi - v) / (hi - lo); };
  std::string s = absl::StrFormat(
      "<svg class=\"chart\" data-chart=\"%s\" data-marks=\"%d\" "
      "xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"%s\">\n",
      name, marks, width, height, width, height, Html(title));
  absl::StrAppend(&s,
                  "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" "
                  "fill=\"white\"/>\n");
  absl::StrAppendFormat(&s,
                        "<text x=\"%.0f\" y=\"18\" font-size=\"14\" "
                        "font-weight=\"bold\">%s</text>\n",
                        left, Html(title));
  // Axis and ticks.
  s += YGrid(lo, hi, left, width - 10, y);
  absl::StrAppendFormat(&s,
                        "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" "
                        "y2=\"%.1f\" stroke=\"#333\"/>\n",
                        left, width - 10, y(0), y(0));
  for (int g = 0; g < groups; ++g) {
    const double x0 = left + gap + g * (per * bar + gap);
    for (int k = 0; k < per; ++k) {
      const double v = series[k][g];
      if (!std::isfinite(v)) continue;
      const double y0 = y(std::max(v, 0.0)), y1 = y(std::min(v, 0.0));
      absl::StrAppendFormat(
          &s,
          "<rect class=\"mark\" data-series=\"%s\" x=\"%.1f\" y=\"%.1f\" "
          "width=\"%.0f\" height=\"%.1f\" fill=\"%s\"><title>%s, %s: "
          "%.4g</title></rect>\n",
          Html(series_names[k]), x0 + k * bar, y0, bar - 2,
          std::max(0.5, y1 - y0), colors[k], Html(labels[g]),
          Html(series_names[k]), v);
    }
    const double cx = x0 + per * bar / 2, ly = top + plot_h + 12;
    absl::StrAppendFormat(
        &s,
        "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\" "
        "transform=\"rotate(-40 %.1f %.1f)\">%s</text>\n",
        cx, ly, cx, ly, Html(labels[g]));
  }
  // Legend, one row under the title.
  for (int k = 0; k < per; ++k) {
    absl::StrAppendFormat(&s,
                          "<rect x=\"%.0f\" y=\"26\" width=\"10\" "
                          "height=\"10\" fill=\"%s\"/><text x=\"%.0f\" "
                          "y=\"35\" font-size=\"11\">%s</text>\n",
                          left + 90.0 * k, colors[k], left + 14 + 90.0 * k,
                          Html(series_names[k]));
  }
  return s + "</svg>\n";
}

std::string PairChart(const std::string& name, const std::string& title,
                      const std::vector<Pair>& pairs) {
  std::vector<std::string> labels;
  std::vector<std::vector<double>> series(2);
  for (const Pair& p : pairs) {
    labels.push_back(p.label);
    series[0].push_back(p.before);
    series[1].push_back(p.after);
  }
  return BarChart(name, title, labels, series, {"before", "after"},
                  {kBefore, kAfter});
}

std::string HistoryChart(const pb::RunReport& run) {
  const auto series = HistorySeries(run);
  int marks = 0;
  double lo = INFINITY, hi = -INFINITY;
  int64_t e0 = INT64_MAX, e1 = INT64_MIN;
  for (const auto& [k, v] : series) {
    for (const auto& [e, x] : v) {
      ++marks;
      lo = std::min(lo, x);
      hi = std::max(hi, x);
      e0 = std::min(e0, e);
      e1 = std::max(e1, e);
    }
  }
  if (marks == 0) return "";
  if (hi - lo <= 0) hi = lo + 1;
  // In double: epochs from a damaged run.pb may span all of int64.
  const double d0 = static_cast<double>(e0),
               span = e1 == e0 ? 1.0 : static_cast<double>(e1) - d0;
  const double left = 60, top = 30, w = 560, h = 220;
  auto X = [&](int64_t e) {
    return left + w * (static_cast<double>(e) - d0) / span;
  };
  auto Y = [&](double v) { return top + h * (hi - v) / (hi - lo); };
  std::string s = absl::StrFormat(
      "<svg class=\"chart\" data-chart=\"history\" data-marks=\"%d\" "
      "xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "role=\"img\" aria-label=\"metrics per epoch\">\n"
      "<rect x=\"0\" y=\"0\" width=\"100%%\" height=\"100%%\" "
      "fill=\"white\"/>\n<text x=\"%.0f\" y=\"18\" font-size=\"14\" "
      "font-weight=\"bold\">Training metrics per epoch (history)</text>\n",
      marks, left + w + 170, top + h + 40, left);
  s += YGrid(lo, hi, left, left + w, Y);
  absl::StrAppendFormat(&s,
                        "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\">epoch "
                        "%lld</text><text x=\"%.0f\" y=\"%.0f\" "
                        "font-size=\"10\" text-anchor=\"end\">epoch "
                        "%lld</text>\n",
                        left, top + h + 16, static_cast<long long>(e0),
                        left + w, top + h + 16, static_cast<long long>(e1));
  int k = 0;
  for (const auto& [name, v] : series) {
    const char* color = kPalette[k % 8];
    std::string path;
    for (const auto& [e, x] : v) {
      absl::StrAppendFormat(&path, "%s%.1f,%.1f", path.empty() ? "" : " ", X(e),
                            Y(x));
    }
    absl::StrAppendFormat(&s,
                          "<polyline fill=\"none\" stroke=\"%s\" "
                          "points=\"%s\"/>\n",
                          color, path);
    for (const auto& [e, x] : v) {
      absl::StrAppendFormat(&s,
                            "<circle class=\"mark\" data-series=\"%s\" "
                            "cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\">"
                            "<title>epoch %lld %s: %.4g</title></circle>\n",
                            Html(name), X(e), Y(x), color,
                            static_cast<long long>(e), Html(name), x);
    }
    absl::StrAppendFormat(&s,
                          "<rect x=\"%.0f\" y=\"%.0f\" width=\"10\" "
                          "height=\"10\" fill=\"%s\"/><text x=\"%.0f\" "
                          "y=\"%.0f\" font-size=\"11\">%s</text>\n",
                          left + w + 15, top + 14.0 * k, color, left + w + 29,
                          top + 9 + 14.0 * k, Html(name));
    ++k;
  }
  return s + "</svg>\n";
}

std::string SliceChart(const pb::RunReport& run) {
  if (run.key_synapses().empty()) return "";
  std::vector<std::string> labels;
  std::vector<std::vector<double>> series(1);
  for (const auto& k : run.key_synapses()) {
    labels.push_back(absl::StrCat(k.layer(), " c", k.criterion()));
    series[0].push_back(k.share());
  }
  return BarChart("slices", "Share of key synapses per layer and criterion",
                  labels, series, {"key share"}, {kAfter});
}

std::string SecondsChart(const pb::RunReport& run) {
  if (run.seconds().empty()) return "";
  std::vector<std::string> labels;
  std::vector<std::vector<double>> series(1);
  for (const auto& p : run.seconds()) {
    labels.push_back(p.phase());
    series[0].push_back(p.seconds());
  }
  return BarChart("seconds", "Seconds per phase", labels, series, {"seconds"},
                  {"#2ca02c"});
}

std::string Verdict(const pb::RunReport& run) {
  return run.accepted()
             ? "The tuned model passed the accuracy guard (exit 0)."
             : absl::StrCat(
                   "The accuracy guard kept the original model (exit "
                   "1): ",
                   run.reason());
}

}  // namespace

ChartMarks ExpectedMarks(const pb::RunReport& run) {
  ChartMarks m;
  m.robustness = FiniteCount(RobustnessPairs(run));
  m.fairness = FiniteCount(FairnessPairs(run));
  for (const auto& [k, v] : HistorySeries(run)) m.history += v.size();
  for (const auto& k : run.key_synapses()) m.slices += std::isfinite(k.share());
  for (const auto& p : run.seconds()) m.seconds += std::isfinite(p.seconds());
  return m;
}

std::string ReportMarkdown(const pb::RunReport& run) {
  std::string m = absl::StrCat("# posttrain improve: ", run.task(), "\n\n");
  absl::StrAppend(&m, Verdict(run), "\n\n");
  absl::StrAppend(&m, "- store: `", run.store(), "`, epoch ", run.epoch(),
                  "\n- seed: ", run.seed(), "\n- profile: ", run.profile(),
                  "\n- guard: ", run.guard_metric(), " ",
                  Num(run.guard_before()), " → ", Num(run.guard_after()),
                  "\n- tuning: lr ", absl::StrFormat("%g", run.lr()),
                  ", best epoch ", run.best_epoch(), ", ", run.epochs_run(),
                  " epochs run\n\n");
  const pb::EvalResult &b = run.before(), &a = run.after();
  if (b.inputs() > 0) {
    absl::StrAppend(&m, "## Evaluation (", b.data(), ", ", b.inputs(),
                    " inputs)\n\n| figure | before | after |\n|---|---|---|\n",
                    "| clean accuracy | ", Num(b.accuracy()), " | ",
                    Num(a.accuracy()), " |\n");
    for (const Pair& p : RobustnessPairs(run)) {
      absl::StrAppend(&m, "| ", p.label, " | ", Num(p.before), " | ",
                      Num(p.after), " |\n");
    }
    for (const Pair& p : FairnessPairs(run)) {
      absl::StrAppend(&m, "| ", p.label, " (",
                      b.fairness().protected_attribute(), ") | ", Num(p.before),
                      " | ", Num(p.after), " |\n");
    }
    m += "\n";
  }
  if (!run.trials().empty()) {
    m += "## Learning rates\n\n| lr | epochs run | best epoch | validation "
         "loss | guard | passes |\n|---|---|---|---|---|---|\n";
    for (const auto& t : run.trials()) {
      absl::StrAppendFormat(
          &m, "| %g | %d%s | %d | %.5g | %.4f | %s |\n", t.lr(), t.epochs(),
          t.eliminated() ? " (halving stopped it)" : "", t.best_epoch(),
          t.best_validation_loss(), t.guard(), t.passes_guard() ? "yes" : "no");
    }
    m += "\n";
  }
  if (!run.augmentation().empty()) {
    m += "## Augmentation\n\n";
    std::map<std::string, double> sorted(run.augmentation().begin(),
                                         run.augmentation().end());
    for (const auto& [k, v] : sorted) {
      absl::StrAppend(&m, "- ", k, ": ", absl::StrFormat("%.6g", v), "\n");
    }
    m += "\n";
  }
  if (!run.seconds().empty()) {
    m += "## Seconds per phase\n\n| phase | seconds |\n|---|---|\n";
    for (const auto& p : run.seconds()) {
      absl::StrAppendFormat(&m, "| %s | %.2f |\n", p.phase(), p.seconds());
    }
    m += "\n";
  }
  if (!run.files().empty()) {
    absl::StrAppend(&m, "Files: ", absl::StrJoin(run.files(), ", "), "\n");
  }
  return m;
}

std::string ReportHtml(const pb::RunReport& run) {
  std::string h =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<title>posttrain report</title><style>body{font-family:sans-serif;"
      "margin:2em;max-width:1100px}table{border-collapse:collapse}"
      "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
      "svg{display:block;margin:1em 0}</style></head><body>\n";
  absl::StrAppend(&h, "<h1>posttrain improve: ", Html(run.task()), "</h1>\n<p>",
                  Html(Verdict(run)), "</p>\n<p>store <code>",
                  Html(run.store()), "</code>, epoch ", run.epoch(), "; seed ",
                  run.seed(), "; profile ", Html(run.profile()), "; guard ",
                  Html(run.guard_metric()), " ", Num(run.guard_before()), " → ",
                  Num(run.guard_after()), "</p>\n");
  const std::vector<Pair> rob = RobustnessPairs(run);
  const pb::EvalResult &b = run.before(), &a = run.after();
  if (b.inputs() > 0) {
    absl::StrAppend(&h, "<h2>Evaluation</h2><p>", Html(b.data()), ", ",
                    b.inputs(), " inputs. Clean accuracy ", Num(b.accuracy()),
                    " → ", Num(a.accuracy()), ".</p>\n");
  }
  h += "<h2>Robust accuracy</h2>\n";
  h += rob.empty()
           ? "<p>No attack was run.</p>\n"
           : PairChart("robustness",
                       "Robust accuracy per attack, before and after", rob);
  h += "<h2>Fairness</h2>\n";
  const std::vector<Pair> fair = FairnessPairs(run);
  h += fair.empty() ? "<p>No fairness figures (image data).</p>\n"
                    : PairChart("fairness",
                                absl::StrCat("Fairness metrics (",
                                             b.fairness().protected_attribute(),
                                             "), before and after"),
                                fair);
  h += "<h2>History</h2>\n";
  const std::string hist = HistoryChart(run);
  h += hist.empty() ? "<p>The store holds no metric.</p>\n" : hist;
  h += "<h2>Key synapses</h2>\n";
  const std::string slices = SliceChart(run);
  h += slices.empty() ? "<p>No slice (the variant does not slice).</p>\n"
                      : slices;
  h += "<h2>Time</h2>\n" + SecondsChart(run);
  h += "</body></html>\n";
  return h;
}

absl::StatusOr<std::string> ReportJson(const pb::RunReport& run) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  const auto st = google::protobuf::util::MessageToJsonString(run, &out, o);
  if (!st.ok()) {
    return absl::InternalError(
        absl::StrCat("report.json: ", st.message().as_string()));
  }
  return out;
}

absl::Status WriteReports(const pb::RunReport& run, const std::string& dir) {
  Env* env = Env::Default();
  const std::string md = ReportMarkdown(run), html = ReportHtml(run);
  absl::StatusOr<std::string> json = ReportJson(run);
  if (!json.ok()) return json.status();
  for (const auto& [name, text] :
       {std::pair<std::string, const std::string*>{"report.md", &md},
        {"report.html", &html},
        {"report.json", &*json}}) {
    absl::Status s =
        WriteFileAtomically(env, JoinPath(dir, name), {*text}, true, false);
    if (!s.ok()) return s;
  }
  return env->SyncDir(dir);
}

absl::StatusOr<pb::RunReport> ReadRunReport(const std::string& dir) {
  const std::string path = JoinPath(dir, "run.pb");
  absl::StatusOr<std::string> bytes = Env::Default()->ReadFile(path, 64u << 20);
  if (!bytes.ok()) return bytes.status();
  pb::RunReport run;
  if (!run.ParseFromString(*bytes)) {
    return absl::DataLossError(
        absl::StrCat(path, ": not a RunReport (posttrain improve's record)"));
  }
  if (run.version() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": RunReport version ",
                                                   run.version(),
                                                   ", this posttrain reads 1"));
  }
  return run;
}

}  // namespace posttrain

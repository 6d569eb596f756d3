// The report renders in a real browser: headless Chromium loads report.html
// (a copy with a script that counts, after layout, the marks of each chart
// that have a non-empty box), and a screenshot of the page is not blank.
// Skipped, with a message, where Chromium is not installed.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "tests/test_util.h"
#include "tools/report.h"

namespace posttrain {
namespace {

std::string Chromium() {
  if (const char* c = std::getenv("CHROMIUM")) return c;
  for (const char* c : {"/usr/bin/chromium", "/usr/bin/chromium-browser",
                        "/usr/bin/google-chrome"}) {
    if (std::filesystem::exists(c)) return c;
  }
  return "";
}

int Shell(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string Flags() {
  return "--headless --no-sandbox --disable-gpu --hide-scrollbars "
         "--no-first-run --disable-extensions";
}

pb::RunReport SampleRun(bool fairness) {
  pb::RunReport run;
  run.set_version(1);
  run.set_task(fairness ? "fmt" : "dare");
  run.set_store("/data/store");
  run.set_epoch(7);
  run.set_accepted(true);
  run.set_guard_metric("accuracy");
  run.set_guard_before(0.90);
  run.set_guard_after(0.91);
  for (int e = 0; e < 8; ++e) {
    pb::EpochFigures* f = run.add_history();
    f->set_epoch(e);
    (*f->mutable_metrics())["train_loss"] = 1.0 / (e + 1);
    (*f->mutable_metrics())["val_acc"] = 0.7 + 0.02 * e;
  }
  pb::EpochFigures* improved = run.add_history();  // not drawn
  improved->set_epoch(8);
  improved->set_posttrain(true);
  (*improved->mutable_metrics())["guard_accuracy"] = 0.91;
  for (const char* layer : {"0", "4", "9", "11"}) {
    for (int c = 0; c < 3; ++c) {
      pb::KeySynapseShare* k = run.add_key_synapses();
      k->set_layer(layer);
      k->set_criterion(c);
      k->set_share(0.9 + 0.01 * c);
    }
  }
  for (const char* phase : {"load", "augment", "slice", "tune", "evaluate"}) {
    pb::PhaseSeconds* p = run.add_seconds();
    p->set_phase(phase);
    p->set_seconds(1.5);
  }
  run.mutable_before()->set_inputs(100);
  run.mutable_after()->set_inputs(100);
  if (fairness) {
    for (pb::EvalResult* e : {run.mutable_before(), run.mutable_after()}) {
      pb::FairnessFigures* f = e->mutable_fairness();
      f->set_protected_attribute("sex");
      f->set_accuracy(0.8);
      f->set_balanced_accuracy(0.7);
      f->set_spd(e == run.mutable_before() ? -0.2 : -0.05);
      f->set_di(0.7);
      f->set_eod(-0.1);
      f->set_aod(-0.08);
      f->set_aaod(0.09);
    }
  } else {
    for (const char* a : {"fgsm", "pgd"}) {
      for (double eps : {0.02, 0.1}) {
        for (const char* protocol : {"adaptive", "transfer"}) {
          for (pb::EvalResult* e :
               {run.mutable_before(), run.mutable_after()}) {
            pb::AttackFigure* f = e->add_attacks();
            f->set_attack(a);
            f->set_epsilon(eps);
            f->set_protocol(protocol);
            f->set_robust_accuracy(e == run.mutable_before() ? 0.3 : 0.4);
          }
        }
      }
    }
  }
  return run;
}

// Decodes an 8-bit, non-interlaced RGB or RGBA PNG into RGB pixels.
bool DecodePng(const std::string& png, int* w, int* h,
               std::vector<uint8_t>* rgb) {
  if (png.size() < 8 || png.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) {
    return false;
  }
  auto be32 = [&](size_t at) {
    return (uint32_t{static_cast<uint8_t>(png[at])} << 24) |
           (uint32_t{static_cast<uint8_t>(png[at + 1])} << 16) |
           (uint32_t{static_cast<uint8_t>(png[at + 2])} << 8) |
           uint32_t{static_cast<uint8_t>(png[at + 3])};
  };
  std::string idat;
  int channels = 0;
  for (size_t at = 8; at + 8 <= png.size();) {
    const uint32_t len = be32(at);
    const std::string type = png.substr(at + 4, 4);
    if (at + 12 + len > png.size()) return false;
    if (type == "IHDR") {
      *w = static_cast<int>(be32(at + 8));
      *h = static_cast<int>(be32(at + 12));
      const int depth = static_cast<uint8_t>(png[at + 16]);
      const int color = static_cast<uint8_t>(png[at + 17]);
      const int interlace = static_cast<uint8_t>(png[at + 20]);
      if (depth != 8 || interlace != 0 || (color != 2 && color != 6)) {
        return false;
      }
      channels = color == 2 ? 3 : 4;
    } else if (type == "IDAT") {
      idat += png.substr(at + 8, len);
    }
    at += 12 + len;
  }
  if (channels == 0) return false;
  const size_t stride = static_cast<size_t>(*w) * channels;
  std::vector<uint8_t> raw((stride + 1) * static_cast<size_t>(*h));
  uLongf raw_len = raw.size();
  if (uncompress(raw.data(), &raw_len,
                 reinterpret_cast<const Bytef*>(idat.data()),
                 idat.size()) != Z_OK ||
      raw_len != raw.size()) {
    return false;
  }
  std::vector<uint8_t> prev(stride, 0), cur(stride);
  rgb->clear();
  for (int y = 0; y < *h; ++y) {
    const uint8_t* line = &raw[y * (stride + 1)];
    const int filter = line[0];
    for (size_t i = 0; i < stride; ++i) {
      const int a = i >= static_cast<size_t>(channels) ? cur[i - channels] : 0;
      const int b = prev[i];
      const int c = i >= static_cast<size_t>(channels) ? prev[i - channels] : 0;
      int x = line[1 + i];
      switch (filter) {
        case 1:
          x += a;
          break;
        case 2:
          x += b;
          break;
        case 3:
          x += (a + b) / 2;
          break;
        case 4: {
          const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b),
                    pc = std::abs(p - c);
          x += (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
          break;
        }
        default:
          break;
      }
      cur[i] = static_cast<uint8_t>(x);
    }
    for (int px = 0; px < *w; ++px) {
      for (int k = 0; k < 3; ++k) rgb->push_back(cur[px * channels + k]);
    }
    prev.swap(cur);
  }
  return true;
}

// chart name -> marks drawn with a non-empty box, read back from the DOM.
std::map<std::string, int> MarksInBrowser(const std::string& dir) {
  const std::string html = testing::ReadFileBytes(dir + "/report.html");
  const std::string probe = R"(<script>
window.addEventListener('load', () => {
  const out = [];
  document.querySelectorAll('svg.chart').forEach(svg => {
    let n = 0;
    svg.querySelectorAll('.mark').forEach(m => {
      const b = m.getBBox();
      if (b.width > 0 && b.height > 0) n++;
    });
    out.push(svg.dataset.chart + '=' + n);
  });
  const pre = document.createElement('pre');
  pre.id = 'marks';
  pre.textContent = out.join(' ');
  document.body.appendChild(pre);
});
</script></body>)";
  testing::WriteFileBytes(dir + "/probe.html",
                          absl::StrReplaceAll(html, {{"</body>", probe}}));
  const std::string dom = dir + "/dom.html";
  const int rc = Shell(absl::StrCat(Chromium(), " ", Flags(),
                                    " --virtual-time-budget=5000 --dump-dom "
                                    "file://",
                                    dir, "/probe.html >", dom, " 2>/dev/null"));
  EXPECT_EQ(rc, 0);
  std::map<std::string, int> marks;
  const std::string text = testing::ReadFileBytes(dom);
  const size_t at = text.find("<pre id=\"marks\">");
  if (at == std::string::npos) return marks;
  const size_t end = text.find("</pre>", at);
  for (absl::string_view kv : absl::StrSplit(
           text.substr(at + 16, end - at - 16), ' ', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, '=');
    int n = 0;
    if (absl::SimpleAtoi(p.second, &n)) marks[p.first] = n;
  }
  return marks;
}

class ReportBrowser : public ::testing::TestWithParam<bool> {};

TEST_P(ReportBrowser, EveryChartDrawsItsMarksAndThePageIsNotBlank) {
  if (Chromium().empty()) {
    GTEST_SKIP() << "chromium is not installed (Debian package 'chromium'; "
                    "scripts/install_deps.sh adds it): the report is not "
                    "checked in a browser";
  }
  const pb::RunReport run = SampleRun(GetParam());
  const std::string dir = testing::MakeTempDir("report");
  ASSERT_TRUE(WriteReports(run, dir).ok());
  const ChartMarks expected = ExpectedMarks(run);
  EXPECT_EQ(expected.history, 16);  // two metrics, eight training epochs
  EXPECT_EQ(expected.slices, 12);
  EXPECT_EQ(expected.seconds, 5);
  EXPECT_EQ(expected.robustness, GetParam() ? 0 : 16);
  EXPECT_EQ(expected.fairness, GetParam() ? 14 : 0);

  std::map<std::string, int> want = {{"history", expected.history},
                                     {"slices", expected.slices},
                                     {"seconds", expected.seconds}};
  if (expected.robustness > 0) want["robustness"] = expected.robustness;
  if (expected.fairness > 0) want["fairness"] = expected.fairness;
  EXPECT_EQ(MarksInBrowser(dir), want);

  const std::string png = dir + "/shot.png";
  ASSERT_EQ(Shell(absl::StrCat(Chromium(), " ", Flags(), " --screenshot=", png,
                               " --window-size=1200,2400 file://", dir,
                               "/report.html >/dev/null 2>&1")),
            0);
  int w = 0, h = 0;
  std::vector<uint8_t> rgb;
  ASSERT_TRUE(DecodePng(testing::ReadFileBytes(png), &w, &h, &rgb));
  EXPECT_EQ(w, 1200);
  int64_t ink = 0, blue = 0;
  for (size_t i = 0; i + 2 < rgb.size(); i += 3) {
    if (rgb[i] < 200 || rgb[i + 1] < 200 || rgb[i + 2] < 200) ++ink;
    // The "after" bars (#1f77b4) and the slice bars.
    if (std::abs(rgb[i] - 0x1f) < 8 && std::abs(rgb[i + 1] - 0x77) < 8 &&
        std::abs(rgb[i + 2] - 0xb4) < 8) {
      ++blue;
    }
  }
  const int64_t pixels = static_cast<int64_t>(w) * h;
  EXPECT_GT(ink, pixels / 100) << "the screenshot is (nearly) blank";
  EXPECT_GT(blue, 2000) << "no bar of the charts is visible";
}

INSTANTIATE_TEST_SUITE_P(Tasks, ReportBrowser, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "Fairness" : "Robustness";
                         });

}  // namespace
}  // namespace posttrain

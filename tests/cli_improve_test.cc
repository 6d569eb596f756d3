// End-to-end tests of `posttrain improve`, `eval`, `export` and `report` on
// tiny data: a small CNN trained on 8x8 images (a store with a profile) and
// the reference MLP on German credit (a store without one). The binary runs
// as a child process, as in a nightly job.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/model_spec.h"
#include "common/model_view.h"
#include "common/module_state.h"
#include "fairness/tabular.h"
#include "fairness/tabular_schema.h"
#include "google/protobuf/util/json_util.h"
#include "history/store.h"
#include "robustness/fashion_mnist.h"
#include "slicer/profile.h"
#include "tests/tabular_data.h"
#include "tests/test_util.h"
#include "tools/export.h"
#include "tools/report.h"
#include "tools/run.pb.h"

namespace posttrain {
namespace {

struct Result {
  int exit_code;  // 128 + signal when killed
  std::string out, err;
};

Result Tool(const std::string& args, const std::string& env = "") {
  static int n = 0;
  const std::string base =
      testing::MakeTempDir("run") + "/" + std::to_string(++n);
  const std::string cmd =
      absl::StrCat(env, env.empty() ? "" : " ", POSTTRAIN_CLI, " ", args, " >",
                   base, ".out 2>", base, ".err");
  const int status = std::system(cmd.c_str());
  Result r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = testing::ReadFileBytes(base + ".out");
  r.err = testing::ReadFileBytes(base + ".err");
  return r;
}

pb::EvalResult ParseEval(const std::string& json) {
  pb::EvalResult r;
  const auto st = google::protobuf::util::JsonStringToMessage(json, &r);
  EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << json;
  return r;
}

int Lines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

// 8x8 images, 3 classes: a bright horizontal bar in the top, middle or
// bottom third, on noise.
ImageDataset Bars(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  at::Tensor y = torch::randint(0, 3, {n}, gen, torch::kLong);
  at::Tensor x = torch::rand({n, 1, 8, 8}, gen);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = 1 + 3 * y[i].item<int64_t>();
    x[i][0].narrow(0, row, 1) += 0.2;
  }
  return {x.clamp(0, 1), y};
}

struct Fixture {
  std::string root, store, tab_store, mined, sliced, test;
};

// German credit, for the fairness runs: ../shared/data/tabular here, or
// where scripts/download_tabular.sh put it (POSTTRAIN_TABULAR_DIR). Without
// it those tests skip, saying so, and the robustness tests still run.
constexpr char kGerman[] = POSTTRAIN_TABULAR_DIR "/german/german.data";
bool HaveGerman() { return std::filesystem::exists(kGerman); }

std::string PairArg(const std::string& dir, const std::string& stem) {
  return absl::StrCat(dir, "/", stem, "-images.idx,", dir, "/", stem,
                      "-labels.idx");
}

void WriteSet(const ImageDataset& d, const std::string& dir,
              const std::string& stem) {
  ASSERT_TRUE(WriteIdxDataset(d, absl::StrCat(dir, "/", stem, "-images.idx"),
                              absl::StrCat(dir, "/", stem, "-labels.idx"))
                  .ok());
}

const Fixture& Data() {
  static const Fixture* f = [] {
    auto* f = new Fixture;
    f->root = testing::MakeTempDir("cli_improve");
    f->store = f->root + "/store";
    const ImageDataset train = Bars(240, 1), val = Bars(240, 2),
                       test = Bars(120, 3);
    WriteSet(train, f->root, "train");
    WriteSet(val, f->root, "val");
    WriteSet(test, f->root, "test");
    f->mined = PairArg(f->root, "val");
    f->sliced = PairArg(f->root, "train");
    f->test = PairArg(f->root, "test");
    torch::nn::Sequential model = testing::SmallCnn(0);
    auto spec = DescribeSequential(model);
    EXPECT_TRUE(spec.ok());
    {
      auto store = HistoryStore::Open(f->store, {}, *spec);
      EXPECT_TRUE(store.ok()) << store.status();
      torch::optim::Adam opt(model->parameters(), 3e-3);
      for (int e = 0; e < 4; ++e) {
        model->train();
        for (int64_t b = 0; b < train.size(); b += 32) {
          const int64_t n = std::min<int64_t>(32, train.size() - b);
          opt.zero_grad();
          torch::nn::functional::cross_entropy(
              model->forward(train.images.narrow(0, b, n)),
              train.labels.narrow(0, b, n))
              .backward();
          opt.step();
        }
        EpochMetadata meta;
        meta.epoch = e;
        meta.step = 8 * (e + 1);
        meta.metrics = {{"train_loss", 1.0 / (e + 1)},
                        {"val_acc", 0.5 + e * 0.1}};
        auto state = CopyModuleState(*model);
        EXPECT_TRUE((*store)->Append(meta, std::move(*state)).ok());
      }
    }
    // The online profile beside it, as PostTrainCallback saves it.
    auto view = ModelView::Create(model);
    auto profile = Profile::Create(*view, train.images.narrow(0, 0, 1), 3);
    EXPECT_TRUE(profile->AddBatch(*view, train.images, train.labels).ok());
    std::string bytes;
    profile->ToProto().SerializeToString(&bytes);
    testing::WriteFileBytes(f->store + "/profile.pb", bytes);

    // German credit with the reference MLP, no profile.
    if (!HaveGerman()) return f;
    f->tab_store = f->root + "/german";
    auto schema = ReadTabularSchema(POSTTRAIN_SCHEMA_DIR "/german.schema");
    auto rows = ReadTabularRows(*schema, POSTTRAIN_TABULAR_DIR "/german");
    auto data = EncodeTabular(*schema, *rows, {});
    EXPECT_TRUE(data.ok()) << data.status();
    torch::nn::Sequential mlp = ReferenceMlp(data->features, 1);
    auto mlp_spec = DescribeSequential(mlp);
    auto store = HistoryStore::Open(f->tab_store, {}, *mlp_spec);
    torch::optim::Adam opt(mlp->parameters(), 1e-3);
    for (int e = 0; e < 15; ++e) {
      for (int64_t b = 0; b < data->train.size(); b += 64) {
        const int64_t n = std::min<int64_t>(64, data->train.size() - b);
        opt.zero_grad();
        torch::nn::functional::cross_entropy(
            mlp->forward(data->train.x.narrow(0, b, n)),
            data->train.y.narrow(0, b, n))
            .backward();
        opt.step();
      }
      EpochMetadata meta;
      meta.epoch = e;
      meta.metrics = {{"epoch_index", static_cast<double>(e)}};
      EXPECT_TRUE(
          (*store)->Append(meta, std::move(*CopyModuleState(*mlp))).ok());
    }
    return f;
  }();
  return *f;
}

std::string ImproveArgs(const std::string& out) {
  const Fixture& f = Data();
  return absl::StrCat("improve --store=", f.store,
                      " --task=robustness --mined=", f.mined,
                      " --sliced=", f.sliced, " --test=", f.test,
                      " --lrs=1e-3,1e-4 --tune_epochs=3 --attack_size=40 "
                      "--epsilons=0.05 --attacks=fgsm,pgd --threads=1 --out=",
                      out);
}

std::string FairnessArgs(const std::string& out) {
  return absl::StrCat("improve --store=", Data().tab_store,
                      " --task=fairness --data=", POSTTRAIN_TABULAR_DIR,
                      "/german --schema=", POSTTRAIN_SCHEMA_DIR,
                      "/german.schema --lrs=1e-3 --tune_epochs=3 --pairs=400 "
                      "--guard_pairs=200 --threads=1 --out=",
                      out);
}

// The result of a run: the model's bytes and the figures that matter.
std::string Outcome(const std::string& dir) {
  auto run = ReadRunReport(dir);
  if (!run.ok()) return "no run: " + std::string(run.status().message());
  std::string s =
      absl::StrCat(run->accepted(), " ", run->lr(), " ", run->best_epoch(), " ",
                   run->guard_after(), " ", run->after().accuracy());
  for (const auto& a : run->after().attacks()) {
    absl::StrAppend(&s, " ", a.attack(), a.protocol(), "=",
                    a.robust_accuracy());
  }
  return s + " " +
         std::to_string(std::hash<std::string>()(
             testing::ReadFileBytes(dir + "/model.safetensors")));
}

// --lr_search=halving: every lr's epochs and whether halving stopped it are
// recorded; the setting is in settings_json; an unknown search is named.
TEST(CliImprove, HalvingRecordsEachLearningRatesEpochs) {
  const std::string out = testing::MakeTempDir("improve_halving") + "/run";
  Result r = Tool(ImproveArgs(out) + " --lr_search=halving");
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.err;
  auto run = ReadRunReport(out);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->trials_size(), 2);
  // Two lrs, 2 epochs each, then the better one alone to --tune_epochs=3.
  int eliminated = 0, epochs = 0;
  for (const auto& t : run->trials()) {
    eliminated += t.eliminated();
    epochs += t.epochs();
    EXPECT_EQ(t.epochs(), t.eliminated() ? 2 : 3) << t.lr();
  }
  EXPECT_EQ(eliminated, 1);
  EXPECT_EQ(run->epochs_run(), epochs);
  EXPECT_TRUE(absl::StrContains(run->settings_json(),
                                "\"lr_search\": \"successive_halving\""))
      << run->settings_json();
  Result bad = Tool(ImproveArgs(out + "_bad") + " --lr_search=fastest");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad.err, "--lr_search: 'fastest'")) << bad.err;
}

TEST(CliImprove, RobustnessWritesTheRunAndIsNotRedone) {
  const std::string out = testing::MakeTempDir("improve") + "/run";
  Result r = Tool(ImproveArgs(out));
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.err;
  for (const char* f : {"model.safetensors", "model.pt", "run.pb", "report.md",
                        "report.html", "report.json"}) {
    EXPECT_TRUE(std::filesystem::exists(out + "/" + f)) << f;
  }
  EXPECT_FALSE(std::filesystem::exists(out + ".partial"));
  auto run = ReadRunReport(out);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code(), r.exit_code);
  EXPECT_EQ(run->accepted(), r.exit_code == 0);
  EXPECT_EQ(run->task(), "dare");
  EXPECT_EQ(run->epoch(), 3);
  EXPECT_TRUE(absl::StartsWith(run->profile(), "online")) << run->profile();
  EXPECT_EQ(run->history_size(), 4);
  EXPECT_EQ(run->trials_size(), 2);
  EXPECT_EQ(run->before().inputs(), 120);
  // fgsm and pgd, adaptive and transfer, before and after.
  EXPECT_EQ(run->before().attacks_size(), 4);
  ASSERT_EQ(run->after().attacks_size(), 4);
  EXPECT_EQ(run->after().attacks(1).protocol(), "transfer");
  EXPECT_GT(run->key_synapses_size(), 0);
  const std::string json = testing::ReadFileBytes(out + "/report.json");
  EXPECT_TRUE(absl::StrContains(json, "\"guard_metric\": \"accuracy\""))
      << json;
  // The exported model is the one the run measured.
  Result eval = Tool(absl::StrCat("eval --model=", out, " --data=", Data().test,
                                  " --attacks=none --json"));
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  EXPECT_DOUBLE_EQ(ParseEval(eval.out).accuracy(), run->after().accuracy());
  EXPECT_EQ(ParseEval(eval.out).inputs(), 120);

  // Again with the same flags: not redone, same exit code.
  Result again = Tool(ImproveArgs(out));
  EXPECT_EQ(again.exit_code, r.exit_code) << again.err;
  EXPECT_TRUE(absl::StrContains(again.out, "finished earlier")) << again.out;
  // Other flags into the same directory: refused, nothing overwritten.
  const std::string before = testing::ReadFileBytes(out + "/run.pb");
  Result other = Tool(ImproveArgs(out) + " --seed=2");
  EXPECT_EQ(other.exit_code, 2);
  EXPECT_EQ(Lines(other.err), 1) << other.err;
  EXPECT_TRUE(absl::StrContains(other.err, "other flags")) << other.err;
  EXPECT_EQ(testing::ReadFileBytes(out + "/run.pb"), before);

  // report regenerates the three reports from run.pb.
  std::filesystem::remove(out + "/report.html");
  Result rep = Tool("report " + out);
  EXPECT_EQ(rep.exit_code, 0) << rep.err;
  EXPECT_TRUE(std::filesystem::exists(out + "/report.html"));
}

TEST(CliImprove, AGuardRejectionExits1AndKeepsTheOriginalModel) {
  const std::string out = testing::MakeTempDir("reject") + "/run";
  // A learning rate this large wrecks the tuned model: the guard refuses it.
  Result r = Tool(ImproveArgs(out) + " --lrs=50 --attacks=none");
  ASSERT_EQ(r.exit_code, 1) << r.err;
  auto run = ReadRunReport(out);
  ASSERT_TRUE(run.ok());
  EXPECT_FALSE(run->accepted());
  EXPECT_FALSE(run->reason().empty());
  EXPECT_TRUE(
      absl::StrContains(testing::ReadFileBytes(out + "/report.md"),
                        "The accuracy guard kept the original model (exit 1)"));
  auto file = ReadSafetensors(out + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  auto store = HistoryStore::OpenReadOnly(Data().store);
  auto original = (*store)->ReadEpoch(3);
  EXPECT_EQ(testing::DiffStates(file->state, *original), "");
}

TEST(CliImprove, KilledAnywhereThenRerunEndsAsAnUninterruptedRun) {
  const std::string dir = testing::MakeTempDir("kill");
  const std::string ref = dir + "/reference";
  Result r = Tool(ImproveArgs(ref));
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.err;
  const std::string expected = Outcome(ref);
  // One point in each phase: mining (augment), slicing, tuning, the guard's
  // evaluation, the attacks, the export and the commit.
  for (const char* at : {"mining", "slicing", "tuning:2", "evaluation",
                         "attack:3", "export", "commit"}) {
    SCOPED_TRACE(at);
    std::string name(at);
    std::replace(name.begin(), name.end(), ':', '_');
    const std::string out = absl::StrCat(dir, "/", name);
    Result killed =
        Tool(ImproveArgs(out), absl::StrCat("POSTTRAIN_CRASH_AT=", at));
    EXPECT_EQ(killed.exit_code, 128 + 9) << killed.err;
    EXPECT_FALSE(std::filesystem::exists(out)) << "a killed run left " << out;
    EXPECT_TRUE(std::filesystem::exists(out + ".partial"));
    // Nothing of the killed run may end up in the finished one.
    testing::WriteFileBytes(out + ".partial/left-by-the-killed-run", "x");
    Result rerun = Tool(ImproveArgs(out));
    EXPECT_EQ(rerun.exit_code, r.exit_code) << rerun.err;
    EXPECT_TRUE(absl::StrContains(rerun.out, "interrupted run")) << rerun.out;
    EXPECT_EQ(Outcome(out), expected);
    EXPECT_FALSE(std::filesystem::exists(out + "/left-by-the-killed-run"));
    EXPECT_FALSE(std::filesystem::exists(out + ".partial"));
  }
}

TEST(CliImprove, FairnessKilledWhilePairingOrSlicingEndsAsUninterrupted) {
  POSTTRAIN_SKIP_WITHOUT_DATA(kGerman);
  const std::string dir = testing::MakeTempDir("fairkill");
  Result r = Tool(FairnessArgs(dir + "/reference"));
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.err;
  for (const char* at : {"pairing:2", "slicing", "tuning"}) {
    SCOPED_TRACE(at);
    const std::string out = absl::StrCat(dir, "/", std::string(at, 4));
    EXPECT_EQ(Tool(FairnessArgs(out), absl::StrCat("POSTTRAIN_CRASH_AT=", at))
                  .exit_code,
              128 + 9);
    EXPECT_FALSE(std::filesystem::exists(out));
    Result rerun = Tool(FairnessArgs(out));
    EXPECT_EQ(rerun.exit_code, r.exit_code) << rerun.err;
    EXPECT_EQ(Outcome(out), Outcome(dir + "/reference"));
  }
}

// Two real runs: the first is stopped (SIGSTOP) while slicing, holding its
// locks; a second on the same store, and one on another store into the
// same run directory, both exit 2 naming the first; once the first is
// killed, the store is free again.
TEST(CliImprove, OverlappingRunsCannotBothWrite) {
  const std::string dir = testing::MakeTempDir("overlap");
  const std::string out = dir + "/run";
  const std::string pidfile = dir + "/pid";
  ASSERT_EQ(std::system(absl::StrCat("POSTTRAIN_CRASH_AT=slicing:1:stop ",
                                     POSTTRAIN_CLI, " ", ImproveArgs(out),
                                     " >/dev/null 2>&1 & echo $! >", pidfile)
                            .c_str()),
            0);
  int pid = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      absl::StripAsciiWhitespace(testing::ReadFileBytes(pidfile)), &pid));
  // Wait until it has stopped (state T in /proc/PID/stat).
  bool stopped = false;
  for (int i = 0; i < 600 && !stopped; ++i) {
    const std::string stat =
        testing::ReadFileBytes(absl::StrCat("/proc/", pid, "/stat"));
    const size_t paren = stat.rfind(')');
    stopped = paren != std::string::npos && paren + 2 < stat.size() &&
              stat[paren + 2] == 'T';
    if (!stopped) ::usleep(100 * 1000);
  }
  ASSERT_TRUE(stopped) << "the first run never reached slicing";
  const std::string holder = absl::StrCat("pid ", pid, " on ");
  Result same_store = Tool(ImproveArgs(dir + "/other"));
  EXPECT_EQ(same_store.exit_code, 2);
  EXPECT_EQ(Lines(same_store.err), 1) << same_store.err;
  EXPECT_TRUE(absl::StrContains(same_store.err, holder)) << same_store.err;
  if (HaveGerman()) {
    Result same_out = Tool(FairnessArgs(out));
    EXPECT_EQ(same_out.exit_code, 2);
    EXPECT_TRUE(absl::StrContains(same_out.err, "run directory"))
        << same_out.err;
    EXPECT_TRUE(absl::StrContains(same_out.err, holder)) << same_out.err;
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/other"));
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) ::usleep(50 * 1000);
  Result after = Tool(ImproveArgs(out));
  EXPECT_TRUE(after.exit_code == 0 || after.exit_code == 1) << after.err;
}

TEST(CliImprove, ASecondRunOnALockedStoreExits2NamingTheHolder) {
  const std::string lock = Data().store + "/IMPROVE.LOCK";
  const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  const std::string holder = "pid 4242 on nightly-7 since 2026-12-02\n";
  ASSERT_EQ(::ftruncate(fd, 0), 0);
  ASSERT_EQ(::pwrite(fd, holder.data(), holder.size(), 0),
            static_cast<ssize_t>(holder.size()));
  const std::string out = testing::MakeTempDir("locked") + "/run";
  Result r = Tool(ImproveArgs(out));
  ::close(fd);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(Lines(r.err), 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "pid 4242 on nightly-7")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(CliImprove, FairnessWithoutAProfileSaysSoAndReportsFairness) {
  POSTTRAIN_SKIP_WITHOUT_DATA(kGerman);
  const std::string out = testing::MakeTempDir("fair") + "/run";
  Result r = Tool(FairnessArgs(out));
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "profiles the model offline")) << r.out;
  auto run = ReadRunReport(out);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->task(), "fmt");
  EXPECT_TRUE(absl::StartsWith(run->profile(), "offline"));
  EXPECT_EQ(run->after().fairness().protected_attribute(), "sex");
  EXPECT_EQ(run->before().inputs(), 300);
  // Two criteria (the groups) per weighted layer.
  EXPECT_EQ(run->key_synapses_size(), 2 * 6);
  const ChartMarks m = ExpectedMarks(*run);
  EXPECT_EQ(m.fairness, 14);
  EXPECT_EQ(m.robustness, 0);
  EXPECT_EQ(m.history, 15);
  // eval of the same model on the same split gives the same figures.
  Result eval = Tool(absl::StrCat(
      "eval --model=", out, "/model.safetensors --data=", POSTTRAIN_TABULAR_DIR,
      "/german --schema=", POSTTRAIN_SCHEMA_DIR, "/german.schema --json"));
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  const pb::EvalResult e = ParseEval(eval.out);
  EXPECT_DOUBLE_EQ(e.fairness().spd(), run->after().fairness().spd());
  EXPECT_DOUBLE_EQ(e.fairness().aaod(), run->after().fairness().aaod());
  EXPECT_DOUBLE_EQ(e.accuracy(), run->after().accuracy());
}

TEST(CliEval, EveryAttackUnderBothProtocols) {
  const Fixture& f = Data();
  Result r = Tool(absl::StrCat(
      "eval --model=", f.store, "@3 --transfer_from=", f.store,
      "@1 --data=", f.test,
      " --attacks=fgsm,bim,pgd,cw,jsma --epsilons=0.05,0.1 --attack_size=12 "
      "--threads=1 --json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* a : {"fgsm", "bim", "pgd", "cw", "jsma"}) {
    EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat("\"attack\": \"", a)))
        << a;
  }
  // (3 L-inf attacks x 2 radii + cw + jsma) x 2 protocols.
  const std::vector<std::string> figures =
      absl::StrSplit(r.out, "\"protocol\":");
  EXPECT_EQ(figures.size(), 1 + 2 * (3 * 2 + 2)) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\"transfer\"")) << r.out;
  EXPECT_TRUE(absl::StrContains(
      r.out, absl::StrCat("\"source\": \"", f.store, "@1\"")));
  Result text = Tool(absl::StrCat("eval --model=", f.store, " --data=", f.test,
                                  " --attacks=fgsm --attack_size=12"));
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(absl::StrContains(text.out, "adaptive")) << text.out;
}

TEST(CliExport, BothFormatsAndTheSafetensorsModelEvaluatesAlike) {
  const Fixture& f = Data();
  const std::string dir = testing::MakeTempDir("export");
  ASSERT_EQ(Tool(absl::StrCat("export --model=", f.store, "@2 --out=", dir,
                              "/m.safetensors"))
                .exit_code,
            0);
  ASSERT_EQ(
      Tool(absl::StrCat("export --model=", f.store, "@2 --out=", dir, "/m.pt"))
          .exit_code,
      0);
  auto file = ReadSafetensors(dir + "/m.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  auto store = HistoryStore::OpenReadOnly(f.store);
  auto state = (*store)->ReadEpoch(2);
  EXPECT_EQ(testing::DiffStates(file->state, *state), "");
  Result a = Tool(absl::StrCat("eval --model=", f.store, "@2 --data=", f.test,
                               " --attacks=none --json"));
  Result b =
      Tool(absl::StrCat("eval --model=", dir, "/m.safetensors --data=", f.test,
                        " --attacks=none --json"));
  ASSERT_EQ(a.exit_code, 0);
  ASSERT_EQ(b.exit_code, 0);
  Result c = Tool(absl::StrCat("eval --model=", dir, "/m.pt --data=", f.test,
                               " --attacks=none --json"));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_DOUBLE_EQ(ParseEval(a.out).accuracy(), ParseEval(b.out).accuracy());
  EXPECT_DOUBLE_EQ(ParseEval(a.out).accuracy(), ParseEval(c.out).accuracy());
  EXPECT_GT(ParseEval(a.out).accuracy(), 0.4);
  EXPECT_EQ(
      Tool(absl::StrCat("export --model=", f.store, " --out=", dir, "/m.onnx"))
          .exit_code,
      2);
}

// Bad usage and bad files: exit 2 with one line naming the flag or file.
TEST(CliErrors, BadFlagsAndFilesExit2WithOneLine) {
  const Fixture& f = Data();
  const std::string dir = testing::MakeTempDir("bad");
  testing::WriteFileBytes(dir + "/short-images.idx", "\x00\x00\x08");
  const std::string out = dir + "/run";
  struct Case {
    std::string args, names;
  };
  std::vector<Case> cases = {
      {"improve --frobnicate=1", "--frobnicate"},
      {"improve --seed=abc --store=x", "--seed"},
      {"improve --task=robustness --out=" + out, "--store"},
      {"improve --store=" + f.store + " --task=speed --out=" + out, "--task"},
      {"improve --store=" + dir + "/nope --task=robustness --out=" + out,
       "nope"},
      {"improve --store=" + f.store + " --task=robustness --mined=" + dir +
           "/short-images.idx," + dir + "/short-labels.idx --sliced=" +
           f.sliced + " --test=" + f.test + " --out=" + out,
       "short-images.idx"},
      {"improve --store=" + f.store + " --task=robustness --mined=" + f.mined +
           " --sliced=" + f.sliced + " --test=" + f.test +
           " --lrs=0.1,x --out=" + out,
       "--lrs"},
      {"improve --store=" + f.store + " --task=robustness --mined=" + f.mined +
           " --sliced=" + f.sliced + " --test=" + f.test +
           " --attacks=fgsm,deepfool --out=" + out,
       "deepfool"},
      {"improve --store=" + f.store +
           " --task=robustness --epoch=17 --mined=" + f.mined +
           " --sliced=" + f.sliced + " --test=" + f.test + " --out=" + out,
       "17"},
      {"eval --model=" + f.store + "@x --data=" + f.test, "@x"},
      {"eval --model=" + f.store + "@9 --data=" + f.test, "9"},
      {"eval --model=" + f.store + " --data=" + f.test + " --protected=sex",
       "--protected"},
      {"eval --model=" + dir + "/missing.safetensors --data=" + f.test,
       "missing.safetensors"},
      {"eval --model=" + f.store + " --data=" + f.test + " --epsilons=2",
       "--epsilons"},
      {"eval --model=" + f.store + " --data=" + f.test + " extra", "extra"},
      {"history show " + f.store + " 99", "99"},
      {"report " + dir, "run.pb"},
      {"frobnicate", "frobnicate"},
  };
  // A two-class model's store against ten-class images.
  if (HaveGerman()) {
    cases.push_back({"improve --store=" + f.tab_store +
                         " --task=robustness --mined=" + f.mined +
                         " --sliced=" + f.sliced + " --test=" + f.test +
                         " --out=" + out,
                     "class label 2"});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.args);
    Result r = Tool(c.args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(Lines(r.err), 1) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, c.names)) << r.err;
    EXPECT_FALSE(std::filesystem::exists(out));
  }
}

TEST(CliHelp, EverySubcommandHasHelp) {
  for (const char* sub : {"history", "improve", "eval", "export", "report"}) {
    SCOPED_TRACE(sub);
    Result r = Tool(absl::StrCat(sub, " --help"));
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat("posttrain ", sub)))
        << r.out;
  }
  Result improve = Tool("improve --help");
  EXPECT_TRUE(absl::StrContains(improve.out, "--guard_fraction"))
      << improve.out;
  EXPECT_EQ(Tool("--help").exit_code, 0);
  EXPECT_EQ(Tool("").exit_code, 2);
}

TEST(CliHistory, ShowPrintsOneEpochsTensors) {
  Result r = Tool("history show " + Data().store + " 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "epoch 2 of")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "val_acc=0.7")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "0.weight")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "4x1x3x3")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "1.num_batches_tracked")) << r.out;
}

}  // namespace
}  // namespace posttrain

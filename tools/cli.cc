#include "tools/cli.h"

#include <fcntl.h>
#include <sys/file.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "fairness/fmt.h"
#include "fairness/metrics.h"
#include "fairness/tabular.h"
#include "fairness/tabular_schema.h"
#include "google/protobuf/util/json_util.h"
#include "history/env.h"
#include "history/store.h"
#include "hooks/progress_bar.h"
#include "robustness/attacks.h"
#include "robustness/dare.h"
#include "robustness/fashion_mnist.h"
#include "slicer/profile.pb.h"
#include "tools/export.h"
#include "tools/report.h"
#include "tools/run.pb.h"
#include "tuner/pipeline.h"

// Every flag of every subcommand; each subcommand accepts its own list
// (kCommands below), and any other flag is a usage error.
ABSL_FLAG(std::string, store, "", "history store directory");
ABSL_FLAG(std::string, task, "", "robustness (Dare) or fairness (FMT)");
ABSL_FLAG(std::string, variant, "",
          "task variant (dare, dare_no_slice, dare_no_transform, dare_last, "
          "dare_random; fmt, fmt_single, fmt_random, fmt_no_slice, "
          "fmt_no_transform, fmt_last); empty: dare or fmt");
ABSL_FLAG(std::string, data, "",
          "images: a Fashion-MNIST directory (IDX files) or IMAGES,LABELS "
          "(two IDX files, gzip or raw, uint8 or float32); tabular (with "
          "--schema): the directory of the schema's data files");
ABSL_FLAG(std::string, schema, "", "tabular: the data set's schema file");
ABSL_FLAG(std::string, protected, "",
          "tabular: the protected attribute (empty: the schema's default)");
ABSL_FLAG(std::string, mined, "",
          "robustness: IMAGES,LABELS of the held-out half (the guard split "
          "and D, the data mined); default: the validation half of --data");
ABSL_FLAG(std::string, sliced, "",
          "robustness: IMAGES,LABELS of the data sliced (D'_c); default: the "
          "training half of --data");
ABSL_FLAG(std::string, test, "",
          "IMAGES,LABELS evaluated before and after; default: the test split "
          "of --data");
ABSL_FLAG(double, guard_fraction, 0.1,
          "robustness: the share of the held-out half that is the guard "
          "split");
ABSL_FLAG(int64_t, mine_inputs, 0,
          "robustness: at most this many inputs of D mined (0: all)");
ABSL_FLAG(int64_t, slice_inputs, 10000,
          "at most this many inputs sliced (a seeded sample; 0: all)");
ABSL_FLAG(int64_t, pairs, 0,
          "fairness: generated pairs for T (0: as many as training rows)");
ABSL_FLAG(int64_t, guard_pairs, 0,
          "fairness: generated pairs for T's guard counterpart (0: as many "
          "as validation rows)");
ABSL_FLAG(std::string, lrs, "",
          "learning-rate grid, comma-separated; empty: ALGORITHMS.md's "
          "1e-3,1e-4,1e-5");
ABSL_FLAG(int, tune_epochs, 0, "most tuning epochs per lr (0: 20)");
ABSL_FLAG(std::string, lr_search, "grid",
          "how the lr grid is searched: grid (every lr up to --tune_epochs) "
          "or halving (successive halving: every lr 2 epochs, the best third "
          "on, until one is left)");
ABSL_FLAG(int64_t, train_size, -1,
          "cap on the Fashion-MNIST training half (-1: all 30000)");
ABSL_FLAG(int64_t, validation_size, -1,
          "cap on the Fashion-MNIST validation half (-1: all 30000)");
ABSL_FLAG(int64_t, test_size, -1, "cap on the test images (-1: all)");
ABSL_FLAG(uint64_t, seed, 1,
          "seed of the data split (as in training) and of the phase");
ABSL_FLAG(int64_t, epoch, -1,
          "the store epoch improved (-1: the newest training epoch)");
ABSL_FLAG(std::string, out, "",
          "improve: the run directory (created; must not exist, be empty, "
          "or hold a finished run of the same flags); export: the file "
          "(.safetensors or .pt)");
ABSL_FLAG(std::string, model, "",
          "STORE[@EPOCH] (default: the newest epoch), a .safetensors or .pt "
          "file posttrain exported, or a run directory of posttrain improve");
ABSL_FLAG(std::string, transfer_from, "",
          "eval: the model the transfer examples are crafted against (as "
          "--model); empty: adaptive protocol only");
ABSL_FLAG(std::string, attacks, "default",
          "comma-separated fgsm,bim,pgd,cw,jsma; 'default': fgsm,pgd for "
          "images, none for tabular data; 'none'");
ABSL_FLAG(std::string, epsilons, "0.02,0.05,0.1",
          "L-infinity radii of fgsm, bim and pgd");
ABSL_FLAG(int64_t, attack_size, 1000, "inputs attacked (the first N)");
ABSL_FLAG(bool, json, false, "eval: print the EvalResult as JSON");
ABSL_FLAG(std::string, predictions, "",
          "eval: write the predicted class of every input here, one a line");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(bool, progress, false, "progress lines on stderr");

namespace posttrain {
namespace {

// ---------------------------------------------------------------- errors

// A failure and the exit code it maps to.
struct Failure {
  int code;
  std::string message;
};

int ExitCodeOf(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnavailable:
      return kExitBadInput;
    default:
      return kExitInternal;
  }
}

// One line on stderr.
int Fail(absl::string_view command, const absl::Status& s) {
  std::string msg(s.message());
  std::replace(msg.begin(), msg.end(), '\n', ' ');
  std::fprintf(stderr, "posttrain %s: %s\n", std::string(command).c_str(),
               msg.c_str());
  return ExitCodeOf(s);
}

// ---------------------------------------------------------------- flags

struct Command {
  const char* name;
  const char* usage;
  std::vector<const char*> flags;
};

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"history",
       "posttrain history ls|show|verify|gc STORE [EPOCH]\n"
       "  ls      the epochs of a history store, with their metadata\n"
       "  show    one epoch (the newest when EPOCH is left out): metrics,\n"
       "          codec, sizes and every tensor\n"
       "  verify  read every epoch and check every checksum (exit 1: damaged)\n"
       "  gc      remove the files an interrupted writer left\n",
       {}},
      {"improve",
       "posttrain improve --store STORE --task robustness|fairness --data ...\n"
       "                  [--variant V] [--seed N] --out DIR\n"
       "Runs the post-training phase on the newest training epoch of STORE,\n"
       "rebuilt from the spec in the store, and writes DIR: "
       "model.safetensors,\n"
       "model.pt (TorchScript), run.pb, report.md, report.html and\n"
       "report.json. Uses STORE/profile.pb when the training loop saved one,\n"
       "else profiles offline. Locks STORE (a second run exits 2). A killed\n"
       "run leaves DIR.partial, which the next run removes and redoes; DIR\n"
       "appears whole or not at all. The store is not modified.\n"
       "Exit 0: the tuned model passed the guard; 1: the guard kept the\n"
       "original (DIR then holds the original model).\n",
       {"store",
        "task",
        "variant",
        "data",
        "schema",
        "protected",
        "mined",
        "sliced",
        "test",
        "guard_fraction",
        "mine_inputs",
        "slice_inputs",
        "pairs",
        "guard_pairs",
        "lrs",
        "tune_epochs",
        "lr_search",
        "train_size",
        "validation_size",
        "test_size",
        "seed",
        "epoch",
        "out",
        "attacks",
        "epsilons",
        "attack_size",
        "threads",
        "progress"}},
      {"eval",
       "posttrain eval --model M --data ... [--attacks fgsm,bim,pgd,cw,jsma]\n"
       "               [--protected NAME] [--json]\n"
       "Clean accuracy, robust accuracy (adaptive; transfer too with\n"
       "--transfer_from) and, for tabular data, the fairness metrics of the\n"
       "test split (the split of --seed, as in training).\n",
       {"model", "data", "schema", "protected", "transfer_from", "attacks",
        "epsilons", "attack_size", "json", "predictions", "seed", "test_size",
        "threads"}},
      {"export",
       "posttrain export --model M --out FILE.safetensors|FILE.pt\n"
       "Writes a stored model as safetensors (the spec in its metadata) or as\n"
       "a TorchScript module that torch.jit.load runs.\n",
       {"model", "out"}},
      {"report",
       "posttrain report RUN_DIR\n"
       "Rewrites RUN_DIR's report.md, report.html and report.json from its\n"
       "run.pb.\n",
       {}},
  };
  return *commands;
}

void PrintFlags(const Command& c, FILE* out) {
  for (const char* name : c.flags) {
    const absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
    if (f == nullptr) continue;
    std::fprintf(out, "  --%s (default: \"%s\")\n      %s\n", name,
                 f->DefaultValue().c_str(), f->Help().c_str());
  }
}

int Usage(FILE* out, int code) {
  std::fprintf(out,
               "usage: posttrain history|improve|eval|export|report ...\n"
               "       posttrain SUBCOMMAND --help\n\n");
  for (const Command& c : Commands()) std::fprintf(out, "%s\n", c.usage);
  std::fprintf(out,
               "Exit status: 0 success; 1 the guard kept the original model "
               "(improve) or a damaged store (history verify); 2 bad usage or "
               "input; 3 internal error.\n");
  return code;
}

// Parses argv[first..] into the process's flags, accepting only those of
// `c`; the rest are positional. --help prints the subcommand's usage.
absl::StatusOr<std::vector<std::string>> ParseFlags(const Command& c, int argc,
                                                    char** argv, int first,
                                                    bool* help) {
  std::vector<std::string> positional;
  for (int i = first; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) positional.emplace_back(argv[i]);
      break;
    }
    if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) {
      positional.emplace_back(arg);
      continue;
    }
    if (arg == "help" || arg == "h") {
      *help = true;
      continue;
    }
    std::string name(arg), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto allowed = [&](const std::string& n) {
      return std::any_of(c.flags.begin(), c.flags.end(),
                         [&](const char* f) { return n == f; });
    };
    const absl::CommandLineFlag* flag = nullptr;
    if (allowed(name)) flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no") &&
        allowed(name.substr(2))) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      if (flag != nullptr && flag->IsOfType<bool>()) {
        name = name.substr(2);
        value = "false";
        has_value = true;
      } else {
        flag = nullptr;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " (posttrain ", c.name,
                       " --help lists its flags)"));
    }
    if (!has_value) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value"));
      }
    }
    std::string error;
    if (!absl::FindCommandLineFlag(name)->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", name, "='", value, "': ", error));
    }
  }
  return positional;
}

// ------------------------------------------------------------- test hook

// POSTTRAIN_CRASH_AT=STAGE[:N[:stop]] kills the process (SIGKILL; with
// "stop", stops it with SIGSTOP) at the N-th (1st by default) progress
// report of STAGE ("mining", "pairing", "slicing", "tuning", "evaluation")
// or at the point named "attack", "export" or "commit": the restart and
// locking tests of `improve` use it.
class CrashPoints : public ProgressSink {
 public:
  explicit CrashPoints(ProgressSink* next) : next_(next) {
    if (const char* at = std::getenv("POSTTRAIN_CRASH_AT")) {
      std::vector<std::string> p = absl::StrSplit(at, ':');
      stage_ = p[0];
      if (p.size() < 2 || !absl::SimpleAtoi(p[1], &n_)) n_ = 1;
      stop_ = p.size() > 2 && p[2] == "stop";
    }
  }
  void Update(const ProgressUpdate& u) override {
    Point(u.stage);
    if (next_ != nullptr) next_->Update(u);
  }
  void Point(absl::string_view stage) {
    if (stage_.empty() || stage != stage_) return;
    if (++seen_ >= n_) {
      std::fflush(nullptr);
      std::raise(stop_ ? SIGSTOP : SIGKILL);
    }
  }

 private:
  ProgressSink* next_;
  std::string stage_;
  int n_ = 1, seen_ = 0;
  bool stop_ = false;
};

// ---------------------------------------------------------------- models

struct LoadedModel {
  torch::nn::Sequential model{nullptr};
  pb::ModelSpec spec;
  std::string name;  // "STORE@EPOCH" or the file
  int64_t epoch = -1;
};

absl::StatusOr<torch::nn::Sequential> Build(const CliOptions& o,
                                            const pb::ModelSpec& spec) {
  if (o.model_factory) return o.model_factory(spec);
  return BuildSequential(spec);
}

// The newest epoch of the store (`training_only`: skipping the improved
// models the in-loop phase appended).
absl::StatusOr<int64_t> NewestEpoch(const HistoryStore& store,
                                    bool training_only) {
  int64_t newest = -1;
  for (const pb::EpochEntry& e : store.Epochs()) {
    if (training_only && e.metrics().contains(kPostTrainMetric)) continue;
    newest = e.epoch();
  }
  if (newest < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("store '", store.dir(), "' holds no ",
                     training_only ? "training " : "", "epoch"));
  }
  return newest;
}

absl::StatusOr<LoadedModel> FromStore(const CliOptions& o,
                                      const std::string& dir, int64_t epoch,
                                      bool training_only) {
  PT_ASSIGN_OR_RETURN(std::unique_ptr<HistoryStore> store,
                      HistoryStore::OpenReadOnly(dir));
  LoadedModel m;
  if (epoch < 0) {
    PT_ASSIGN_OR_RETURN(epoch, NewestEpoch(*store, training_only));
  }
  m.spec = store->model_spec();
  PT_ASSIGN_OR_RETURN(m.model, Build(o, m.spec));
  PT_RETURN_IF_ERROR(Annotate(store->LoadEpoch(epoch, *m.model),
                              absl::StrCat("store '", dir, "' epoch ", epoch)));
  m.epoch = epoch;
  m.name = absl::StrCat(dir, "@", epoch);
  return m;
}

absl::StatusOr<LoadedModel> FromSafetensors(const CliOptions& o,
                                            const std::string& path) {
  PT_ASSIGN_OR_RETURN(SafetensorsModel file, ReadSafetensors(path));
  LoadedModel m;
  m.spec = file.spec;
  PT_ASSIGN_OR_RETURN(m.model, Build(o, m.spec));
  PT_RETURN_IF_ERROR(Annotate(LoadModuleState(file.state, *m.model), path));
  m.name = path;
  return m;
}

// --model: STORE[@EPOCH], FILE.safetensors or a run directory.
absl::StatusOr<LoadedModel> LoadModel(const CliOptions& o,
                                      const std::string& ref,
                                      const std::string& flag) {
  namespace fs = std::filesystem;
  if (ref.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " is required"));
  }
  std::error_code ec;
  if (absl::EndsWith(ref, ".safetensors")) return FromSafetensors(o, ref);
  if (absl::EndsWith(ref, ".pt")) {
    PT_ASSIGN_OR_RETURN(SafetensorsModel file, ReadTorchScript(ref));
    LoadedModel m;
    m.spec = file.spec;
    PT_ASSIGN_OR_RETURN(m.model, Build(o, m.spec));
    PT_RETURN_IF_ERROR(Annotate(LoadModuleState(file.state, *m.model), ref));
    m.name = ref;
    return m;
  }
  if (fs::exists(fs::path(ref) / "model.safetensors", ec)) {
    return FromSafetensors(o, (fs::path(ref) / "model.safetensors").string());
  }
  std::string dir = ref;
  int64_t epoch = -1;
  if (size_t at = ref.rfind('@'); at != std::string::npos) {
    dir = ref.substr(0, at);
    if (!absl::SimpleAtoi(ref.substr(at + 1), &epoch) || epoch < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, "=", ref, ": '", ref.substr(at + 1),
                       "' is not an epoch number"));
    }
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(
        "--", flag, "=", ref,
        ": no such store directory, run directory or .safetensors file"));
  }
  return FromStore(o, dir, epoch, /*training_only=*/false);
}

// ------------------------------------------------------------------ data

// "IMAGES,LABELS" or a Fashion-MNIST directory's test files.
absl::StatusOr<ImageDataset> ReadImagePair(const std::string& spec,
                                           const std::string& flag,
                                           int64_t limit) {
  std::vector<std::string> parts = absl::StrSplit(spec, ',');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, "='", spec, "': give IMAGES,LABELS (two IDX files)"));
  }
  return ReadIdxDataset(parts[0], parts[1], limit);
}

bool IsPair(const std::string& s) { return s.find(',') != std::string::npos; }

struct ImageRoles {
  LabelledData mined, sliced;
  ImageDataset test;
  std::string data_name, test_name;
};

absl::StatusOr<ImageRoles> LoadImageRoles() {
  ImageRoles r;
  const std::string data = absl::GetFlag(FLAGS_data);
  const std::string mined = absl::GetFlag(FLAGS_mined),
                    sliced = absl::GetFlag(FLAGS_sliced),
                    test = absl::GetFlag(FLAGS_test);
  std::optional<FashionMnist> split;
  if (mined.empty() || sliced.empty() || test.empty()) {
    FashionMnistOptions fo;
    fo.dir = data.empty() ? kFashionMnistDir : data;
    if (IsPair(fo.dir)) {
      return absl::InvalidArgumentError(
          "--data: improve --task robustness takes a Fashion-MNIST "
          "directory, or --mined, --sliced and --test as IMAGES,LABELS");
    }
    fo.seed = absl::GetFlag(FLAGS_seed);
    fo.train_limit = absl::GetFlag(FLAGS_train_size);
    fo.validation_limit = absl::GetFlag(FLAGS_validation_size);
    fo.test_limit = absl::GetFlag(FLAGS_test_size);
    PT_ASSIGN_OR_RETURN(FashionMnist f, LoadFashionMnist(fo));
    split = std::move(f);
    r.data_name = fo.dir;
  }
  if (!mined.empty()) {
    PT_ASSIGN_OR_RETURN(ImageDataset d, ReadImagePair(mined, "mined", -1));
    r.mined = {d.images, d.labels};
  } else {
    r.mined = {split->validation.images, split->validation.labels};
  }
  if (!sliced.empty()) {
    PT_ASSIGN_OR_RETURN(ImageDataset d, ReadImagePair(sliced, "sliced", -1));
    r.sliced = {d.images, d.labels};
  } else {
    r.sliced = {split->train.images, split->train.labels};
  }
  if (!test.empty()) {
    PT_ASSIGN_OR_RETURN(
        r.test, ReadImagePair(test, "test", absl::GetFlag(FLAGS_test_size)));
    r.test_name = test;
  } else {
    r.test = split->test;
    r.test_name = absl::StrCat(r.data_name, " (test)");
  }
  return r;
}

absl::StatusOr<std::shared_ptr<TabularData>> LoadTabular() {
  const std::string schema_path = absl::GetFlag(FLAGS_schema);
  const std::string dir = absl::GetFlag(FLAGS_data);
  if (schema_path.empty() || dir.empty()) {
    return absl::InvalidArgumentError(
        "tabular data needs --schema FILE and --data DIR");
  }
  PT_ASSIGN_OR_RETURN(TabularSchema schema, ReadTabularSchema(schema_path));
  PT_ASSIGN_OR_RETURN(
      TabularRows rows,
      ReadTabularRows(schema, dir, absl::GetFlag(FLAGS_protected)));
  TabularOptions split;
  split.seed = absl::GetFlag(FLAGS_seed);
  PT_ASSIGN_OR_RETURN(TabularData data, EncodeTabular(schema, rows, split));
  return std::make_shared<TabularData>(std::move(data));
}

// --------------------------------------------------------------- eval

struct AttackPlan {
  std::string attack;
  double epsilon = 0;
};

absl::StatusOr<std::vector<AttackPlan>> ParseAttacks(bool images) {
  std::string list = absl::GetFlag(FLAGS_attacks);
  if (list == "default") list = images ? "fgsm,pgd" : "none";
  std::vector<AttackPlan> plans;
  if (list == "none" || list.empty()) return plans;
  std::vector<double> eps;
  for (absl::string_view e :
       absl::StrSplit(absl::GetFlag(FLAGS_epsilons), ',', absl::SkipEmpty())) {
    double v;
    if (!absl::SimpleAtod(e, &v) || !(v > 0) || v > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--epsilons: '", e, "' is not a radius in (0, 1]"));
    }
    eps.push_back(v);
  }
  for (absl::string_view a : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    if (!images) {
      return absl::InvalidArgumentError(
          absl::StrCat("--attacks=", list, ": attacks run on image data only"));
    }
    if (a == "fgsm" || a == "bim" || a == "pgd") {
      if (eps.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--epsilons: none given for ", a));
      }
      for (double e : eps) plans.push_back({std::string(a), e});
    } else if (a == "cw" || a == "jsma") {
      plans.push_back({std::string(a), 0});
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--attacks: unknown attack '", a, "' (fgsm, bim, pgd, cw, jsma)"));
    }
  }
  return plans;
}

int64_t Classes(const torch::nn::Sequential& m, const at::Tensor& x) {
  auto out = ForwardFirstInput(m, x, "the data");
  return out.ok() ? out->size(-1) : 0;
}

// The adversarial examples of `plan` crafted against `model`; JSMA's
// targets in `targets`.
absl::StatusOr<at::Tensor> Craft(const torch::nn::Sequential& model,
                                 const AttackPlan& plan, const at::Tensor& x,
                                 const at::Tensor& y, uint64_t seed,
                                 at::Tensor* targets) {
  if (plan.attack == "fgsm") {
    AttackOptions o;
    o.epsilon = plan.epsilon;
    return Fgsm(model, x, y, o);
  }
  if (plan.attack == "bim") {
    AttackOptions o = BimDefaults();
    o.epsilon = plan.epsilon;
    o.alpha = plan.epsilon / 10;
    return Bim(model, x, y, o);
  }
  if (plan.attack == "pgd") {
    AttackOptions o;
    o.epsilon = plan.epsilon;
    o.alpha = plan.epsilon / 10;
    o.seed = seed;
    return Pgd(model, x, y, o);
  }
  if (plan.attack == "cw") return CarliniWagnerL2(model, x, y);
  PT_ASSIGN_OR_RETURN(*targets, RandomTargets(y, Classes(model, x), seed));
  return Jsma(model, x, *targets);
}

pb::AttackFigure Figure(const AttackPlan& plan, const std::string& protocol,
                        const AttackReport& r) {
  pb::AttackFigure f;
  f.set_attack(plan.attack);
  f.set_epsilon(plan.epsilon);
  f.set_protocol(protocol);
  f.set_inputs(r.inputs);
  f.set_robust_accuracy(r.robust_accuracy);
  f.set_success_rate(r.success_rate);
  f.set_mean_l2(r.mean_l2);
  f.set_mean_linf(r.mean_linf);
  return f;
}

// Crafted examples against one source model, shared by the evaluations
// that transfer from it.
struct Crafted {
  at::Tensor adversarial, targets;
};
using CraftCache = std::map<std::string, Crafted>;

std::string PlanKey(const AttackPlan& p) {
  return absl::StrCat(p.attack, "/", p.epsilon);
}

// Accuracy on `data` and, for each plan, the adaptive figure (crafted
// against `model`) and, when `source` is set, the transfer figure (crafted
// against `source`; `cache` holds those). `source_is_model`: the two are
// one model, so both protocols give the same figure.
absl::StatusOr<pb::EvalResult> EvaluateImages(
    const torch::nn::Sequential& model, const ImageDataset& data,
    const std::vector<AttackPlan>& plans, const torch::nn::Sequential* source,
    bool source_is_model, CraftCache* cache, CrashPoints* crash) {
  const auto start = std::chrono::steady_clock::now();
  pb::EvalResult r;
  r.set_inputs(data.size());
  PT_ASSIGN_OR_RETURN(double acc, Accuracy(model, data.images, data.labels));
  r.set_accuracy(acc);
  const int64_t n = std::min(absl::GetFlag(FLAGS_attack_size), data.size());
  if (n <= 0 || plans.empty()) return r;
  const at::Tensor x = data.images.narrow(0, 0, n);
  const at::Tensor y = data.labels.narrow(0, 0, n);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  for (const AttackPlan& plan : plans) {
    if (crash != nullptr) crash->Point("attack");
    Crafted own;
    PT_ASSIGN_OR_RETURN(own.adversarial,
                        Craft(model, plan, x, y, seed, &own.targets));
    PT_ASSIGN_OR_RETURN(
        AttackReport a,
        EvaluateAttack(model, x, own.adversarial, y, own.targets));
    *r.add_attacks() = Figure(plan, "adaptive", a);
    if (source == nullptr) continue;
    const std::string key = PlanKey(plan);
    if (source_is_model) {
      (*cache)[key] = own;
      *r.add_attacks() = Figure(plan, "transfer", a);
      continue;
    }
    auto it = cache->find(key);
    if (it == cache->end()) {
      Crafted c;
      PT_ASSIGN_OR_RETURN(c.adversarial,
                          Craft(*source, plan, x, y, seed, &c.targets));
      it = cache->emplace(key, c).first;
    }
    PT_ASSIGN_OR_RETURN(AttackReport t,
                        EvaluateAttack(model, x, it->second.adversarial, y,
                                       it->second.targets));
    *r.add_attacks() = Figure(plan, "transfer", t);
  }
  r.set_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count());
  return r;
}

absl::StatusOr<at::Tensor> Predict(const torch::nn::Sequential& model,
                                   const at::Tensor& x) {
  at::Tensor pred;
  PT_RETURN_IF_ERROR(CallTorch("predicting", [&] {
    torch::NoGradGuard g;
    torch::nn::Sequential m = model;
    EvalModeGuard eval(*m);
    std::vector<at::Tensor> parts;
    for (int64_t b = 0; b < x.size(0); b += 1000) {
      parts.push_back(
          torch::nn::Sequential(model)
              ->forward(x.narrow(0, b, std::min<int64_t>(1000, x.size(0) - b)))
              .argmax(1));
    }
    pred = torch::cat(parts);
  }));
  return pred;
}

std::vector<int64_t> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.to(torch::kLong).contiguous().cpu();
  return std::vector<int64_t>(c.data_ptr<int64_t>(),
                              c.data_ptr<int64_t>() + c.numel());
}

absl::StatusOr<pb::EvalResult> EvaluateTabular(
    const torch::nn::Sequential& model, const TabularSplit& split,
    const std::string& protected_name) {
  pb::EvalResult r;
  r.set_inputs(split.size());
  PT_RETURN_IF_ERROR(
      ForwardFirstInput(model, split.x, "the test split").status());
  PT_ASSIGN_OR_RETURN(at::Tensor pred, Predict(model, split.x));
  PT_ASSIGN_OR_RETURN(FairnessMetrics f,
                      ComputeFairnessMetrics(ToVector(split.y), ToVector(pred),
                                             ToVector(split.a)));
  r.set_accuracy(f.accuracy);
  pb::FairnessFigures* o = r.mutable_fairness();
  o->set_protected_attribute(protected_name);
  o->set_accuracy(f.accuracy);
  o->set_balanced_accuracy(f.balanced_accuracy);
  o->set_spd(f.spd);
  o->set_di(f.di);
  o->set_eod(f.eod);
  o->set_aod(f.aod);
  o->set_aaod(f.aaod);
  return r;
}

std::string JsonOf(const google::protobuf::Message& m, bool pretty) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = pretty;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

void PrintEval(const pb::EvalResult& r) {
  std::printf("model %s\ndata %s: %lld inputs, accuracy %.4f\n",
              r.model().c_str(), r.data().c_str(),
              static_cast<long long>(r.inputs()), r.accuracy());
  if (!r.source().empty()) {
    std::printf("transfer examples crafted against %s\n", r.source().c_str());
  }
  if (!r.attacks().empty()) {
    std::printf("%-6s %6s %-9s %7s %8s %8s %8s\n", "attack", "eps", "protocol",
                "inputs", "robust", "success", "mean_l2");
    for (const pb::AttackFigure& a : r.attacks()) {
      std::printf("%-6s %6.3g %-9s %7lld %8.4f %8.4f %8.4f\n",
                  a.attack().c_str(), a.epsilon(), a.protocol().c_str(),
                  static_cast<long long>(a.inputs()), a.robust_accuracy(),
                  a.success_rate(), a.mean_l2());
    }
  }
  if (!r.fairness().protected_attribute().empty()) {
    const pb::FairnessFigures& f = r.fairness();
    std::printf(
        "fairness (%s; unprivileged - privileged): balanced accuracy %.4f, "
        "SPD %.4f, DI %.4f, EOD %.4f, AOD %.4f, AAOD %.4f\n",
        f.protected_attribute().c_str(), f.balanced_accuracy(), f.spd(), f.di(),
        f.eod(), f.aod(), f.aaod());
  }
}

int RunEval(const CliOptions& o) {
  auto body = [&]() -> absl::Status {
    if (absl::GetFlag(FLAGS_threads) < 1) {
      return absl::InvalidArgumentError("--threads must be >= 1");
    }
    torch::set_num_threads(absl::GetFlag(FLAGS_threads));
    PT_ASSIGN_OR_RETURN(LoadedModel m,
                        LoadModel(o, absl::GetFlag(FLAGS_model), "model"));
    std::optional<LoadedModel> source;
    if (!absl::GetFlag(FLAGS_transfer_from).empty()) {
      PT_ASSIGN_OR_RETURN(
          source,
          LoadModel(o, absl::GetFlag(FLAGS_transfer_from), "transfer_from"));
    }
    const bool tabular = !absl::GetFlag(FLAGS_schema).empty();
    if (tabular && source.has_value()) {
      return absl::InvalidArgumentError(
          "--transfer_from needs image data (attacks run on images only)");
    }
    if (!tabular && !absl::GetFlag(FLAGS_protected).empty()) {
      return absl::InvalidArgumentError(
          "--protected needs tabular data (--schema and --data)");
    }
    PT_ASSIGN_OR_RETURN(std::vector<AttackPlan> plans, ParseAttacks(!tabular));
    pb::EvalResult r;
    at::Tensor inputs;
    if (tabular) {
      PT_ASSIGN_OR_RETURN(std::shared_ptr<TabularData> data, LoadTabular());
      PT_ASSIGN_OR_RETURN(
          r, EvaluateTabular(m.model, data->test, data->protected_name));
      r.set_data(absl::StrCat(absl::GetFlag(FLAGS_data), " (", data->name,
                              " test split, seed ", absl::GetFlag(FLAGS_seed),
                              ")"));
      inputs = data->test.x;
    } else {
      const std::string d = absl::GetFlag(FLAGS_data);
      if (d.empty()) return absl::InvalidArgumentError("--data is required");
      ImageDataset data;
      if (IsPair(d)) {
        PT_ASSIGN_OR_RETURN(
            data, ReadImagePair(d, "data", absl::GetFlag(FLAGS_test_size)));
      } else {
        FashionMnistOptions fo;
        fo.dir = d;
        fo.train_limit = 1;
        fo.validation_limit = 1;
        fo.test_limit = absl::GetFlag(FLAGS_test_size);
        PT_ASSIGN_OR_RETURN(FashionMnist f, LoadFashionMnist(fo));
        data = f.test;
      }
      PT_RETURN_IF_ERROR(
          ForwardFirstInput(m.model, data.images, absl::StrCat("--data=", d))
              .status());
      CraftCache cache;
      PT_ASSIGN_OR_RETURN(r, EvaluateImages(m.model, data, plans,
                                            source ? &source->model : nullptr,
                                            false, &cache, nullptr));
      r.set_data(d);
      inputs = data.images;
    }
    r.set_model(m.name);
    if (source) r.set_source(source->name);
    const std::string pred_path = absl::GetFlag(FLAGS_predictions);
    if (!pred_path.empty()) {
      PT_ASSIGN_OR_RETURN(at::Tensor pred, Predict(m.model, inputs));
      std::string text;
      for (int64_t v : ToVector(pred)) absl::StrAppend(&text, v, "\n");
      PT_RETURN_IF_ERROR(
          WriteFileAtomically(Env::Default(), pred_path, {text}, false, false));
    }
    if (absl::GetFlag(FLAGS_json)) {
      std::printf("%s\n", JsonOf(r, true).c_str());
    } else {
      PrintEval(r);
    }
    return absl::OkStatus();
  };
  const absl::Status s = body();
  return s.ok() ? kExitOk : Fail("eval", s);
}

// ---------------------------------------------------------------- export

int RunExport(const CliOptions& o) {
  auto body = [&]() -> absl::Status {
    const std::string out = absl::GetFlag(FLAGS_out);
    if (out.empty()) return absl::InvalidArgumentError("--out is required");
    PT_ASSIGN_OR_RETURN(LoadedModel m,
                        LoadModel(o, absl::GetFlag(FLAGS_model), "model"));
    PT_ASSIGN_OR_RETURN(NamedTensors state, CopyModuleState(*m.model));
    if (absl::EndsWith(out, ".safetensors")) {
      PT_RETURN_IF_ERROR(WriteSafetensors(out, m.spec, state));
    } else if (absl::EndsWith(out, ".pt")) {
      PT_RETURN_IF_ERROR(WriteTorchScript(out, m.spec, state));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--out=", out, ": name a .safetensors or a .pt file"));
    }
    std::printf("wrote %s (%s)\n", out.c_str(), m.name.c_str());
    return absl::OkStatus();
  };
  const absl::Status s = body();
  return s.ok() ? kExitOk : Fail("export", s);
}

// --------------------------------------------------------------- history

const char* CodecName(pb::Codec c) {
  switch (c) {
    case pb::CODEC_RAW:
      return "raw";
    case pb::CODEC_ZSTD:
      return "zstd";
    case pb::CODEC_DELTA:
      return "delta";
    case pb::CODEC_LOSSY:
      return "lossy";
    default:
      return "?";
  }
}

std::string Metrics(const pb::EpochEntry& e) {
  std::vector<std::string> metrics;
  for (const auto& [k, v] : e.metrics()) {
    metrics.push_back(absl::StrCat(k, "=", v));
  }
  std::sort(metrics.begin(), metrics.end());
  return absl::StrJoin(metrics, " ");
}

std::string Utc(double t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S",
                          absl::FromUnixSeconds(static_cast<int64_t>(t)),
                          absl::UTCTimeZone());
}

int List(const HistoryStore& store) {
  const pb::Manifest m = store.manifest();
  std::printf(
      "store %s: %d layers, codec %s, keyframe every %u, %lld epochs "
      "appended\n",
      store.dir().c_str(), m.model_spec().layers_size(), CodecName(m.codec()),
      m.keyframe_interval(), static_cast<long long>(m.epochs_appended()));
  for (const auto& l : m.model_spec().layers()) {
    std::printf("  layer %-6s %s\n", l.name().c_str(), LayerSummary(l).c_str());
  }
  std::printf("%6s %8s %10s %6s %5s  %-20s %s\n", "epoch", "step", "bytes",
              "codec", "base", "time (UTC)", "metrics");
  for (const auto& e : store.Epochs()) {
    std::printf(
        "%6lld %8lld %10llu %6s %5s  %-20s %s\n",
        static_cast<long long>(e.epoch()), static_cast<long long>(e.step()),
        static_cast<unsigned long long>(e.blob_size()), CodecName(e.codec()),
        e.base_epoch() < 0 ? "-" : std::to_string(e.base_epoch()).c_str(),
        Utc(e.wall_time()).c_str(), Metrics(e).c_str());
  }
  return kExitOk;
}

absl::Status Show(const HistoryStore& store, int64_t epoch) {
  if (epoch < 0) {
    PT_ASSIGN_OR_RETURN(epoch, NewestEpoch(store, false));
  }
  const pb::EpochEntry* entry = nullptr;
  const std::vector<pb::EpochEntry> epochs = store.Epochs();
  for (const auto& e : epochs) {
    if (e.epoch() == epoch) entry = &e;
  }
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("store '", store.dir(),
                                            "' has no readable epoch ", epoch));
  }
  PT_ASSIGN_OR_RETURN(NamedTensors state, store.ReadEpoch(epoch));
  std::printf(
      "epoch %lld of %s\n  step %lld, written %s UTC, seed %llu\n  codec %s, "
      "%s, blob %s: %llu bytes (%llu raw, %.2fx)\n",
      static_cast<long long>(epoch), store.dir().c_str(),
      static_cast<long long>(entry->step()), Utc(entry->wall_time()).c_str(),
      static_cast<unsigned long long>(entry->seed()), CodecName(entry->codec()),
      entry->base_epoch() < 0
          ? "keyframe"
          : absl::StrCat("delta on epoch ", entry->base_epoch()).c_str(),
      entry->blob_file().c_str(),
      static_cast<unsigned long long>(entry->blob_size()),
      static_cast<unsigned long long>(entry->raw_bytes()),
      entry->blob_size() ? static_cast<double>(entry->raw_bytes()) /
                               static_cast<double>(entry->blob_size())
                         : 0.0);
  if (entry->codec() == pb::CODEC_LOSSY) {
    std::printf("  lossy: largest error %.3g\n", entry->max_abs_error());
  }
  std::printf("  metrics: %s\n", Metrics(*entry).c_str());
  std::printf("  %-28s %-8s %-16s %10s %12s %12s %12s\n", "tensor", "dtype",
              "shape", "elements", "min", "max", "mean");
  absl::Status status;
  PT_RETURN_IF_ERROR(CallTorch("describing the tensors", [&] {
    for (const NamedTensor& t : state) {
      const at::Tensor d = t.tensor.to(torch::kDouble);
      const bool any = t.tensor.numel() > 0;
      std::printf("  %-28s %-8s %-16s %10lld %12.5g %12.5g %12.5g\n",
                  t.name.c_str(), std::string(t.tensor.dtype().name()).c_str(),
                  absl::StrJoin(t.tensor.sizes(), "x").c_str(),
                  static_cast<long long>(t.tensor.numel()),
                  any ? d.min().item<double>() : 0.0,
                  any ? d.max().item<double>() : 0.0,
                  any ? d.mean().item<double>() : 0.0);
    }
  }));
  return status;
}

int RunHistory(const std::vector<std::string>& args) {
  if (args.size() < 2 || args.size() > 3) {
    std::fprintf(stderr,
                 "posttrain history: usage: posttrain history "
                 "ls|show|verify|gc STORE [EPOCH]\n");
    return kExitBadInput;
  }
  const std::string& cmd = args[0];
  const std::string& dir = args[1];
  if (cmd != "ls" && cmd != "show" && cmd != "verify" && cmd != "gc") {
    std::fprintf(stderr,
                 "posttrain history: unknown command '%s' (ls, show, verify, "
                 "gc)\n",
                 cmd.c_str());
    return kExitBadInput;
  }
  if (args.size() == 3 && cmd != "show") {
    std::fprintf(stderr, "posttrain history %s: takes only STORE\n",
                 cmd.c_str());
    return kExitBadInput;
  }
  auto store = HistoryStore::OpenReadOnly(dir);
  if (!store.ok()) return Fail("history " + cmd, store.status());
  if (cmd == "gc") {
    // Opening for writing removes leftovers; the architecture is the store's.
    HistoryOptions options;
    auto writer = HistoryStore::Open(dir, options, (*store)->model_spec());
    if (!writer.ok()) return Fail("history gc", writer.status());
    std::printf("ok: %s\n", dir.c_str());
    return kExitOk;
  }
  if (cmd == "ls") return List(**store);
  if (cmd == "show") {
    int64_t epoch = -1;
    if (args.size() == 3 && (!absl::SimpleAtoi(args[2], &epoch) || epoch < 0)) {
      std::fprintf(stderr,
                   "posttrain history show: '%s' is not an epoch number\n",
                   args[2].c_str());
      return kExitBadInput;
    }
    const absl::Status s = Show(**store, epoch);
    return s.ok() ? kExitOk : Fail("history show", s);
  }
  if (absl::Status s = (*store)->Verify(); !s.ok()) {
    std::fprintf(stderr, "posttrain history verify: %s\n",
                 std::string(s.message()).c_str());
    return kExitGuardRejected;  // 1: damaged
  }
  std::printf("ok: %zu epochs verified in %s\n", (*store)->Epochs().size(),
              dir.c_str());
  return kExitOk;
}

// --------------------------------------------------------------- improve

// An exclusive lock on STORE/IMPROVE.LOCK, naming its holder inside; the
// kernel releases it when the process dies, so a killed run leaves no stale
// lock.
class ImproveLock {
 public:
  // `path`: the lock file; `what`: what it guards, for the error.
  static absl::StatusOr<std::unique_ptr<ImproveLock>> Take(
      const std::string& path, const std::string& what) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create the lock ", path, ": ", strerror(errno)));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      char buf[512] = {0};
      const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
      ::close(fd);
      std::string holder = n > 0 ? std::string(buf, n) : "an unknown process";
      while (!holder.empty() && holder.back() == '\n') holder.pop_back();
      return absl::UnavailableError(absl::StrCat(
          what, " is locked by another posttrain improve: ", holder, " (", path,
          ")"));
    }
    char host[256] = "?";
    ::gethostname(host, sizeof(host) - 1);
    const std::string who =
        absl::StrCat("pid ", ::getpid(), " on ", host, " since ",
                     absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::Now(),
                                      absl::UTCTimeZone()),
                     "\n");
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, who.data(), who.size(), 0) !=
                                       static_cast<ssize_t>(who.size())) {
      // The lock holds; only its description is missing.
    }
    return std::unique_ptr<ImproveLock>(new ImproveLock(fd));
  }
  ~ImproveLock() { ::close(fd_); }

 private:
  explicit ImproveLock(int fd) : fd_(fd) {}
  int fd_;
};

// The flags that determine the result, in a fixed order: a rerun into a
// finished run directory must match them.
std::string Invocation() {
  std::vector<std::string> parts;
  for (const char* name : Commands()[1].flags) {
    const std::string n = name;
    if (n == "out" || n == "progress") continue;
    parts.push_back(
        absl::StrCat(n, "=", absl::FindCommandLineFlag(n)->CurrentValue()));
  }
  return absl::StrJoin(parts, " ");
}

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t)
      .count();
}

void AddSeconds(pb::RunReport* run, const std::string& phase, double s) {
  pb::PhaseSeconds* p = run->add_seconds();
  p->set_phase(phase);
  p->set_seconds(s);
}

absl::StatusOr<std::vector<double>> ParseLrs() {
  std::vector<double> lrs;
  for (absl::string_view s :
       absl::StrSplit(absl::GetFlag(FLAGS_lrs), ',', absl::SkipEmpty())) {
    double v;
    if (!absl::SimpleAtod(s, &v) || !(v > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--lrs: '", s, "' is not a positive learning rate"));
    }
    lrs.push_back(v);
  }
  return lrs;
}

absl::Status ApplyTunerFlags(PipelineOptions* p) {
  PT_ASSIGN_OR_RETURN(std::vector<double> lrs, ParseLrs());
  if (!lrs.empty()) p->tuner.learning_rates = lrs;
  if (absl::GetFlag(FLAGS_tune_epochs) < 0) {
    return absl::InvalidArgumentError("--tune_epochs must be >= 0");
  }
  if (absl::GetFlag(FLAGS_tune_epochs) > 0) {
    p->tuner.max_epochs = absl::GetFlag(FLAGS_tune_epochs);
  }
  const std::string search = absl::GetFlag(FLAGS_lr_search);
  if (search == "halving") {
    p->tuner.search = TunerOptions::Search::kSuccessiveHalving;
  } else if (search != "grid") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--lr_search: '", search, "' is neither grid nor halving"));
  }
  if (absl::GetFlag(FLAGS_slice_inputs) < 0) {
    return absl::InvalidArgumentError("--slice_inputs must be >= 0");
  }
  p->max_slice_inputs = absl::GetFlag(FLAGS_slice_inputs);
  p->seed = absl::GetFlag(FLAGS_seed);
  return absl::OkStatus();
}

absl::Status Fsync(const std::string& dir) {
  return Env::Default()->SyncDir(dir);
}

// The body of improve: returns the exit code (0 or 1) or an error.
absl::StatusOr<int> Improve(const CliOptions& o) {
  namespace fs = std::filesystem;
  const std::string store_dir = absl::GetFlag(FLAGS_store);
  const std::string out = absl::GetFlag(FLAGS_out);
  const std::string task_name = absl::GetFlag(FLAGS_task);
  if (store_dir.empty())
    return absl::InvalidArgumentError("--store is required");
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  if (task_name != "robustness" && task_name != "fairness") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--task='", task_name, "': give robustness (Dare) or fairness (FMT)"));
  }
  if (absl::GetFlag(FLAGS_threads) < 1) {
    return absl::InvalidArgumentError("--threads must be >= 1");
  }
  const std::string invocation = Invocation();
  std::error_code ec;
  if (!fs::is_directory(store_dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("--store=", store_dir, ": no such directory"));
  }
  // Both locks before anything is read or written: the store's (one
  // improve per store) and the run directory's (two stores, one --out).
  PT_ASSIGN_OR_RETURN(
      std::unique_ptr<ImproveLock> store_lock,
      ImproveLock::Take(JoinPath(store_dir, "IMPROVE.LOCK"),
                        absl::StrCat("store '", store_dir, "'")));
  const std::string parent = fs::path(out).parent_path().string();
  if (!parent.empty()) PT_RETURN_IF_ERROR(Env::Default()->CreateDirs(parent));
  PT_ASSIGN_OR_RETURN(
      std::unique_ptr<ImproveLock> out_lock,
      ImproveLock::Take(out + ".lock",
                        absl::StrCat("run directory '", out, "'")));
  // A finished run of the same flags is not redone.
  if (fs::exists(JoinPath(out, "run.pb"), ec)) {
    PT_ASSIGN_OR_RETURN(pb::RunReport done, ReadRunReport(out));
    if (done.invocation() != invocation) {
      return absl::AlreadyExistsError(
          absl::StrCat("--out=", out, " holds a finished run of other flags (",
                       done.invocation(), "); choose another --out"));
    }
    std::printf("%s: finished earlier with the same flags (exit %d)\n",
                out.c_str(), done.exit_code());
    return done.exit_code();
  }
  if (fs::exists(out, ec) && !fs::is_empty(out, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "--out=", out,
        " exists and is not a finished run directory; refusing to write "
        "into it"));
  }
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  ProgressBar bar;
  CrashPoints crash(absl::GetFlag(FLAGS_progress) ? &bar : nullptr);

  pb::RunReport run;
  run.set_version(1);
  run.set_invocation(invocation);
  run.set_store(store_dir);
  run.set_seed(absl::GetFlag(FLAGS_seed));

  auto t = std::chrono::steady_clock::now();
  PT_ASSIGN_OR_RETURN(LoadedModel m,
                      FromStore(o, store_dir, absl::GetFlag(FLAGS_epoch),
                                /*training_only=*/true));
  run.set_epoch(m.epoch);
  PT_ASSIGN_OR_RETURN(std::unique_ptr<HistoryStore> store,
                      HistoryStore::OpenReadOnly(store_dir));
  for (const pb::EpochEntry& e : store->Epochs()) {
    pb::EpochFigures* f = run.add_history();
    f->set_epoch(e.epoch());
    f->set_posttrain(e.metrics().contains(kPostTrainMetric));
    for (const auto& [k, v] : e.metrics()) {
      if (k != kPostTrainMetric) (*f->mutable_metrics())[k] = v;
    }
  }
  // The online profile saved beside the history, when there is one.
  std::optional<Profile> profile;
  const std::string profile_path = JoinPath(store_dir, "profile.pb");
  if (fs::exists(profile_path, ec)) {
    PT_ASSIGN_OR_RETURN(std::string bytes,
                        Env::Default()->ReadFile(profile_path, 1u << 30));
    pb::Profile proto;
    if (!proto.ParseFromString(bytes)) {
      return absl::DataLossError(
          absl::StrCat(profile_path, ": not a profile (pb::Profile)"));
    }
    absl::StatusOr<Profile> p = Profile::FromProto(proto);
    if (!p.ok()) return Annotate(p.status(), profile_path);
    profile = std::move(*p);
  }

  // The task, with the data of each role.
  std::shared_ptr<PostTrainTask> task;
  std::optional<ImageRoles> images;
  std::shared_ptr<TabularData> tabular;
  std::string variant = absl::GetFlag(FLAGS_variant);
  if (task_name == "robustness") {
    PT_ASSIGN_OR_RETURN(ImageRoles r, LoadImageRoles());
    images = std::move(r);
    DareOptions dare;
    dare.variant = variant.empty() ? "dare" : variant;
    dare.validation = images->mined;
    dare.slice_data = images->sliced;
    dare.guard_fraction = absl::GetFlag(FLAGS_guard_fraction);
    dare.max_mine_inputs = absl::GetFlag(FLAGS_mine_inputs);
    if (dare.max_mine_inputs < 0) {
      return absl::InvalidArgumentError("--mine_inputs must be >= 0");
    }
    PT_RETURN_IF_ERROR(ApplyTunerFlags(&dare.pipeline));
    variant = dare.variant;
    PT_ASSIGN_OR_RETURN(task, MakeDareTask(dare));
  } else {
    PT_ASSIGN_OR_RETURN(tabular, LoadTabular());
    FmtOptions fmt;
    fmt.variant = variant.empty() ? "fmt" : variant;
    fmt.data = tabular;
    fmt.pairs = absl::GetFlag(FLAGS_pairs);
    fmt.guard_pairs = absl::GetFlag(FLAGS_guard_pairs);
    PT_RETURN_IF_ERROR(ApplyTunerFlags(&fmt.pipeline));
    variant = fmt.variant;
    PT_ASSIGN_OR_RETURN(task, MakeFmtTask(fmt));
  }
  run.set_task(variant);
  PT_ASSIGN_OR_RETURN(std::vector<AttackPlan> plans,
                      ParseAttacks(images.has_value()));
  PT_RETURN_IF_ERROR(task->Check(m.model));
  PT_RETURN_IF_ERROR(CheckPipeline(m.model, *task));
  // The saved profile is of the training run's last epochs: it serves the
  // newest training epoch only.
  PT_ASSIGN_OR_RETURN(int64_t newest, NewestEpoch(*store, true));
  const bool slices = task->settings().slice && task->settings().transform;
  std::string offline_reason;
  if (!profile.has_value()) {
    offline_reason = "no profile.pb beside the history";
  } else if (m.epoch != newest) {
    offline_reason = absl::StrCat("profile.pb is of the newest training epoch ",
                                  newest, ", not of epoch ", m.epoch);
  }
  const bool use_profile = slices && offline_reason.empty();
  if (slices && !offline_reason.empty()) {
    std::printf("posttrain improve: %s; slicing profiles the model offline\n",
                offline_reason.c_str());
  }
  // The model and the test data must fit before the phase runs.
  if (images.has_value()) {
    PT_ASSIGN_OR_RETURN(
        at::Tensor first,
        ForwardFirstInput(m.model, images->test.images,
                          absl::StrCat("the test data ", images->test_name)));
    const int64_t top = images->test.labels.max().item<int64_t>();
    if (top >= first.size(-1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the test data ", images->test_name, " has class label ",
                       top, " but the model has ", first.size(-1), " outputs"));
    }
  } else {
    PT_RETURN_IF_ERROR(
        ForwardFirstInput(m.model, tabular->test.x, "the test split").status());
  }
  AddSeconds(&run, "load", Since(t));

  // The original, kept for the before/after evaluation.
  PT_ASSIGN_OR_RETURN(torch::nn::Sequential original, CopyModel(m.model));

  // Parts of an interrupted run are removed: the run restarts cleanly.
  const std::string partial = out + ".partial";
  if (fs::exists(partial, ec)) {
    std::printf(
        "posttrain improve: removing %s, left by an interrupted run; "
        "starting again\n",
        partial.c_str());
    fs::remove_all(partial, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot remove ", partial, ": ", ec.message()));
    }
  }
  PT_RETURN_IF_ERROR(Env::Default()->CreateDirs(partial));
  // A run that fails (rather than being killed) leaves nothing behind.
  struct RemoveOnError {
    std::string dir;
    bool armed = true;
    ~RemoveOnError() {
      std::error_code ignored;
      if (armed) std::filesystem::remove_all(dir, ignored);
    }
  } cleanup{partial};

  TaskContext ctx;
  ctx.model = m.model;
  ctx.history = store.get();
  ctx.profile = use_profile ? &*profile : nullptr;
  ctx.progress = &crash;
  PT_ASSIGN_OR_RETURN(PipelineResult r, RunPipeline(*task, ctx));
  if (!slices) {
    run.set_profile("none (the variant does not slice)");
  } else if (r.profile_online) {
    run.set_profile(absl::StrCat("online (", profile_path, ")"));
  } else {
    run.set_profile(absl::StrCat("offline (",
                                 offline_reason.empty()
                                     ? "the saved profile was not usable"
                                     : offline_reason,
                                 ")"));
  }
  AddSeconds(&run, "augment", r.augment_seconds);
  AddSeconds(&run, "slice", r.slice_seconds);
  AddSeconds(&run, "tune", r.tune_seconds);
  run.set_accepted(r.tune.accepted);
  run.set_reason(r.tune.reason);
  run.set_guard_metric(r.guard_metric);
  run.set_guard_before(r.tune.guard_accuracy_before);
  run.set_guard_after(r.tune.guard_accuracy_after);
  run.set_lr(r.tune.lr);
  run.set_best_epoch(r.tune.best_epoch);
  run.set_epochs_run(r.tune.epochs_run);
  for (const LearningRateTrial& tr : r.tune.trials) {
    pb::LearningRateFigure* f = run.add_trials();
    f->set_lr(tr.lr);
    f->set_best_epoch(tr.best_epoch);
    f->set_best_validation_loss(tr.best_validation_loss);
    f->set_guard(tr.guard_accuracy);
    f->set_passes_guard(tr.passes_guard);
    f->set_epochs(tr.epochs);
    f->set_eliminated(tr.eliminated);
  }
  for (const auto& [k, v] : r.augmentation.figures) {
    (*run.mutable_augmentation())[k] = v;
  }
  PT_RETURN_IF_ERROR(CallTorch("key synapse shares", [&] {
    for (size_t c = 0; c < r.slices.size(); ++c) {
      for (const LayerSlice& l : r.slices[c].layers) {
        pb::KeySynapseShare* k = run.add_key_synapses();
        k->set_layer(l.layer);
        k->set_criterion(static_cast<int32_t>(c));
        k->set_share(l.synapse_mask.to(torch::kDouble).mean().item<double>());
      }
    }
  }));
  run.set_settings_json(absl::StrFormat(
      "{\"variant\": \"%s\", \"q\": %g, \"p\": %d, \"slice\": %s, "
      "\"transform\": %s, \"learning_rates\": [%s], \"max_epochs\": %d, "
      "\"lr_search\": \"%s\", \"max_slice_inputs\": %d, \"seed\": %d}",
      variant, r.settings.slicer.q, r.settings.tuner.p,
      r.settings.slice ? "true" : "false",
      r.settings.transform ? "true" : "false",
      absl::StrJoin(r.settings.tuner.learning_rates, ", "),
      r.settings.tuner.max_epochs,
      r.settings.tuner.search == TunerOptions::Search::kGrid
          ? "grid"
          : "successive_halving",
      r.settings.max_slice_inputs, r.settings.seed));

  // Before and after, on the test data.
  t = std::chrono::steady_clock::now();
  if (images.has_value()) {
    CraftCache cache;
    PT_ASSIGN_OR_RETURN(pb::EvalResult before,
                        EvaluateImages(original, images->test, plans, &original,
                                       true, &cache, &crash));
    PT_ASSIGN_OR_RETURN(pb::EvalResult after,
                        EvaluateImages(m.model, images->test, plans, &original,
                                       false, &cache, &crash));
    before.set_data(images->test_name);
    after.set_data(images->test_name);
    *run.mutable_before() = before;
    *run.mutable_after() = after;
  } else {
    PT_ASSIGN_OR_RETURN(
        *run.mutable_before(),
        EvaluateTabular(original, tabular->test, tabular->protected_name));
    PT_ASSIGN_OR_RETURN(
        *run.mutable_after(),
        EvaluateTabular(m.model, tabular->test, tabular->protected_name));
    const std::string d = absl::StrCat(absl::GetFlag(FLAGS_data), " (",
                                       tabular->name, " test split)");
    run.mutable_before()->set_data(d);
    run.mutable_after()->set_data(d);
  }
  run.mutable_before()->set_model(absl::StrCat(m.name, " (original)"));
  run.mutable_after()->set_model(absl::StrCat(
      "model.safetensors (", r.tune.accepted ? "tuned" : "original kept", ")"));
  run.mutable_after()->set_source(m.name);
  AddSeconds(&run, "evaluate", Since(t));

  // The model (tuned, or the original when the guard rejected it).
  t = std::chrono::steady_clock::now();
  crash.Point("export");
  PT_ASSIGN_OR_RETURN(NamedTensors state, CopyModuleState(*m.model));
  PT_RETURN_IF_ERROR(
      WriteSafetensors(JoinPath(partial, "model.safetensors"), m.spec, state));
  // A model the spec-based TorchScript cannot express (a user's factory)
  // still gets its safetensors file.
  const absl::Status script =
      WriteTorchScript(JoinPath(partial, "model.pt"), m.spec, state);
  if (!script.ok() && script.code() != absl::StatusCode::kInvalidArgument) {
    return script;
  }
  if (!script.ok()) {
    std::printf("posttrain improve: no model.pt: %s\n",
                std::string(script.message()).c_str());
  }
  AddSeconds(&run, "export", Since(t));
  run.set_exit_code(r.tune.accepted ? kExitOk : kExitGuardRejected);
  for (const char* f : {"model.safetensors", "model.pt", "run.pb", "report.md",
                        "report.html", "report.json"}) {
    if (!script.ok() && std::string(f) == "model.pt") continue;
    run.add_files(f);
  }
  PT_RETURN_IF_ERROR(WriteReports(run, partial));
  std::string bytes;
  run.SerializeToString(&bytes);
  PT_RETURN_IF_ERROR(WriteFileAtomically(
      Env::Default(), JoinPath(partial, "run.pb"), {bytes}, true, false));
  PT_RETURN_IF_ERROR(Fsync(partial));
  crash.Point("commit");
  // Commit: the whole directory appears at once.
  if (fs::exists(out, ec)) fs::remove(out, ec);  // empty (checked above)
  PT_RETURN_IF_ERROR(Env::Default()->RenameFile(partial, out));
  cleanup.armed = false;
  PT_RETURN_IF_ERROR(Fsync(parent.empty() ? "." : parent));

  std::printf("%s\n", ReportMarkdown(run).c_str());
  std::printf("wrote %s\n", out.c_str());
  return run.exit_code();
}

int RunImprove(const CliOptions& o) {
  absl::StatusOr<int> code = Improve(o);
  return code.ok() ? *code : Fail("improve", code.status());
}

int RunReport(const std::vector<std::string>& args) {
  if (args.size() != 1) {
    std::fprintf(stderr, "posttrain report: usage: posttrain report RUN_DIR\n");
    return kExitBadInput;
  }
  absl::StatusOr<pb::RunReport> run = ReadRunReport(args[0]);
  if (!run.ok()) return Fail("report", run.status());
  if (absl::Status s = WriteReports(*run, args[0]); !s.ok()) {
    return Fail("report", s);
  }
  std::printf("wrote %s/report.md, report.html and report.json\n",
              args[0].c_str());
  return kExitOk;
}

}  // namespace

int PosttrainMain(int argc, char** argv, const CliOptions& options) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "posttrain: no subcommand (history, improve, eval, export, "
                 "report; posttrain --help)\n");
    return kExitBadInput;
  }
  const std::string sub = argv[1];
  if (sub == "help" || sub == "--help" || sub == "-h") {
    if (argc > 2) {
      for (const Command& c : Commands()) {
        if (argv[2] == std::string(c.name)) {
          std::printf("usage: %s", c.usage);
          PrintFlags(c, stdout);
          return kExitOk;
        }
      }
    }
    return Usage(stdout, kExitOk);
  }
  const Command* command = nullptr;
  for (const Command& c : Commands()) {
    if (sub == c.name) command = &c;
  }
  if (command == nullptr) {
    std::fprintf(stderr,
                 "posttrain: unknown subcommand '%s' (history, improve, eval, "
                 "export, report; posttrain --help)\n",
                 sub.c_str());
    return kExitBadInput;
  }
  bool help = false;
  absl::StatusOr<std::vector<std::string>> args =
      ParseFlags(*command, argc, argv, 2, &help);
  if (help) {
    std::printf("usage: %s", command->usage);
    if (!command->flags.empty()) std::printf("flags:\n");
    PrintFlags(*command, stdout);
    return kExitOk;
  }
  if (!args.ok()) return Fail(sub, args.status());
  try {
    if (sub == "history") return RunHistory(*args);
    if (sub == "report") return RunReport(*args);
    if (!args->empty()) {
      std::fprintf(stderr,
                   "posttrain %s: unexpected argument '%s' (flags are "
                   "--name=value)\n",
                   sub.c_str(), (*args)[0].c_str());
      return kExitBadInput;
    }
    if (sub == "improve") return RunImprove(options);
    if (sub == "eval") return RunEval(options);
    return RunExport(options);
  } catch (...) {
    // Never reached by design (torch calls go through CallTorch); one line
    // without the C++ backtrace a c10::Error carries.
    const absl::Status s = StatusFromCurrentException("internal error");
    std::string msg(s.message());
    msg = msg.substr(0, msg.find('\n'));
    std::fprintf(stderr, "posttrain %s: %s\n", sub.c_str(), msg.c_str());
    return kExitInternal;
  }
}

}  // namespace posttrain

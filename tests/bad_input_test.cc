// The bad-input matrix: every way a user's input can be wrong, end to end
// through the public APIs. Each case asserts (a) the status code, (b) that
// the message names the problem (the file, layer, tensor, epoch, column or
// setting), and (c) where a store or a file exists, that nothing already
// stored changed (a fingerprint of every file name and its bytes).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/model_spec.h"
#include "common/model_view.h"
#include "common/module_state.h"
#include "common/sequential_block.h"
#include "common/status.h"
#include "fairness/tabular.h"
#include "fairness/tabular_schema.h"
#include "history/codec.h"
#include "history/fault_injection_env.h"
#include "history/file_format.h"
#include "history/store.h"
#include "hooks/history_recorder.h"
#include "hooks/post_trainer.h"
#include "robustness/attacks.h"
#include "robustness/idx.h"
#include "slicer/profile.h"
#include "slicer/slicer.h"
#include "tests/test_util.h"
#include "tuner/masked_tuner.h"
#include "tuner/pipeline.h"
#include "tuner/regression_view.h"
#include "tuner/task.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;
using absl::StatusCode;

// ---- The matrix's bookkeeping ----------------------------------------

int case_count = 0;

// Prints the number of cases run once every test has finished.
class CaseCount : public ::testing::Environment {
 public:
  void TearDown() override { std::printf("bad-input cases: %d\n", case_count); }
};
::testing::Environment* const case_count_env =
    ::testing::AddGlobalTestEnvironment(new CaseCount);

// One case of the matrix: `s` fails with `code` and its message names
// every one of `names`.
void ExpectRejected(const absl::Status& s, StatusCode code,
                    std::initializer_list<std::string> names,
                    const std::string& what) {
  ++case_count;
  EXPECT_EQ(s.code(), code) << what << ": " << s;
  for (const std::string& n : names) {
    EXPECT_TRUE(absl::StrContains(s.message(), n))
        << what << ": the message does not name '" << n << "': " << s;
  }
}

// Every regular file of `dir` (recursively): name -> bytes.
using Fingerprint = std::map<std::string, std::string>;
Fingerprint FingerprintOf(const std::string& dir) {
  Fingerprint f;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    f[std::filesystem::relative(e.path(), dir).string()] =
        testing::ReadFileBytes(e.path().string());
  }
  return f;
}

std::string Names(const Fingerprint& f) {
  std::string out;
  for (const auto& [name, bytes] : f) {
    absl::StrAppend(&out, name, " (", bytes.size(), " B) ");
  }
  return out;
}

#define EXPECT_UNCHANGED(dir, before)                                  \
  do {                                                                 \
    const Fingerprint after_ = FingerprintOf(dir);                     \
    EXPECT_TRUE(after_ == (before))                                    \
        << "the store changed: before " << Names(before) << "; after " \
        << Names(after_);                                              \
  } while (0)

pb::ModelSpec SpecOf(const nn::Sequential& model) {
  absl::StatusOr<pb::ModelSpec> spec = DescribeSequential(model);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : pb::ModelSpec();
}

NamedTensors StateOf(const nn::Sequential& model) {
  absl::StatusOr<NamedTensors> s = CopyModuleState(*model);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : NamedTensors();
}

EpochMetadata Meta(int64_t epoch) {
  EpochMetadata m;
  m.epoch = epoch;
  m.step = 10 * (epoch + 1);
  m.metrics["loss"] = 1.0 / (epoch + 1);
  m.wall_time = 1e9 + epoch;
  return m;
}

// A store of BlobsMlp with `epochs` epochs; returns its directory.
std::string MakeStore(int epochs, HistoryOptions options = {}) {
  const std::string dir = testing::MakeTempDir("bad_store");
  nn::Sequential model = testing::BlobsMlp();
  auto store = HistoryStore::Open(dir, options, SpecOf(model));
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return dir;
  for (int e = 0; e < epochs; ++e) {
    testing::SimulateEpoch(model, e);
    absl::Status s = (*store)->Append(Meta(e), StateOf(model));
    EXPECT_TRUE(s.ok()) << s;
  }
  return dir;
}

// ---- A task for the PostTrainer (as hooks/post_trainer_test.cc) ------

// References at M_T's output scaled and shifted; the last 20% of the data
// is the guard split.
class ToyTask : public PostTrainTask {
 public:
  ToyTask(testing::Blobs data, PipelineOptions settings)
      : data_(std::move(data)), settings_(std::move(settings)) {}
  std::string name() const override { return "toy"; }
  absl::Status Check(const nn::Sequential& model) const override {
    return ForwardFirstInput(model, data_.x, "toy").status();
  }
  const PipelineOptions& settings() const override { return settings_; }
  absl::StatusOr<GuardSpec> MakeGuard(const TaskContext& ctx) override {
    (void)ctx;
    ++calls;
    const int64_t n = data_.x.size(0), g = n / 5;
    guard_ = {data_.x.slice(0, n - g), data_.y.slice(0, n - g)};
    train_ = {data_.x.slice(0, 0, n - g), data_.y.slice(0, 0, n - g)};
    return AccuracyGuard(guard_);
  }
  absl::StatusOr<Augmentation> Augment(const TaskContext& ctx, int p) override {
    Augmentation a;
    PT_ASSIGN_OR_RETURN(a.train, Refs(ctx, p, train_));
    PT_ASSIGN_OR_RETURN(a.validation, Refs(ctx, p, guard_));
    return a;
  }
  absl::StatusOr<SlicingPlan> PlanSlicing(const TaskContext& ctx) override {
    (void)ctx;
    return ClassSlicingPlan({data_.x, data_.y}, 4);
  }

  int calls = 0;  // MakeGuard calls: the phase started

 private:
  absl::StatusOr<TuningData> Refs(const TaskContext& ctx, int p,
                                  const LabelledData& d) {
    PT_ASSIGN_OR_RETURN(RegressionView view,
                        RegressionView::Create(ctx.model, p));
    torch::NoGradGuard g;
    nn::Sequential m = ctx.model;
    EvalModeGuard eval(*m);
    PT_ASSIGN_OR_RETURN(at::Tensor refs, view.Forward(d.inputs, d.labels));
    return TuningData{d.inputs, refs * 1.2 + 0.05, d.labels, d.labels};
  }
  testing::Blobs data_;
  PipelineOptions settings_;
  LabelledData train_, guard_;
};

PipelineOptions FastSettings() {
  PipelineOptions o;
  o.tuner.max_epochs = 2;
  o.tuner.learning_rates = {1e-2};
  return o;
}

// Trains the MLP for 4 epochs of 8 batches through `cb`; epoch `nan_epoch`
// reports a NaN loss.
void Train(nn::Sequential& model, Callback& cb, int nan_epoch = -1) {
  const testing::Blobs train = testing::GaussianBlobs(400, 1);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(2e-2));
  for (int epoch = 0; epoch < 4; ++epoch) {
    model->train();
    ASSERT_TRUE(cb.OnEpochBegin(epoch).ok());
    for (int64_t i = 0; i < 400; i += 50) {
      at::Tensor xb = train.x.narrow(0, i, 50), yb = train.y.narrow(0, i, 50);
      adam.zero_grad();
      nn::functional::cross_entropy(model->forward(xb), yb).backward();
      adam.step();
      ASSERT_TRUE(cb.OnBatchEnd({xb, yb}).ok());
    }
    const double loss = epoch == nan_epoch
                            ? std::numeric_limits<double>::quiet_NaN()
                            : 1.0 / (epoch + 1);
    ASSERT_TRUE(cb.OnEpochEnd(epoch, {{"loss", loss}}).ok());
  }
}

// ---- Weights and metrics ---------------------------------------------

// NaN or infinite weights: the PostTrainer refuses to run the phase,
// naming the tensor; the history is not touched and no report is written.
TEST(BadInput, NonFiniteWeightsAreRefusedNamingTheTensor) {
  for (double bad : {std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity()}) {
    const std::string dir = testing::MakeTempDir("bad_nan_w") + "/history";
    nn::Sequential model = testing::BlobsMlp();
    auto recorder = std::make_shared<HistoryRecorder>(model, dir);
    auto task = std::make_shared<ToyTask>(testing::GaussianBlobs(200, 2),
                                          FastSettings());
    auto trainer =
        std::make_shared<PostTrainer>(model, recorder, nullptr, task);
    CallbackList callbacks({recorder, trainer});
    ASSERT_TRUE(callbacks.OnTrainBegin().ok());
    Train(model, callbacks);
    ASSERT_TRUE(recorder->Flush().ok());
    const Fingerprint before = FingerprintOf(dir);
    {
      torch::NoGradGuard g;
      model->named_parameters()["2.weight"][3][5] = bad;
    }
    ExpectRejected(trainer->OnTrainEnd(), StatusCode::kInvalidArgument,
                   {"tensor '2.weight'", "1 NaN or infinite",
                    "nothing was tuned or stored"},
                   absl::StrCat("weight ", bad));
    EXPECT_EQ(task->calls, 0);
    EXPECT_EQ(trainer->result(), nullptr);
    EXPECT_UNCHANGED(dir, before);
    EXPECT_FALSE(std::filesystem::exists(dir + "/report.json"));
  }
}

// A NaN loss is recorded as given (the store holds NaN for that epoch),
// and both reports flag it; the phase still runs.
TEST(BadInput, ANanLossIsRecordedAsGivenAndFlagged) {
  const std::string dir = testing::MakeTempDir("bad_nan_loss") + "/history";
  nn::Sequential model = testing::BlobsMlp();
  auto recorder = std::make_shared<HistoryRecorder>(model, dir);
  auto task =
      std::make_shared<ToyTask>(testing::GaussianBlobs(200, 2), FastSettings());
  auto trainer = std::make_shared<PostTrainer>(model, recorder, nullptr, task);
  CallbackList callbacks({recorder, trainer});
  ASSERT_TRUE(callbacks.OnTrainBegin().ok());
  Train(model, callbacks, /*nan_epoch=*/3);
  absl::Status end = callbacks.OnTrainEnd();
  ASSERT_TRUE(end.ok()) << end;
  ++case_count;
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const std::vector<pb::EpochEntry> epochs = (*store)->Epochs();
  ASSERT_GE(epochs.size(), 4u);
  EXPECT_EQ(epochs[3].epoch(), 3);
  EXPECT_TRUE(std::isnan(epochs[3].metrics().at("loss")));
  EXPECT_DOUBLE_EQ(epochs[2].metrics().at("loss"), 1.0 / 3);
  const std::string json = testing::ReadFileBytes(dir + "/report.json");
  EXPECT_TRUE(
      absl::StrContains(json, "\"nonfinite_metrics\": [\"epoch 3 loss\"]"))
      << json;
  const std::string md = testing::ReadFileBytes(dir + "/report.md");
  EXPECT_TRUE(absl::StrContains(
      md, "**Warning:** non-finite training metrics (epoch 3 loss)"))
      << md;
}

// ---- Data sets: empty, labels out of range, wrong shapes -------------

TEST(BadInput, AnEmptyDataSetIsRefused) {
  nn::Sequential model = testing::BlobsMlp();
  const at::Tensor none = torch::zeros({0, 6});
  const at::Tensor no_labels = torch::zeros({0}, torch::kLong);
  ExpectRejected(Accuracy(model, none, no_labels).status(),
                 StatusCode::kInvalidArgument, {"inputs are empty", "[0, 6]"},
                 "Accuracy");
  ExpectRejected(Fgsm(model, none, no_labels).status(),
                 StatusCode::kInvalidArgument, {"inputs are empty", "[0, 6]"},
                 "Fgsm");
  ExpectRejected(ProfileModel(model, none, no_labels, 4).status(),
                 StatusCode::kInvalidArgument, {"no inputs to profile"},
                 "ProfileModel");
  ExpectRejected(ClassifierAccuracy(model, {none, no_labels}).status(),
                 StatusCode::kInvalidArgument, {"accuracy needs inputs"},
                 "ClassifierAccuracy");
  ExpectRejected(ForwardFirstInput(model, none, "toy").status(),
                 StatusCode::kInvalidArgument, {"toy: no inputs"},
                 "ForwardFirstInput");
  // A tabular data set whose file holds no rows.
  auto schema = ParseTabularSchema(
      "file: d.csv\ncolumn: a numeric\ncolumn: g categorical\n"
      "column: y categorical\nlabel: y\nfavourable: 1\nprotected: g\n"
      "privileged: g == m\n",
      "t.schema");
  ASSERT_TRUE(schema.ok()) << schema.status();
  const std::string dir = testing::MakeTempDir("bad_empty_csv");
  testing::WriteFileBytes(dir + "/d.csv", "");
  auto rows = ReadTabularRows(*schema, dir);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ExpectRejected(EncodeTabular(*schema, *rows, {}).status(),
                 StatusCode::kInvalidArgument, {"t.schema", "0 rows"},
                 "EncodeTabular");
}

TEST(BadInput, ALabelOutOfRangeIsRefused) {
  nn::Sequential model = testing::BlobsMlp();  // 4 classes
  const testing::Blobs d = testing::GaussianBlobs(20, 3);
  at::Tensor high = d.y.clone();
  high[7] = 4;
  at::Tensor negative = d.y.clone();
  negative[2] = -1;
  ExpectRejected(Accuracy(model, d.x, high).status(),
                 StatusCode::kInvalidArgument,
                 {"labels out of range", "label 4", "4 outputs"}, "Accuracy");
  ExpectRejected(Fgsm(model, d.x, negative).status(),
                 StatusCode::kInvalidArgument,
                 {"labels out of range", "label -1"}, "Fgsm");
  ExpectRejected(ClassifierAccuracy(model, {d.x, high}).status(),
                 StatusCode::kInvalidArgument, {"label 4", "4 outputs"},
                 "ClassifierAccuracy");
  ExpectRejected(ProfileModel(model, d.x, high, 4).status(),
                 StatusCode::kInvalidArgument,
                 {"criterion ids must be in [-1, 4)"}, "ProfileModel");
}

TEST(BadInput, AWrongInputShapeNamesTheLayer) {
  nn::Sequential model = testing::BlobsMlp();  // takes [N, 6]
  const at::Tensor x = torch::rand({10, 5});
  const at::Tensor y = torch::zeros({10}, torch::kLong);
  auto view = ModelView::Create(model);
  ASSERT_TRUE(view.ok());
  ExpectRejected(view->Forward(x, view->size()).status(),
                 StatusCode::kInvalidArgument, {"layer '0'", "Linear(6, 32)"},
                 "ModelView::Forward");
  ExpectRejected(ProfileModel(model, x, y, 4).status(),
                 StatusCode::kInvalidArgument, {"layer '0'", "Linear(6, 32)"},
                 "ProfileModel");
  auto m_t = RegressionView::Create(model, 1);
  ASSERT_TRUE(m_t.ok());
  ExpectRejected(m_t->Forward(x).status(), StatusCode::kInvalidArgument,
                 {"layer '0'", "Linear(6, 32)"}, "RegressionView::Forward");
  ExpectRejected(
      ForwardFirstInput(model, x, "toy").status(), StatusCode::kInvalidArgument,
      {"toy: the inputs (10x5) do not fit the model"}, "ForwardFirstInput");
  ExpectRejected(ClassifierAccuracy(model, {x, y}).status(),
                 StatusCode::kInvalidArgument,
                 {"computing accuracy on inputs [10, 5]", "10x5 and 6x32"},
                 "ClassifierAccuracy");
  ExpectRejected(Accuracy(model, x, y).status(), StatusCode::kInvalidArgument,
                 {"accuracy", "10x5 and 6x32"}, "Accuracy");
  // (robustness/attacks.cc passes torch's message on without the layer.)
}

// ---- Architectures ---------------------------------------------------

TEST(BadInput, AnUnsupportedLayerIsNamed) {
  nn::Sequential model(nn::Linear(6, 8),
                       SequentialBlock(nn::ReLU(), nn::Softmax(1)),
                       nn::Linear(8, 4));
  ExpectRejected(
      DescribeSequential(model).status(), StatusCode::kInvalidArgument,
      {"layer '1.1'", "unsupported type", "Softmax"}, "DescribeSequential");
  ExpectRejected(ModelView::Create(model).status(),
                 StatusCode::kInvalidArgument, {"layer '1.1'", "Softmax"},
                 "ModelView::Create");
  ExpectRejected(RegressionView::Create(model, 1).status(),
                 StatusCode::kInvalidArgument, {"layer '1.1'", "Softmax"},
                 "RegressionView::Create");
  const std::string dir = testing::MakeTempDir("bad_layer") + "/history";
  HistoryRecorder recorder(model, dir);
  ExpectRejected(recorder.OnTrainBegin(), StatusCode::kInvalidArgument,
                 {"layer '1.1'", "Softmax"}, "HistoryRecorder");
}

// A store of one architecture, opened or loaded with another: the error
// names the layer (Open) or the tensor (LoadEpoch); the store and the
// model are left as they were.
TEST(BadInput, AMismatchedArchitectureOnLoadNamesTheLayerAndTensor) {
  const std::string dir = MakeStore(2);
  const Fingerprint before = FingerprintOf(dir);
  torch::manual_seed(5);
  nn::Sequential wider(nn::Linear(6, 32), nn::ReLU(), nn::Linear(32, 16),
                       nn::ReLU(), nn::Linear(16, 5));
  const NamedTensors wider_state = StateOf(wider);
  {
    auto store = HistoryStore::OpenReadOnly(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    ExpectRejected((*store)->LoadEpoch(1, *wider), StatusCode::kInvalidArgument,
                   {"epoch 1", "tensor '4.weight'", "[4,16]", "[5,16]"},
                   "LoadEpoch");
  }
  EXPECT_EQ(testing::DiffStates(StateOf(wider), wider_state), "");
  ExpectRejected(HistoryStore::Open(dir, {}, SpecOf(wider)).status(),
                 StatusCode::kFailedPrecondition,
                 {dir, "another architecture", "layer '4'", "Linear(16, 4)",
                  "Linear(16, 5)"},
                 "Open");
  EXPECT_UNCHANGED(dir, before);
}

// ---- Settings: q and p -----------------------------------------------

TEST(BadInput, QOutsideZeroToHundredIsRefused) {
  nn::Sequential model = testing::BlobsMlp();
  auto view = ModelView::Create(model);
  ASSERT_TRUE(view.ok());
  std::vector<at::Tensor> counts;
  for (int w : view->weighted_layers()) {
    counts.push_back(
        torch::zeros(view->Weight(w).sizes().slice(0, 2), torch::kLong));
  }
  for (double q : {0.0, -5.0, 100.5, std::nan("")}) {
    SliceOptions o;
    o.q = q;
    ExpectRejected(SelectKeySynapses(*view, counts, o).status(),
                   StatusCode::kInvalidArgument,
                   {"q must be in (0, 100]", absl::StrCat("got ", q)},
                   absl::StrCat("SelectKeySynapses q = ", q));
    PipelineOptions settings = FastSettings();
    settings.slicer.q = q;
    ToyTask task(testing::GaussianBlobs(40, 2), settings);
    ExpectRejected(CheckPipeline(model, task), StatusCode::kInvalidArgument,
                   {"task 'toy'", "slicer.q must be in (0, 100]"},
                   absl::StrCat("CheckPipeline q = ", q));
  }
}

TEST(BadInput, PBeyondTheModelsLayersIsRefused) {
  nn::Sequential model = testing::BlobsMlp();  // 3 weighted layers
  for (int p : {3, 7}) {
    ExpectRejected(RegressionView::Create(model, p).status(),
                   StatusCode::kInvalidArgument,
                   {"3 weighted layer(s)", absl::StrCat("p = ", p)},
                   absl::StrCat("RegressionView p = ", p));
    PipelineOptions settings = FastSettings();
    settings.tuner.p = p;
    ToyTask task(testing::GaussianBlobs(40, 2), settings);
    ExpectRejected(
        CheckPipeline(model, task), StatusCode::kInvalidArgument,
        {absl::StrCat("regression model (p = ", p, ")"), "3 weighted layer(s)"},
        absl::StrCat("CheckPipeline p = ", p));
  }
  ExpectRejected(RegressionView::Create(model, -1).status(),
                 StatusCode::kInvalidArgument, {"p must be >= 0"},
                 "RegressionView p = -1");
}

// ---- Tabular data: the protected attribute, malformed CSV ------------

const char kSchema[] =
    "file: d.csv\n"
    "column: age numeric\n"
    "column: sex categorical\n"
    "column: y categorical\n"
    "label: y\n"
    "favourable: 1\n"
    "protected: sex\n"
    "privileged: sex == m\n";

TEST(BadInput, AMissingProtectedAttributeIsNamed) {
  auto schema = ParseTabularSchema(kSchema, "t.schema");
  ASSERT_TRUE(schema.ok()) << schema.status();
  const std::string dir = testing::MakeTempDir("bad_protected");
  testing::WriteFileBytes(dir + "/d.csv", "30, m, 1\n40, f, 0\n");
  const Fingerprint before = FingerprintOf(dir);
  ExpectRejected(ReadTabularRows(*schema, dir, "race").status(),
                 StatusCode::kInvalidArgument,
                 {"t.schema", "protected attribute 'race'"},
                 "ReadTabularRows race");
  // A schema whose protected attribute is no column, or has no predicate.
  ExpectRejected(
      ParseTabularSchema(std::string(kSchema) + "privileged: race == w\n",
                         "t.schema")
          .status(),
      StatusCode::kInvalidArgument, {"t.schema", "no column 'race'"},
      "schema privileged race");
  ExpectRejected(
      ParseTabularSchema(std::string(kSchema) + "protected: age\n", "t.schema")
          .status(),
      StatusCode::kInvalidArgument,
      {"t.schema", "protected attribute 'age'", "privileged"},
      "schema protected age");
  // No protected attribute at all.
  std::string none = kSchema;
  none.replace(none.find("protected: sex\n"), 15, "");
  auto no_default = ParseTabularSchema(none, "t.schema");
  ASSERT_TRUE(no_default.ok()) << no_default.status();
  ExpectRejected(
      ReadTabularRows(*no_default, dir).status(), StatusCode::kInvalidArgument,
      {"t.schema", "no protected attribute"}, "ReadTabularRows none");
  EXPECT_UNCHANGED(dir, before);
}

TEST(BadInput, MalformedAndTruncatedCsvNamesFileLineAndColumn) {
  auto schema = ParseTabularSchema(kSchema, "t.schema");
  ASSERT_TRUE(schema.ok()) << schema.status();
  struct Case {
    std::string what, text;
    std::vector<std::string> names;
  };
  const std::vector<Case> cases = {
      {"not a number",
       "30, m, 1\nthirty, f, 0\n",
       {"d.csv:2:", "column 'age' (1)", "'thirty' is not a finite number"}},
      {"infinite",
       "30, m, 1\ninf, f, 0\n",
       {"d.csv:2:", "column 'age' (1)", "'inf'"}},
      {"too many fields",
       "30, m, 1, 7\n",
       {"d.csv:1:", "expected 3 fields, got 4"}},
      {"truncated",
       "30, m, 1\n40, f",
       {"d.csv:2:", "expected 3 fields, got 2"}},
      {"binary garbage",
       std::string("30, m, 1\n\x01\x02\xff\n", 13),
       {"d.csv:2:", "expected 3 fields, got 1"}},
  };
  for (const Case& c : cases) {
    const std::string dir = testing::MakeTempDir("bad_csv");
    testing::WriteFileBytes(dir + "/d.csv", c.text);
    const Fingerprint before = FingerprintOf(dir);
    std::vector<std::string> names = c.names;
    names[0] = dir + "/" + names[0];  // the file's full path
    auto rows = ReadTabularRows(*schema, dir);
    ++case_count;
    EXPECT_EQ(rows.status().code(), StatusCode::kInvalidArgument)
        << c.what << ": " << rows.status();
    for (const std::string& n : names) {
      EXPECT_TRUE(absl::StrContains(rows.status().message(), n))
          << c.what << ": the message does not name '" << n
          << "': " << rows.status();
    }
    EXPECT_UNCHANGED(dir, before);
  }
  const std::string dir = testing::MakeTempDir("bad_csv");
  ExpectRejected(ReadTabularRows(*schema, dir).status(), StatusCode::kNotFound,
                 {dir + "/d.csv"}, "missing file");
}

// ---- IDX files -------------------------------------------------------

std::string U32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
          static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string IdxImages(uint32_t magic, uint32_t count, uint32_t rows,
                      uint32_t cols, size_t pixels) {
  return U32(magic) + U32(count) + U32(rows) + U32(cols) +
         std::string(pixels, '\x10');
}

std::string IdxLabels(uint32_t count, const std::string& labels) {
  return U32(0x801) + U32(count) + labels;
}

TEST(BadInput, MalformedAndTruncatedIdxNamesTheFile) {
  struct Case {
    std::string what, images, labels;
    StatusCode code;
    std::vector<std::string> names;  // "@images" / "@labels": the path
  };
  const std::vector<Case> cases = {
      {"bad image magic",
       IdxImages(0x804, 2, 2, 2, 8),
       IdxLabels(2, "\x01\x02"),
       StatusCode::kInvalidArgument,
       {"@images", "is not an IDX image file", "magic 2052"}},
      {"bad label magic",
       IdxImages(0x803, 2, 2, 2, 8),
       U32(0x803) + U32(2) + "\x01\x02",
       StatusCode::kInvalidArgument,
       {"@labels", "is not an IDX label file"}},
      {"implausible sizes",
       IdxImages(0x803, 2, 0, 2, 8),
       IdxLabels(2, "\x01\x02"),
       StatusCode::kInvalidArgument,
       {"@images", "implausible sizes 2x0x2"}},
      {"truncated images",
       IdxImages(0x803, 3, 2, 2, 9),
       IdxLabels(3, "\x01\x02\x03"),
       StatusCode::kDataLoss,
       {"@images", "truncated"}},
      {"truncated header",
       U32(0x803) + U32(3) + "\x00\x00",
       IdxLabels(3, "\x01\x02\x03"),
       StatusCode::kDataLoss,
       {"@images", "truncated"}},
      {"truncated labels",
       IdxImages(0x803, 3, 2, 2, 12),
       IdxLabels(3, "\x01\x02"),
       StatusCode::kDataLoss,
       {"@labels", "truncated"}},
      {"count mismatch",
       IdxImages(0x803, 3, 2, 2, 12),
       IdxLabels(2, "\x01\x02"),
       StatusCode::kInvalidArgument,
       {"@labels", "has 2 labels", "has 3 images"}},
      {"label above 9",
       IdxImages(0x803, 2, 2, 2, 8),
       IdxLabels(2, "\x01\x0c"),
       StatusCode::kInvalidArgument,
       {"@labels", "label 12 of item 1 is not in 0..9"}},
      {"non-finite float",
       U32(0xD03) + U32(1) + U32(1) + U32(1) + U32(0x7fc00000),
       IdxLabels(1, "\x01"),
       StatusCode::kInvalidArgument,
       {"@images", "value 0 of item 0 is not finite"}},
  };
  for (const Case& c : cases) {
    const std::string dir = testing::MakeTempDir("bad_idx");
    const std::string images = dir + "/images-idx3-ubyte";
    const std::string labels = dir + "/labels-idx1-ubyte";
    testing::WriteFileBytes(images, c.images);
    testing::WriteFileBytes(labels, c.labels);
    const Fingerprint before = FingerprintOf(dir);
    std::vector<std::string> names;
    for (const std::string& n : c.names) {
      names.push_back(n == "@images" ? images : n == "@labels" ? labels : n);
    }
    absl::Status s = ReadIdxFiles(images, labels).status();
    ++case_count;
    EXPECT_EQ(s.code(), c.code) << c.what << ": " << s;
    for (const std::string& n : names) {
      EXPECT_TRUE(absl::StrContains(s.message(), n))
          << c.what << ": the message does not name '" << n << "': " << s;
    }
    EXPECT_UNCHANGED(dir, before);
  }
  ExpectRejected(ReadIdxFiles("/no/such/images", "/no/such/labels").status(),
                 StatusCode::kNotFound, {"/no/such/images"}, "missing IDX");
}

// ---- Stores: a newer format, no permission, a full disk --------------

// The MANIFEST of `m` as a newer library would write it: frame version and
// payload version `version`, with a matching CRC.
std::string ManifestOfVersion(pb::Manifest m, uint32_t version) {
  m.set_format_version(version);
  std::string bytes = EncodeManifestFile(m);
  const std::string v = U32(version);
  for (int i = 0; i < 4; ++i) bytes[8 + i] = v[3 - i];  // little-endian
  const absl::string_view view(bytes);
  const uint32_t crc = Crc32(view.substr(24), Crc32(view.substr(8, 12)));
  for (int i = 0; i < 4; ++i) bytes[20 + i] = static_cast<char>(crc >> (8 * i));
  return bytes;
}

TEST(BadInput, AStoreFromANewerFormatVersionIsRefusedUntouched) {
  const std::string dir = MakeStore(2);
  const std::string path = dir + "/MANIFEST";
  auto good = DecodeManifestFile(testing::ReadFileBytes(path), path);
  ASSERT_TRUE(good.ok()) << good.status();
  const uint32_t newer = kHistoryFormatVersion + 1;
  // As a newer library writes it: both versions bumped, the CRC matching.
  testing::WriteFileBytes(path, ManifestOfVersion(*good, newer));
  Fingerprint before = FingerprintOf(dir);
  const std::string version = absl::StrCat("format version ", newer);
  ExpectRejected(HistoryStore::OpenReadOnly(dir).status(),
                 StatusCode::kFailedPrecondition,
                 {path, version, "not supported"}, "OpenReadOnly newer");
  ExpectRejected(HistoryStore::Open(dir, {}, good->model_spec()).status(),
                 StatusCode::kFailedPrecondition,
                 {path, version, "not supported"}, "Open newer");
  EXPECT_UNCHANGED(dir, before);
  // Only the payload's version bumped (EncodeManifestFile of a decoded
  // manifest): DataLoss, as docs/history_format.md says, naming it.
  pb::Manifest payload_only = *good;
  payload_only.set_format_version(newer);
  testing::WriteFileBytes(path, EncodeManifestFile(payload_only));
  before = FingerprintOf(dir);
  const std::string field = absl::StrCat("format_version ", newer);
  ExpectRejected(HistoryStore::OpenReadOnly(dir).status(),
                 StatusCode::kDataLoss, {path, field}, "OpenReadOnly payload");
  ExpectRejected(HistoryStore::Open(dir, {}, good->model_spec()).status(),
                 StatusCode::kDataLoss, {path, field}, "Open payload");
  EXPECT_UNCHANGED(dir, before);
}

// Truncated store files: DataLoss naming the file (and the epoch); a
// writer does not overwrite them.
TEST(BadInput, TruncatedStoreFilesNameTheFileAndEpoch) {
  const std::string dir = MakeStore(3);
  const std::string blob = dir + "/" + BlobFileName(1);
  testing::WriteFileBytes(blob, testing::ReadFileBytes(blob).substr(
                                    0, testing::FileSize(blob) / 2));
  Fingerprint before = FingerprintOf(dir);
  {
    auto store = HistoryStore::OpenReadOnly(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    ExpectRejected((*store)->ReadEpoch(1).status(), StatusCode::kDataLoss,
                   {BlobFileName(1), "epoch 1", "the manifest says"},
                   "truncated blob");
    ExpectRejected((*store)->Verify(), StatusCode::kDataLoss,
                   {BlobFileName(1), "epoch 1"}, "truncated blob, Verify");
    EXPECT_TRUE((*store)->ReadEpoch(0).ok());
  }
  EXPECT_UNCHANGED(dir, before);
  const std::string manifest = dir + "/MANIFEST";
  testing::WriteFileBytes(manifest,
                          testing::ReadFileBytes(manifest).substr(0, 30));
  before = FingerprintOf(dir);
  ExpectRejected(HistoryStore::OpenReadOnly(dir).status(),
                 StatusCode::kDataLoss, {manifest}, "truncated MANIFEST");
  ExpectRejected(
      HistoryStore::Open(dir, {}, SpecOf(testing::BlobsMlp())).status(),
      StatusCode::kDataLoss, {manifest}, "truncated MANIFEST, writer");
  EXPECT_UNCHANGED(dir, before);
}

// Forwards to the default Env but refuses every change under `dir` as a
// directory without write permission does (for root, whom chmod does not
// stop). The messages are those of the POSIX Env.
class NoWriteEnv : public FaultInjectionEnv {
 public:
  explicit NoWriteEnv(std::string dir)
      : FaultInjectionEnv(Env::Default()), dir_(std::move(dir)) {}
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) override {
    if (Under(path)) return Denied("open", path);
    return FaultInjectionEnv::NewWritableFile(path);
  }
  absl::Status RenameFile(const std::string& from,
                          const std::string& to) override {
    if (Under(from) || Under(to)) {
      return Denied("rename", absl::StrCat(from, "' to '", to));
    }
    return FaultInjectionEnv::RenameFile(from, to);
  }
  absl::Status RemoveFile(const std::string& path) override {
    if (Under(path)) return Denied("unlink", path);
    return FaultInjectionEnv::RemoveFile(path);
  }
  absl::StatusOr<std::unique_ptr<FileLock>> LockFile(
      const std::string& path) override {
    // O_CREAT of a missing lock file needs write permission.
    if (Under(path) && !FileExists(path)) return Denied("lock", path);
    return FaultInjectionEnv::LockFile(path);
  }

 private:
  bool Under(const std::string& path) const {
    return absl::StartsWith(path, dir_ + "/");
  }
  static absl::Status Denied(absl::string_view op, const std::string& path) {
    return absl::PermissionDeniedError(
        absl::StrCat(op, " '", path, "': Permission denied"));
  }
  std::string dir_;
};

TEST(BadInput, AStoreDirectoryThatIsNotWritableIsNamed) {
  const std::string dir = MakeStore(2);
  const std::string fresh = testing::MakeTempDir("bad_ro_new");
  const Fingerprint before = FingerprintOf(dir);
  ASSERT_EQ(::chmod(dir.c_str(), 0555), 0);
  ASSERT_EQ(::chmod(fresh.c_str(), 0555), 0);
  // chmod does not stop root (CAP_DAC_OVERRIDE): probe, and where writes
  // still succeed refuse them through an Env instead.
  const std::string probe = dir + "/probe";
  std::FILE* f = std::fopen(probe.c_str(), "w");
  const bool chmod_blocks = f == nullptr;
  if (f != nullptr) {
    std::fclose(f);
    std::remove(probe.c_str());
  }
  NoWriteEnv no_write_dir(dir), no_write_fresh(fresh);
  HistoryOptions options, fresh_options;
  if (!chmod_blocks) {
    std::printf(
        "[ NOTE     ] chmod 0555 does not stop this user (root?); the "
        "unwritable directory is simulated by an Env refusing writes\n");
    options.env = &no_write_dir;
    fresh_options.env = &no_write_fresh;
  }
  nn::Sequential model = testing::BlobsMlp();
  {
    auto store = HistoryStore::Open(dir, options, SpecOf(model));
    ASSERT_TRUE(store.ok()) << store.status();  // nothing to clean up
    testing::SimulateEpoch(model, 9);
    ExpectRejected(
        (*store)->Append(Meta(2), StateOf(model)),
        StatusCode::kPermissionDenied,
        {dir, "writing epoch 2", "epoch-00000002.blob", "Permission denied"},
        "Append");
    EXPECT_EQ((*store)->Epochs().size(), 2u);
  }
  ExpectRejected(
      HistoryStore::Open(fresh, fresh_options, SpecOf(model)).status(),
      StatusCode::kPermissionDenied, {fresh + "/LOCK", "Permission denied"},
      "Open new store");
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(fresh.c_str(), 0755), 0);
  EXPECT_UNCHANGED(dir, before);
  EXPECT_TRUE(FingerprintOf(fresh).empty());
  auto reader = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->Verify().ok());
}

// A full disk while writing the blob or the MANIFEST: ResourceExhausted
// naming the epoch; every earlier epoch and file unchanged, bit for bit.
TEST(BadInput, AFullDiskNamesTheEpochAndKeepsEarlierEpochs) {
  for (const std::string filter : {"", "MANIFEST"}) {
    FaultInjectionEnv env(Env::Default());
    HistoryOptions options;
    options.env = &env;
    const std::string dir = testing::MakeTempDir("bad_full");
    nn::Sequential model = testing::BlobsMlp();
    auto store = HistoryStore::Open(dir, options, SpecOf(model));
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<NamedTensors> truth;
    for (int e = 0; e < 2; ++e) {
      testing::SimulateEpoch(model, e);
      truth.push_back(StateOf(model));
      ASSERT_TRUE((*store)->Append(Meta(e), StateOf(model)).ok());
    }
    const Fingerprint before = FingerprintOf(dir);
    env.SetWriteBudget(filter.empty() ? 100 : 64, filter);
    testing::SimulateEpoch(model, 2);
    ExpectRejected(
        (*store)->Append(Meta(2), StateOf(model)),
        StatusCode::kResourceExhausted,
        {dir, filter.empty() ? "writing epoch 2" : "committing epoch 2",
         "No space left"},
        absl::StrCat("disk full in ", filter.empty() ? "blob" : filter));
    EXPECT_UNCHANGED(dir, before);
    env.ClearFaults();
    ASSERT_EQ((*store)->Epochs().size(), 2u);
    for (int e = 0; e < 2; ++e) {
      auto read = (*store)->ReadEpoch(e);
      ASSERT_TRUE(read.ok()) << read.status();
      EXPECT_EQ(testing::DiffStates(*read, truth[e]), "") << "epoch " << e;
    }
  }
}

}  // namespace
}  // namespace posttrain

// Tests of the PostTrainer and of the one callback (PostTrainCallback) with
// a task defined here: hooks/ knows tasks only through tuner/task.h. The
// Dare task's end-to-end tests are in robustness/dare_test.cc.
#include "hooks/post_trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "common/module_state.h"
#include "common/status.h"
#include "hooks/post_train_callback.h"
#include "hooks/progress_bar.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

// A task that needs no history: T is its data with references at M_T's
// output scaled and shifted (so tuning has work to do), or, with
// `garbage`, references of the wrong class that wreck the model when
// fitted. The last 20% of the
// data is the guard split. It records which calls it got.
class ToyTask : public PostTrainTask {
 public:
  ToyTask(testing::Blobs data, PipelineOptions settings, bool garbage = false)
      : data_(std::move(data)), settings_(settings), garbage_(garbage) {}
  std::string name() const override { return "toy"; }
  absl::Status Check(const torch::nn::Sequential& model) const override {
    ++const_cast<ToyTask*>(this)->checks;
    (void)model;
    return check_status;
  }
  const PipelineOptions& settings() const override { return settings_; }
  std::vector<std::pair<std::string, std::string>> Describe() const override {
    return {{"toy_option", "42"}};
  }
  absl::StatusOr<GuardSpec> MakeGuard(const TaskContext& ctx) override {
    calls += "guard,";
    saw_history = ctx.history != nullptr;
    const int64_t n = data_.x.size(0), g = n / 5;
    guard_ = {data_.x.slice(0, n - g), data_.y.slice(0, n - g)};
    train_ = {data_.x.slice(0, 0, n - g), data_.y.slice(0, 0, n - g)};
    return AccuracyGuard(guard_);
  }
  absl::StatusOr<Augmentation> Augment(const TaskContext& ctx, int p) override {
    calls += "augment,";
    Augmentation a;
    PT_ASSIGN_OR_RETURN(a.train, Refs(ctx, p, train_));
    PT_ASSIGN_OR_RETURN(a.validation, Refs(ctx, p, guard_));
    a.figures["T"] = static_cast<double>(a.train.size());
    return a;
  }
  absl::StatusOr<SlicingPlan> PlanSlicing(const TaskContext& ctx) override {
    calls += "plan,";
    (void)ctx;
    return ClassSlicingPlan({data_.x, data_.y}, 4);
  }

  absl::Status check_status;
  int checks = 0;
  std::string calls;
  bool saw_history = false;

 private:
  absl::StatusOr<TuningData> Refs(const TaskContext& ctx, int p,
                                  const LabelledData& d) {
    PT_ASSIGN_OR_RETURN(RegressionView view,
                        RegressionView::Create(ctx.model, p));
    at::Tensor refs;
    {
      torch::NoGradGuard g;
      torch::nn::Sequential m = ctx.model;
      EvalModeGuard eval(*m);
      PT_ASSIGN_OR_RETURN(refs, view.Forward(d.inputs, d.labels));
      if (garbage_) {
        // Each sample's reference is the mean representation of the next
        // class: fitting it makes the layers above predict (y + 1) % 4.
        at::Tensor next = (d.labels + 1).remainder(4);
        at::Tensor means = torch::zeros({4, refs.size(1)});
        for (int64_t c = 0; c < 4; ++c) {
          at::Tensor rows = d.labels.eq(c).nonzero().reshape({-1});
          if (rows.numel() > 0) means[c] = refs.index_select(0, rows).mean(0);
        }
        refs = means.index_select(0, next);
      } else {
        refs = refs * 1.2 + 0.05;
      }
    }
    return TuningData{d.inputs, refs, d.labels, d.labels};
  }
  testing::Blobs data_;
  PipelineOptions settings_;
  bool garbage_;
  LabelledData train_, guard_;
};

PipelineOptions FastSettings() {
  PipelineOptions o;
  o.tuner.max_epochs = 4;
  o.tuner.learning_rates = {1e-2, 1e-3};
  return o;
}

// Trains the MLP for 6 epochs of 16 batches, calling `cb`'s events.
void Train(nn::Sequential& model, Callback& cb, const testing::Blobs& train,
           std::vector<absl::Status>* errors = nullptr) {
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(2e-2));
  for (int epoch = 0; epoch < 6; ++epoch) {
    model->train();
    absl::Status b = cb.OnEpochBegin(epoch);
    if (errors) errors->push_back(b);
    for (int64_t i = 0; i < 800; i += 50) {
      at::Tensor xb = train.x.narrow(0, i, 50), yb = train.y.narrow(0, i, 50);
      adam.zero_grad();
      nn::functional::cross_entropy(model->forward(xb), yb).backward();
      adam.step();
      absl::Status s = cb.OnBatchEnd({xb, yb});
      if (errors) errors->push_back(s);
    }
    absl::Status e = cb.OnEpochEnd(epoch, {{"epoch", epoch}});
    if (errors) errors->push_back(e);
  }
}

// Everything written to a tmpfile, which is then closed.
std::string ReadAndClose(std::FILE* f) {
  std::rewind(f);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

bool SameState(const NamedTensors& a, const NamedTensors& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i].tensor, b[i].tensor)) return false;
  }
  return true;
}

TEST(PostTrainCallback, RunsThePhaseStoresTheModelAndSavesTheProfile) {
  const std::string dir = testing::MakeTempDir("ptc") + "/history";
  nn::Sequential model = testing::BlobsMlp();
  testing::Blobs train = testing::GaussianBlobs(800, 1);
  auto task =
      std::make_shared<ToyTask>(testing::GaussianBlobs(400, 2), FastSettings());
  PostTrainCallbackOptions options;
  options.directory = dir;
  options.profiler.every_n_batches = 2;
  PostTrainCallback post(model, task, options);
  ASSERT_TRUE(post.OnTrainBegin().ok());
  EXPECT_EQ(task->checks, 1);  // the task's check ran before training
  Train(model, post, train);
  absl::Status end = post.OnTrainEnd();
  ASSERT_TRUE(end.ok()) << end;
  EXPECT_EQ(task->calls, "guard,augment,plan,");
  EXPECT_TRUE(task->saw_history);
  const PipelineResult* r = post.result();
  ASSERT_NE(r, nullptr);
  EXPECT_TRUE(r->profile_online);
  ASSERT_EQ(r->slices.size(), 4u);
  ASSERT_TRUE(r->tune.accepted) << r->tune.reason;
  // The improved model is epoch 6, after the 6 training epochs.
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  const auto epochs = (*store)->Epochs();
  ASSERT_EQ(epochs.size(), 7u);
  EXPECT_EQ(epochs[5].epoch(), 5);
  EXPECT_TRUE(epochs[6].metrics().contains(kPostTrainMetric));
  EXPECT_EQ(post.post_trainer().stored_epoch(), 6);
  EXPECT_TRUE(SameState(*CopyModuleState(*model), *(*store)->ReadEpoch(6)));
  EXPECT_FALSE(SameState(*CopyModuleState(*model), *(*store)->ReadEpoch(5)));
  // The profile beside the history parses and is the one sliced with.
  ASSERT_EQ(post.profile_path(), dir + "/profile.pb");
  pb::Profile proto;
  ASSERT_TRUE(
      proto.ParseFromString(testing::ReadFileBytes(post.profile_path())));
  auto saved = Profile::FromProto(proto);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->count(), post.profiler()->profile()->count());
  // report.json lists the task's own options beside the settings.
  const std::string json = testing::ReadFileBytes(dir + "/report.json");
  EXPECT_TRUE(absl::StrContains(json, "\"task\": \"toy\"")) << json;
  EXPECT_TRUE(absl::StrContains(json, "\"toy_option\": 42")) << json;
  EXPECT_TRUE(absl::StrContains(json, "\"learning_rates\": [0.01, 0.001]"))
      << json;
}

// Hazard "order": the PostTrainer first in a user's list. It flushes the
// recorder's pending writes before reading the history: the final training
// epoch keeps its number and the improved model comes after it.
TEST(PostTrainerHazards, AnyOrderOfTheListKeepsTheFinalEpoch) {
  const std::string dir = testing::MakeTempDir("post_order") + "/history";
  nn::Sequential model = testing::BlobsMlp();
  testing::Blobs train = testing::GaussianBlobs(800, 1);
  HistoryRecorderOptions slow;
  slow.max_pending = 4;
  auto recorder = std::make_shared<HistoryRecorder>(model, dir, slow);
  auto profiler = std::make_shared<SliceProfiler>(model);
  auto task =
      std::make_shared<ToyTask>(testing::GaussianBlobs(400, 2), FastSettings());
  auto trainer = std::make_shared<PostTrainer>(model, recorder, profiler, task);
  CallbackList callbacks({trainer, profiler, recorder});
  absl::Status begin = callbacks.OnTrainBegin();
  ASSERT_TRUE(begin.ok()) << begin;
  Train(model, callbacks, train);
  absl::Status end = callbacks.OnTrainEnd();
  ASSERT_TRUE(end.ok()) << end;
  ASSERT_NE(trainer->result(), nullptr);
  ASSERT_TRUE(trainer->result()->tune.accepted);
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  const auto epochs = (*store)->Epochs();
  ASSERT_EQ(epochs.size(), 7u);
  for (int e = 0; e < 6; ++e) {
    EXPECT_EQ(epochs[e].epoch(), e);
    EXPECT_FALSE(epochs[e].metrics().contains(kPostTrainMetric)) << e;
  }
  EXPECT_EQ(epochs[6].epoch(), 6);
  EXPECT_TRUE(epochs[6].metrics().contains(kPostTrainMetric));
}

// Hazard "stale store": a directory left from an earlier run is refused at
// OnTrainBegin, naming the directory and its newest epoch; the phase does
// not run on the old history, and the old epochs stay as they were.
TEST(PostTrainerHazards, AStoreFromAnEarlierRunIsRefused) {
  const std::string dir = testing::MakeTempDir("post_stale") + "/history";
  testing::Blobs train = testing::GaussianBlobs(800, 1);
  PostTrainCallbackOptions options;
  options.directory = dir;
  {
    nn::Sequential model = testing::BlobsMlp();
    auto task = std::make_shared<ToyTask>(testing::GaussianBlobs(400, 2),
                                          FastSettings());
    PostTrainCallback post(model, task, options);
    ASSERT_TRUE(post.OnTrainBegin().ok());
    Train(model, post, train);
    ASSERT_TRUE(post.OnTrainEnd().ok());
  }
  const std::string before = testing::ReadFileBytes(dir + "/MANIFEST");
  // A leftover temporary file, which opening a store for writing removes:
  // the refused store is not even opened for writing.
  testing::WriteFileBytes(dir + "/MANIFEST.tmp", "leftover");
  nn::Sequential model = testing::BlobsMlp();
  auto task =
      std::make_shared<ToyTask>(testing::GaussianBlobs(400, 2), FastSettings());
  PostTrainCallback again(model, task, options);
  absl::Status begin = again.OnTrainBegin();
  EXPECT_EQ(begin.code(), absl::StatusCode::kFailedPrecondition) << begin;
  EXPECT_TRUE(absl::StrContains(begin.message(), dir)) << begin;
  EXPECT_TRUE(absl::StrContains(begin.message(), "newest epoch 6")) << begin;
  std::vector<absl::Status> errors;
  Train(model, again, train, &errors);
  EXPECT_FALSE(errors.back().ok());  // every snapshot is refused, loudly
  absl::Status end = again.OnTrainEnd();
  EXPECT_FALSE(end.ok());
  EXPECT_EQ(again.result(), nullptr);
  EXPECT_EQ(task->calls, "");  // the phase never ran
  EXPECT_EQ(testing::ReadFileBytes(dir + "/MANIFEST"), before);
  EXPECT_EQ(testing::ReadFileBytes(dir + "/MANIFEST.tmp"), "leftover");
}

// Hazard "stale store", second half: before mining, the newest stored
// training epoch must hold the model the PostTrainer was given: bit for
// bit for a lossless codec, within the recorded error for lossy.
TEST(PostTrainerHazards, AModelThatIsNotTheNewestEpochIsNamed) {
  for (pb::Codec codec : {pb::CODEC_DELTA, pb::CODEC_LOSSY}) {
    for (bool trained_on : {false, true}) {
      const std::string dir = testing::MakeTempDir("post_newest") + "/h";
      nn::Sequential model = testing::BlobsMlp();
      testing::Blobs train = testing::GaussianBlobs(800, 1);
      PostTrainCallbackOptions options;
      options.directory = dir;
      options.history.store.codec = codec;
      auto task = std::make_shared<ToyTask>(testing::GaussianBlobs(400, 2),
                                            FastSettings());
      PostTrainCallback post(model, task, options);
      ASSERT_TRUE(post.OnTrainBegin().ok());
      Train(model, post, train);
      if (trained_on) {  // a step after the last recorded epoch
        torch::NoGradGuard g;
        model->parameters()[0].add_(0.5);
      }
      absl::Status end = post.OnTrainEnd();
      const std::string what =
          pb::Codec_Name(codec) + (trained_on ? " trained on" : " as recorded");
      if (!trained_on) {
        EXPECT_TRUE(end.ok()) << what << ": " << end;
        continue;
      }
      EXPECT_EQ(end.code(), absl::StatusCode::kFailedPrecondition) << what;
      EXPECT_TRUE(absl::StrContains(end.message(), "newest training epoch 5"))
          << what << ": " << end;
      EXPECT_TRUE(absl::StrContains(end.message(), dir)) << end;
      EXPECT_TRUE(absl::StrContains(end.message(), "'0.weight'")) << end;
      EXPECT_EQ(task->calls, "") << what;
    }
  }
}

// Hazard "early architecture check": a regression target that feeds a
// Conv2d fails at OnTrainBegin, before the first batch, naming the layer;
// so does the task's own check.
TEST(PostTrainerHazards, AnUncuttableModelFailsBeforeTraining) {
  torch::manual_seed(3);
  nn::Sequential model(nn::Conv2d(nn::Conv2dOptions(1, 4, 3)), nn::ReLU(),
                       nn::Conv2d(nn::Conv2dOptions(4, 4, 6)), nn::Flatten());
  PostTrainCallbackOptions options;
  options.directory = testing::MakeTempDir("post_arch") + "/history";
  auto task =
      std::make_shared<ToyTask>(testing::GaussianBlobs(40, 2), FastSettings());
  PostTrainCallback post(model, task, options);
  absl::Status s = post.OnTrainBegin();
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "Conv2d '2'")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "p = 1")) << s;

  nn::Sequential mlp = testing::BlobsMlp();
  auto failing =
      std::make_shared<ToyTask>(testing::GaussianBlobs(40, 2), FastSettings());
  failing->check_status = absl::InvalidArgumentError("toy: needs 5 classes");
  options.directory = testing::MakeTempDir("post_arch") + "/history";
  PostTrainCallback post2(mlp, failing, options);
  s = post2.OnTrainBegin();
  EXPECT_TRUE(absl::StrContains(s.message(), "toy: needs 5 classes")) << s;
  // Bad settings are named too.
  PipelineOptions bad = FastSettings();
  bad.slicer.q = 0;
  auto bad_task = std::make_shared<ToyTask>(testing::GaussianBlobs(40, 2), bad);
  options.directory = testing::MakeTempDir("post_arch") + "/history";
  PostTrainCallback post3(mlp, bad_task, options);
  s = post3.OnTrainBegin();
  EXPECT_TRUE(absl::StrContains(s.message(), "slicer.q")) << s;
  bad = FastSettings();
  bad.tuner.seed = 9;
  bad.seed = 3;
  auto seed_task =
      std::make_shared<ToyTask>(testing::GaussianBlobs(40, 2), bad);
  options.directory = testing::MakeTempDir("post_arch") + "/history";
  PostTrainCallback post4(mlp, seed_task, options);
  s = post4.OnTrainBegin();
  EXPECT_TRUE(absl::StrContains(s.message(), "tuner.seed")) << s;
}

// The guard on a tuning run that really loses accuracy (not a forced
// rejection): the model stays bit for bit, nothing is stored, the report
// says why.
TEST(PostTrainerHazards, TuningThatLosesAccuracyIsRejected) {
  const std::string dir = testing::MakeTempDir("post_guard") + "/history";
  nn::Sequential model = testing::BlobsMlp();
  testing::Blobs train = testing::GaussianBlobs(800, 1);
  PipelineOptions settings = FastSettings();
  settings.tuner.learning_rates = {1e-1, 1e-2};
  settings.slice = false;
  auto task =
      std::make_shared<ToyTask>(testing::GaussianBlobs(400, 2), settings,
                                /*garbage=*/true);
  PostTrainCallbackOptions options;
  options.directory = dir;
  PostTrainCallback post(model, task, options);
  ASSERT_TRUE(post.OnTrainBegin().ok());
  Train(model, post, train);
  post.recorder().Flush().IgnoreError();
  const NamedTensors trained = *CopyModuleState(*model);
  ASSERT_TRUE(post.OnTrainEnd().ok());
  const PipelineResult* r = post.result();
  ASSERT_NE(r, nullptr);
  EXPECT_FALSE(r->tune.accepted);
  ASSERT_EQ(r->tune.trials.size(), 2u);
  for (const LearningRateTrial& t : r->tune.trials) {
    EXPECT_GT(t.best_epoch, 0);  // the regression loss did improve
    EXPECT_LT(t.guard_accuracy, r->tune.guard_accuracy_before - 0.02)
        << t.lr;  // and accuracy really fell
    EXPECT_FALSE(t.passes_guard);
  }
  EXPECT_TRUE(SameState(*CopyModuleState(*model), trained));
  EXPECT_TRUE(absl::StrContains(post.post_trainer().report_markdown(),
                                "Original model kept"));
  auto store = HistoryStore::OpenReadOnly(dir);
  EXPECT_EQ((*store)->Epochs().size(), 6u);
}

// A report directory that cannot be written fails OnTrainEnd, but keeps
// the result and says that the model holds the tuned weights.
TEST(PostTrainCallback, AFailedReportKeepsTheResultAndSaysSo) {
  nn::Sequential model = testing::BlobsMlp();
  auto task =
      std::make_shared<ToyTask>(testing::GaussianBlobs(400, 2), FastSettings());
  PostTrainCallbackOptions options;
  options.directory = testing::MakeTempDir("ptc_report") + "/history";
  options.phase.report_dir = options.directory + "/no/such/dir";
  PostTrainCallback post(model, task, options);
  ASSERT_TRUE(post.OnTrainBegin().ok());
  Train(model, post, testing::GaussianBlobs(800, 1));
  absl::Status end = post.OnTrainEnd();
  EXPECT_FALSE(end.ok());
  ASSERT_NE(post.result(), nullptr);
  ASSERT_TRUE(post.result()->tune.accepted);
  EXPECT_TRUE(
      absl::StrContains(end.message(), "the model holds the tuned weights"))
      << end;
  EXPECT_TRUE(absl::StrContains(end.message(), "no/such/dir")) << end;
}

TEST(PostTrainCallback, BadOptionsAndNonWriterRanks) {
  nn::Sequential model = testing::BlobsMlp();
  auto task =
      std::make_shared<ToyTask>(testing::GaussianBlobs(40, 2), FastSettings());
  PostTrainCallbackOptions options;
  EXPECT_TRUE(absl::StrContains(
      PostTrainCallback(model, task, options).OnTrainBegin().message(),
      "directory"));
  options.directory = testing::MakeTempDir("ptc_bad") + "/h";
  EXPECT_TRUE(absl::StrContains(
      PostTrainCallback(model, nullptr, options).OnTrainBegin().message(),
      "no task"));
  options.profiler.save_path = "/tmp/x.pb";
  EXPECT_TRUE(absl::StrContains(
      PostTrainCallback(model, task, options).OnTrainBegin().message(),
      "save_path"));
  // A rank that is not the writer profiles but neither records nor runs
  // the phase.
  options.profiler.save_path.clear();
  options.history.is_writer = false;
  options.profile_file.clear();
  PostTrainCallback other_rank(model, task, options);
  ASSERT_TRUE(other_rank.OnTrainBegin().ok());
  Train(model, other_rank, testing::GaussianBlobs(800, 1));
  EXPECT_TRUE(other_rank.OnTrainEnd().ok());
  EXPECT_EQ(task->calls, "");
  EXPECT_NE(other_rank.profiler()->profile(), nullptr);
}

TEST(ProgressBar, PlainLinesAndATerminalLine) {
  double now = 0;
  for (bool terminal : {false, true}) {
    std::FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    ProgressBarOptions o;
    o.out = f;
    o.terminal = terminal;
    o.interval_seconds = 10;
    o.redraw_seconds = 0;
    o.clock = [&] { return now; };
    {
      ProgressBar bar(o);
      now = 0;
      for (int i = 0; i <= 40; ++i) {
        now = i;  // 1 s per batch
        bar.Update({"epoch 0", i, 40, "batches"});
      }
      now = 50;
      bar.Update({"tuning", 5, 20, "epochs"});
      now = 60;
      bar.Update({"tuning", 10, 20, "epochs"});
    }
    const std::string out = ReadAndClose(f);
    EXPECT_TRUE(absl::StrContains(out, "epoch 0: 40/40 batches, done in 40s"))
        << out;
    EXPECT_TRUE(absl::StrContains(out, "tuning: 10/20 epochs, 1 epochs/s, ETA"))
        << out;
    if (terminal) {
      EXPECT_TRUE(absl::StrContains(out, "\r\033[K")) << out;
      EXPECT_TRUE(absl::StrContains(out,
                                    "epoch 0: 20/40 batches, 1 batches/s, "
                                    "ETA 20s"))
          << out;
    } else {
      EXPECT_FALSE(absl::StrContains(out, "\r")) << out;
      // Start, every 10 s, end: 0, 10, 20, 30, 40; then two tuning lines.
      int lines = 0;
      for (char c : out) lines += c == '\n';
      EXPECT_EQ(lines, 7) << out;
    }
  }
}

TEST(PostTrainCallback, ReportsProgressOfTrainingAndOfThePhase) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  ProgressBarOptions o;
  o.out = f;
  o.terminal = false;
  ProgressBar bar(o);
  nn::Sequential model = testing::BlobsMlp();
  auto task =
      std::make_shared<ToyTask>(testing::GaussianBlobs(400, 2), FastSettings());
  PostTrainCallbackOptions options;
  options.directory = testing::MakeTempDir("ptc_progress") + "/h";
  options.progress = &bar;
  PostTrainCallback post(model, task, options);
  ASSERT_TRUE(post.OnTrainBegin().ok());
  Train(model, post, testing::GaussianBlobs(800, 1));
  ASSERT_TRUE(post.OnTrainEnd().ok());
  const std::string out = ReadAndClose(f);
  for (const char* want :
       {"epoch 0: 16/16 batches, done", "epoch 5: 16/16 batches, done",
        "slicing: 400/400 inputs, done", "tuning: 8/8 epochs, done",
        "evaluation: 3/3 evaluations, done"}) {
    EXPECT_TRUE(absl::StrContains(out, want)) << want << "\n" << out;
  }
}

}  // namespace
}  // namespace posttrain

// Dare as a post-training task, end to end through the one callback.
#include "robustness/dare.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "common/module_state.h"
#include "hooks/post_train_callback.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

DareOptions SmallDare(const std::string& variant) {
  testing::Blobs train = testing::GaussianBlobs(800, 1),
                 val = testing::GaussianBlobs(800, 2);
  DareOptions dare;
  dare.variant = variant;
  dare.validation = {val.x, val.y};
  dare.slice_data = {train.x, train.y};
  dare.pipeline.tuner.max_epochs = 5;
  dare.pipeline.tuner.learning_rates = {1e-2, 1e-3};
  return dare;
}

// Trains the MLP 6 epochs with the one callback around Dare.
std::unique_ptr<PostTrainCallback> TrainWithDare(nn::Sequential& model,
                                                 const std::string& dir,
                                                 const DareOptions& dare,
                                                 absl::Status* end) {
  auto task = MakeDareTask(dare);
  EXPECT_TRUE(task.ok()) << task.status();
  if (!task.ok()) return nullptr;
  PostTrainCallbackOptions options;
  options.directory = dir;
  options.profiler.every_n_batches = 2;
  auto post =
      std::make_unique<PostTrainCallback>(model, std::move(*task), options);
  EXPECT_TRUE(post->OnTrainBegin().ok());
  testing::Blobs train = testing::GaussianBlobs(800, 1);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(2e-2));
  for (int epoch = 0; epoch < 6; ++epoch) {
    model->train();
    for (int64_t b = 0; b < 800; b += 50) {
      at::Tensor xb = train.x.narrow(0, b, 50), yb = train.y.narrow(0, b, 50);
      adam.zero_grad();
      nn::functional::cross_entropy(model->forward(xb), yb).backward();
      adam.step();
      EXPECT_TRUE(post->OnBatchEnd({xb, yb}).ok());
    }
    EXPECT_TRUE(post->OnEpochEnd(epoch, {}).ok());
  }
  *end = post->OnTrainEnd();
  return post;
}

TEST(DareTask, MinesTheHistoryTunesStoresAndReports) {
  const std::string dir = testing::MakeTempDir("dare") + "/history";
  nn::Sequential model = testing::BlobsMlp();
  DareOptions dare = SmallDare("dare");
  dare.pipeline.tuner.max_accuracy_drop = 1.0;  // accept, to check storage
  absl::Status s;
  auto post = TrainWithDare(model, dir, dare, &s);
  ASSERT_TRUE(s.ok()) << s;
  const PipelineResult* r = post->result();
  ASSERT_NE(r, nullptr);
  EXPECT_TRUE(r->profile_online);
  EXPECT_GT(r->augmentation.figures.at("T"), 0);
  EXPECT_EQ(r->augmentation.figures.at("D"), 720);             // 90% of 800
  EXPECT_EQ(r->augmentation.figures.at("history_epochs"), 3);  // ceil(6/2)
  ASSERT_TRUE(r->tune.accepted) << r->tune.reason;
  ASSERT_EQ(r->slices.size(), 4u);
  const std::string json = testing::ReadFileBytes(dir + "/report.json");
  for (const char* want :
       {"\"task\": \"dare\"", "\"accepted\": true", "\"variant\": \"dare\"",
        "\"p\": 1", "\"q\": 95", "\"seed\": 1", "\"max_slice_inputs\": 10000",
        "\"guard_fraction\": 0.1", "\"mining\": \"algorithm 1\""}) {
    EXPECT_TRUE(absl::StrContains(json, want)) << want << "\n" << json;
  }
  // The improved model is the store's new, marked epoch; the layer above
  // M_T ("4") is the final epoch's, bit for bit.
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  const auto epochs = (*store)->Epochs();
  ASSERT_EQ(epochs.size(), 7u);
  EXPECT_TRUE(epochs.back().metrics().contains(kPostTrainMetric));
  auto improved = (*store)->ReadEpoch(6);
  auto last = (*store)->ReadEpoch(5);
  NamedTensors now = *CopyModuleState(*model);
  bool changed = false;
  for (size_t i = 0; i < now.size(); ++i) {
    EXPECT_TRUE(torch::equal(now[i].tensor, (*improved)[i].tensor));
    if (absl::StartsWith(now[i].name, "4.")) {
      EXPECT_TRUE(torch::equal(now[i].tensor, (*last)[i].tensor));
    } else {
      changed |= !torch::equal(now[i].tensor, (*last)[i].tensor);
    }
  }
  EXPECT_TRUE(changed);
}

// A model trained with Dare's callback, its stored history, and a fresh
// Dare task over them, for calling the task's steps one by one.
class DareSteps : public ::testing::Test {
 protected:
  // Trains, opens the history and makes the task from `options`.
  void Start(const std::string& name, const DareOptions& options) {
    const std::string dir = testing::MakeTempDir(name) + "/history";
    model_ = testing::BlobsMlp();
    absl::Status s;
    post_ = TrainWithDare(model_, dir, SmallDare("dare"), &s);
    ASSERT_TRUE(s.ok()) << s;
    auto store = HistoryStore::OpenReadOnly(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto task = MakeDareTask(options);
    ASSERT_TRUE(task.ok()) << task.status();
    task_ = *std::move(task);
    ctx_.model = model_;
    ctx_.history = store_.get();
  }

  nn::Sequential model_{nullptr};
  std::unique_ptr<PostTrainCallback> post_;
  std::unique_ptr<HistoryStore> store_;
  std::unique_ptr<PostTrainTask> task_;
  TaskContext ctx_;
};

// Augment drops its copy of D when slicing has its own data (memory);
// a second Augment on the same task splits again and mines the same T.
TEST_F(DareSteps, AugmentTwiceMinesTheSameSet) {
  ASSERT_NO_FATAL_FAILURE(Start("dare_twice", SmallDare("dare")));
  auto first = task_->Augment(ctx_, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  auto plan = task_->PlanSlicing(ctx_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto second = task_->Augment(ctx_, 1);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_GT(first->train.size(), 0);
  EXPECT_TRUE(torch::equal(first->train.inputs, second->train.inputs));
  EXPECT_TRUE(torch::equal(first->train.references, second->train.references));
  EXPECT_TRUE(
      torch::equal(first->validation.inputs, second->validation.inputs));
  for (const char* f : {"T", "D", "guard_T", "T/D"}) {
    EXPECT_EQ(first->figures.at(f), second->figures.at(f)) << f;
  }
}

// Augment keeps its copy of D only when slicing needs it: without
// slice_data, slicing reads the mined split, all of it.
TEST_F(DareSteps, WithoutSliceDataSlicingReadsTheMinedSplitAfterAugment) {
  DareOptions options = SmallDare("dare");
  options.slice_data = LabelledData();
  ASSERT_NO_FATAL_FAILURE(Start("dare_noslice", options));
  auto augmented = task_->Augment(ctx_, 1);
  ASSERT_TRUE(augmented.ok()) << augmented.status();
  auto plan = task_->PlanSlicing(ctx_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(static_cast<double>(plan->inputs.size(0)),
            augmented->figures.at("D"));
}

TEST(DareTask, EveryVariantRuns) {
  for (const std::string& variant : DareVariantNames()) {
    const std::string dir =
        testing::MakeTempDir("dare_" + variant) + "/history";
    nn::Sequential model = testing::BlobsMlp();
    absl::Status s;
    auto post = TrainWithDare(model, dir, SmallDare(variant), &s);
    ASSERT_TRUE(s.ok()) << variant << ": " << s;
    const PipelineResult* r = post->result();
    ASSERT_NE(r, nullptr) << variant;
    EXPECT_EQ(r->task, variant);
    EXPECT_EQ(r->slices.empty(),
              variant == "dare_no_slice" || variant == "dare_no_transform")
        << variant;
    EXPECT_EQ(r->settings.tuner.p, variant == "dare_last" ? 0 : 1);
    EXPECT_EQ(r->settings.transform, variant != "dare_no_transform");
  }
}

// Hazard "presets": a variant never silently replaces a setting the user
// made. dare keeps the user's p = 2 (and the report says so); dare_last
// (p = 0) against an explicit p = 2 is an error naming both.
TEST(DareTask, VariantsNeverOverrideTheUsersSettings) {
  const std::string dir = testing::MakeTempDir("dare_presets") + "/history";
  nn::Sequential model = testing::BlobsMlp();
  DareOptions dare = SmallDare("dare");
  dare.pipeline.tuner.p = 2;
  dare.pipeline.seed = 5;
  absl::Status end;
  auto post = TrainWithDare(model, dir, dare, &end);
  ASSERT_TRUE(end.ok()) << end;
  EXPECT_EQ(post->result()->settings.tuner.p, 2);
  EXPECT_EQ(post->result()->settings.tuner.seed, 5u);  // one seed
  const std::string json = testing::ReadFileBytes(dir + "/report.json");
  EXPECT_TRUE(absl::StrContains(json, "\"p\": 2")) << json;
  EXPECT_TRUE(absl::StrContains(json, "\"seed\": 5")) << json;

  dare.variant = "dare_last";
  auto conflict = MakeDareTask(dare);
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(conflict.status().message(),
                                "variant 'dare_last' presets tuner.p = 0, "
                                "but tuner.p = 2"))
      << conflict.status();
  dare.variant = "dare_no_slice";
  dare.pipeline.tuner.p = 1;
  dare.pipeline.slice = true;  // the default: takes the preset
  auto preset = MakeDareTask(dare);
  ASSERT_TRUE(preset.ok()) << preset.status();
  EXPECT_FALSE((*preset)->settings().slice);
}

TEST(DareTask, BadOptionsAreNamed) {
  DareOptions dare = SmallDare("dare_plus");
  EXPECT_TRUE(absl::StrContains(MakeDareTask(dare).status().message(),
                                "unknown Dare variant 'dare_plus'"));
  dare.variant = "dare";
  dare.guard_fraction = 1.5;
  EXPECT_TRUE(absl::StrContains(MakeDareTask(dare).status().message(),
                                "guard_fraction"));
  dare.guard_fraction = 0.1;
  dare.validation = {};
  EXPECT_TRUE(
      absl::StrContains(MakeDareTask(dare).status().message(), "validation"));
  // Checked against the model before training: labels beyond its outputs,
  // inputs of another shape.
  nn::Sequential model = testing::BlobsMlp();
  dare = SmallDare("dare");
  dare.validation.labels = dare.validation.labels + 2;
  auto task = MakeDareTask(dare);
  ASSERT_TRUE(task.ok());
  absl::Status s = (*task)->Check(model);
  EXPECT_TRUE(absl::StrContains(s.message(), "class label 5")) << s;
  dare = SmallDare("dare");
  dare.validation.inputs = torch::rand({800, 7});
  task = MakeDareTask(dare);
  ASSERT_TRUE(task.ok());
  s = (*task)->Check(model);
  EXPECT_TRUE(absl::StrContains(s.message(), "800x7")) << s;
}

}  // namespace
}  // namespace posttrain

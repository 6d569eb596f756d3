#include "hooks/post_trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "common/module_state.h"
#include "robustness/dare.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

struct Data {
  at::Tensor x, y;
};
// Four overlapping Gaussian blobs in 6-D: hard enough that the history
// disagrees with the final model on some samples.
Data Blobs(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  at::Tensor y = torch::randint(0, 4, {n}, gen, torch::kLong);
  at::Tensor centers = torch::eye(4, 6) * 1.5;
  return {(centers.index_select(0, y) + torch::randn({n, 6}, gen))
              .to(torch::kFloat),
          y};
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Trains with recorder, profiler and post-trainer; returns the post-trainer.
std::shared_ptr<PostTrainer> TrainWithDare(nn::Sequential& model,
                                           const std::string& dir,
                                           PostTrainerOptions post,
                                           absl::Status* end_status,
                                           bool post_trainer_first = false,
                                           absl::Status* begin_status = nullptr,
                                           pb::Codec codec = pb::CODEC_DELTA) {
  Data train = Blobs(800, 1), val = Blobs(800, 2);
  HistoryRecorderOptions recorder_options;
  recorder_options.store.codec = codec;
  auto recorder =
      std::make_shared<HistoryRecorder>(model, dir, recorder_options);
  SliceProfilerOptions profile_options;
  profile_options.every_n_batches = 2;
  auto profiler = std::make_shared<SliceProfiler>(model, profile_options);
  post.validation = {val.x, val.y};
  post.slice_data = {train.x, train.y};
  post.pipeline.tuner.max_epochs = 5;
  post.pipeline.tuner.learning_rates = {1e-2, 1e-3};
  auto trainer = std::make_shared<PostTrainer>(model, recorder, profiler, post);
  CallbackList callbacks;
  if (post_trainer_first) {
    callbacks = CallbackList({trainer, recorder, profiler});
  } else {
    callbacks = CallbackList({recorder, profiler, trainer});
  }
  const absl::Status begin = callbacks.OnTrainBegin();
  if (begin_status != nullptr) {
    *begin_status = begin;
  } else {
    EXPECT_TRUE(begin.ok()) << begin;
  }
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(2e-2));
  for (int epoch = 0; epoch < 6; ++epoch) {
    model->train();
    for (int64_t b = 0; b < 800; b += 50) {
      at::Tensor xb = train.x.narrow(0, b, 50), yb = train.y.narrow(0, b, 50);
      adam.zero_grad();
      nn::functional::cross_entropy(model->forward(xb), yb).backward();
      adam.step();
      EXPECT_TRUE(callbacks.OnBatchEnd({xb, yb}).ok());
    }
    EXPECT_TRUE(callbacks.OnEpochEnd(epoch, {}).ok());
  }
  *end_status = callbacks.OnTrainEnd();
  return trainer;
}

nn::Sequential Mlp() {
  torch::manual_seed(7);
  return nn::Sequential(nn::Linear(6, 32), nn::ReLU(), nn::Linear(32, 16),
                        nn::ReLU(), nn::Linear(16, 4));
}

TEST(PostTrainer, RunsDareAtTrainEndReportsAndStoresTheModel) {
  const std::string dir = testing::MakeTempDir("post") + "/history";
  nn::Sequential model = Mlp();
  PostTrainerOptions post;
  post.pipeline.tuner.max_accuracy_drop = 1.0;  // accept, to check storage
  absl::Status s;
  auto trainer = TrainWithDare(model, dir, post, &s);
  ASSERT_TRUE(s.ok()) << s;
  const PipelineResult* r = trainer->result();
  ASSERT_NE(r, nullptr);
  EXPECT_TRUE(r->profile_online);
  EXPECT_GT(r->augmentation.figures.at("T"), 0);
  EXPECT_EQ(r->augmentation.figures.at("D"), 720);  // 90% of 800
  ASSERT_TRUE(r->tune.accepted) << r->tune.reason;
  ASSERT_EQ(r->slices.size(), 4u);
  // report.json / report.md next to the history.
  const std::string json = ReadAll(dir + "/report.json");
  EXPECT_TRUE(absl::StrContains(json, "\"variant\": \"dare\"")) << json;
  EXPECT_TRUE(absl::StrContains(json, "\"accepted\": true")) << json;
  EXPECT_TRUE(absl::StrContains(ReadAll(dir + "/report.md"), "guard accuracy"));
  // The improved model is the store's new, marked epoch, and equals the
  // model; the layer above M_T ("4") is the final epoch's, bit for bit.
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

TEST(PostTrainer, GuardRejectionKeepsTheModelAndSaysSo) {
  const std::string dir = testing::MakeTempDir("post_guard") + "/history";
  nn::Sequential model = Mlp();
  PostTrainerOptions post;
  post.pipeline.tuner.max_accuracy_drop = -1.0;  // nothing can pass
  absl::Status s;
  auto trainer = TrainWithDare(model, dir, post, &s);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_FALSE(trainer->result()->tune.accepted);
  EXPECT_TRUE(
      absl::StrContains(trainer->report_markdown(), "Original model kept"));
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_EQ((*store)->Epochs().size(), 6u);  // nothing stored
  auto last = (*store)->ReadEpoch(5);
  NamedTensors now = *CopyModuleState(*model);
  for (size_t i = 0; i < now.size(); ++i) {
    EXPECT_TRUE(torch::equal(now[i].tensor, (*last)[i].tensor)) << now[i].name;
  }
}

TEST(PostTrainer, EveryVariantRunsAndUnknownOnesAreNamed) {
  for (const std::string& variant : DareVariantNames()) {
    const std::string dir =
        testing::MakeTempDir("post_" + variant) + "/history";
    nn::Sequential model = Mlp();
    PostTrainerOptions post;
    post.variant = variant;
    absl::Status s;
    auto trainer = TrainWithDare(model, dir, post, &s);
    ASSERT_TRUE(s.ok()) << variant << ": " << s;
    const PipelineResult* r = trainer->result();
    ASSERT_NE(r, nullptr) << variant;
    EXPECT_EQ(r->slices.empty(),
              variant == "dare_no_slice" || variant == "dare_no_transform")
        << variant;
    if (variant == "dare_random") {
      EXPECT_EQ(r->augmentation.figures.at("T/D"), 1.0);
    }
  }
  // Bad options are reported before training starts.
  nn::Sequential model = Mlp();
  const std::string dir = testing::MakeTempDir("post_bad") + "/h";
  auto recorder = std::make_shared<HistoryRecorder>(model, dir);
  ASSERT_TRUE(recorder->OnTrainBegin().ok());
  Data val = Blobs(100, 3);
  PostTrainerOptions post;
  post.validation = {val.x, val.y};
  post.variant = "dare_plus";
  PostTrainer bad_variant(model, recorder, nullptr, post);
  absl::Status s = bad_variant.OnTrainBegin();
  EXPECT_TRUE(
      absl::StrContains(s.message(), "unknown Dare variant 'dare_plus'"))
      << s;
  post.variant = "dare";
  post.guard_fraction = 1.5;
  EXPECT_TRUE(absl::StrContains(
      PostTrainer(model, recorder, nullptr, post).OnTrainBegin().message(),
      "guard_fraction"));
  post.guard_fraction = 0.1;
  post.validation = {};
  EXPECT_TRUE(absl::StrContains(
      PostTrainer(model, recorder, nullptr, post).OnTrainBegin().message(),
      "validation"));
  EXPECT_TRUE(absl::StrContains(
      PostTrainer(model, nullptr, nullptr, post).OnTrainBegin().message(),
      "HistoryRecorder"));
}

// Hazard "order": the PostTrainer first in the list. It flushes the
// recorder's pending writes before reading the history: the final training
// epoch keeps its number and the improved model comes after it.
TEST(PostTrainerHazards, AnyOrderOfTheListKeepsTheFinalEpoch) {
  const std::string dir = testing::MakeTempDir("post_order") + "/history";
  nn::Sequential model = Mlp();
  PostTrainerOptions post;
  post.pipeline.tuner.max_accuracy_drop = 1.0;  // accept, to check storage
  absl::Status begin, end;
  auto trainer = TrainWithDare(model, dir, post, &end,
                               /*post_trainer_first=*/true, &begin);
  ASSERT_TRUE(begin.ok()) << begin;
  ASSERT_TRUE(end.ok()) << end;
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
// OnTrainBegin, naming the directory and its newest epoch; the phase then
// does not run on the old history.
TEST(PostTrainerHazards, AStoreFromAnEarlierRunIsRefused) {
  const std::string dir = testing::MakeTempDir("post_stale") + "/history";
  {
    nn::Sequential model = Mlp();
    PostTrainerOptions post;
    absl::Status end;
    TrainWithDare(model, dir, post, &end);
    ASSERT_TRUE(end.ok()) << end;
  }
  nn::Sequential model = Mlp();
  PostTrainerOptions post;
  absl::Status begin, end;
  auto trainer = TrainWithDare(model, dir, post, &end, false, &begin);
  EXPECT_FALSE(begin.ok());
  EXPECT_TRUE(absl::StrContains(begin.message(), dir)) << begin;
  EXPECT_TRUE(absl::StrContains(begin.message(), "epoch 5")) << begin;
  EXPECT_FALSE(end.ok());
  EXPECT_EQ(trainer->result(), nullptr);
}

// Hazard "stale store", second half: before mining, the newest stored
// training epoch must hold the model the PostTrainer was given.
TEST(PostTrainerHazards, AModelThatIsNotTheNewestEpochIsNamed) {
  for (pb::Codec codec : {pb::CODEC_DELTA, pb::CODEC_LOSSY}) {
    const std::string dir = testing::MakeTempDir("post_newest") + "/history";
    nn::Sequential model = Mlp();
    PostTrainerOptions post;
    absl::Status end;
    // Lossy: the stored epoch is the model within the recorded error.
    TrainWithDare(model, dir, post, &end, false, nullptr, codec);
    ASSERT_TRUE(end.ok()) << pb::Codec_Name(codec) << ": " << end;
  }
  const std::string dir = testing::MakeTempDir("post_newest") + "/history";
  nn::Sequential model = Mlp();
  Data train = Blobs(200, 1), val = Blobs(200, 2);
  auto recorder = std::make_shared<HistoryRecorder>(model, dir);
  PostTrainerOptions post;
  post.validation = {val.x, val.y};
  auto trainer = std::make_shared<PostTrainer>(model, recorder, nullptr, post);
  CallbackList callbacks({recorder, trainer});
  ASSERT_TRUE(callbacks.OnTrainBegin().ok());
  for (int epoch = 0; epoch < 3; ++epoch) {
    testing::SimulateEpoch(model, epoch);
    ASSERT_TRUE(callbacks.OnEpochEnd(epoch, {}).ok());
  }
  testing::SimulateEpoch(model, 99);  // trained on, never recorded
  const absl::Status s = callbacks.OnTrainEnd();
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "epoch 2")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), dir)) << s;
  EXPECT_EQ(trainer->result(), nullptr);
}

// Hazard "early architecture check": a regression target that feeds a
// Conv2d fails at OnTrainBegin, before the first batch, naming the layer.
TEST(PostTrainerHazards, AnUncuttableModelFailsBeforeTraining) {
  const std::string dir = testing::MakeTempDir("post_arch") + "/history";
  torch::manual_seed(3);
  nn::Sequential model(nn::Conv2d(nn::Conv2dOptions(1, 4, 3)), nn::ReLU(),
                       nn::Conv2d(nn::Conv2dOptions(4, 3, 6)), nn::Flatten());
  auto recorder = std::make_shared<HistoryRecorder>(model, dir);
  auto profiler = std::make_shared<SliceProfiler>(model);
  PostTrainerOptions post;
  at::Tensor x = torch::rand({20, 1, 8, 8});
  post.validation = {x, torch::randint(0, 3, {20}, torch::kLong)};
  auto trainer = std::make_shared<PostTrainer>(model, recorder, profiler, post);
  CallbackList callbacks({recorder, profiler, trainer});
  const absl::Status s = callbacks.OnTrainBegin();
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "Conv2d '2'")) << s;
}

// Hazard "presets": a variant never silently replaces a setting the user
// made. dare keeps the user's p; dare_last (p = 0) against an explicit
// p = 2 is an error naming the setting.
TEST(PostTrainerHazards, VariantsNeverOverrideTheUsersSettings) {
  const std::string dir = testing::MakeTempDir("post_presets") + "/history";
  nn::Sequential model = Mlp();
  PostTrainerOptions post;
  post.pipeline.tuner.p = 2;
  absl::Status end;
  auto trainer = TrainWithDare(model, dir, post, &end);
  ASSERT_TRUE(end.ok()) << end;
  const std::string json = ReadAll(dir + "/report.json");
  EXPECT_TRUE(absl::StrContains(json, "\"p\": 2")) << json;

  nn::Sequential model2 = Mlp();
  const std::string dir2 = testing::MakeTempDir("post_presets") + "/history";
  post.variant = "dare_last";
  absl::Status begin;
  TrainWithDare(model2, dir2, post, &end, false, &begin);
  EXPECT_FALSE(begin.ok());
  EXPECT_TRUE(absl::StrContains(begin.message(), "p")) << begin;
  EXPECT_TRUE(absl::StrContains(begin.message(), "dare_last")) << begin;
}

}  // namespace
}  // namespace posttrain

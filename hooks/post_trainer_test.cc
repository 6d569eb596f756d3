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
                                           absl::Status* end_status) {
  Data train = Blobs(800, 1), val = Blobs(800, 2);
  auto recorder = std::make_shared<HistoryRecorder>(model, dir);
  SliceProfilerOptions profile_options;
  profile_options.every_n_batches = 2;
  auto profiler = std::make_shared<SliceProfiler>(model, profile_options);
  post.validation = {val.x, val.y};
  post.slice_data = {train.x, train.y};
  post.pipeline.tuner.max_epochs = 5;
  post.pipeline.tuner.learning_rates = {1e-2, 1e-3};
  auto trainer = std::make_shared<PostTrainer>(model, recorder, profiler, post);
  CallbackList callbacks({recorder, profiler, trainer});
  EXPECT_TRUE(callbacks.OnTrainBegin().ok());
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

}  // namespace
}  // namespace posttrain

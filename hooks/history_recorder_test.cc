#include "hooks/history_recorder.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <thread>

#include "absl/strings/match.h"
#include "common/module_state.h"
#include "history/fault_injection_env.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

using ::posttrain::testing::DiffStates;
using ::posttrain::testing::MakeTempDir;
using ::posttrain::testing::SimulateEpoch;
using ::posttrain::testing::SmallCnn;

NamedTensors StateOf(const torch::nn::Sequential& m) {
  return *CopyModuleState(*m);
}

// Runs `epochs` epochs of `steps` batches through the recorder's events.
std::vector<NamedTensors> RunLoop(HistoryRecorder& recorder,
                                  torch::nn::Sequential& model, int64_t first,
                                  int64_t last, int steps) {
  std::vector<NamedTensors> truth;
  at::Tensor x = torch::zeros({2, 1, 8, 8}),
             y = torch::zeros({2}, torch::kLong);
  for (int64_t e = first; e <= last; ++e) {
    for (int i = 0; i < steps; ++i) {
      EXPECT_TRUE(recorder.OnBatchEnd({x, y}).ok());
    }
    SimulateEpoch(model, e);
    truth.push_back(StateOf(model));
    EXPECT_TRUE(recorder.OnEpochEnd(e, {{"loss", 0.5}}).ok());
  }
  return truth;
}

TEST(HistoryRecorder, RecordsEveryEpochAsyncBitExact) {
  const std::string dir = MakeTempDir("recorder");
  torch::nn::Sequential model = SmallCnn(2);
  HistoryRecorderOptions options;
  options.seed = 99;
  HistoryRecorder recorder(model, dir, options);
  ASSERT_TRUE(recorder.OnTrainBegin().ok());
  EXPECT_EQ(recorder.last_epoch(), -1);
  auto truth = RunLoop(recorder, model, 0, 4, 3);
  ASSERT_TRUE(recorder.OnTrainEnd().ok());
  EXPECT_EQ(recorder.snapshots_written(), 5u);
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  auto epochs = (*store)->Epochs();
  ASSERT_EQ(epochs.size(), 5u);
  for (int e = 0; e < 5; ++e) {
    EXPECT_EQ(epochs[e].step(), 3 * (e + 1));
    EXPECT_EQ(epochs[e].seed(), 99u);
    EXPECT_EQ(epochs[e].metrics().at("loss"), 0.5);
    EXPECT_EQ(DiffStates(*(*store)->ReadEpoch(e), truth[e]), "");
  }
}

TEST(HistoryRecorder, ResumeContinuesNumberingAndSteps) {
  const std::string dir = MakeTempDir("resume");
  torch::nn::Sequential model = SmallCnn(2);
  std::vector<NamedTensors> truth;
  {
    HistoryRecorder first(model, dir);
    ASSERT_TRUE(first.OnTrainBegin().ok());
    truth = RunLoop(first, model, 0, 2, 4);
    ASSERT_TRUE(first.OnTrainEnd().ok());
  }
  // Without `resume`, the store of the earlier run is refused, naming the
  // directory and its newest epoch, and left as it was.
  {
    HistoryRecorder fresh(model, dir);
    absl::Status s = fresh.OnTrainBegin();
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), dir)) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "newest epoch 2")) << s;
    EXPECT_FALSE(fresh.OnEpochEnd(3, {}).ok());
  }
  // The loop restarts from its own checkpoint of epoch 2, resuming.
  HistoryRecorderOptions resume;
  resume.resume = true;
  HistoryRecorder second(model, dir, resume);
  ASSERT_TRUE(second.OnTrainBegin().ok());
  EXPECT_EQ(second.last_epoch(), 2);
  EXPECT_EQ(second.last_step(), 12);
  // Replaying an epoch that is stored is refused; nothing is overwritten.
  absl::Status replay = second.OnEpochEnd(1, {});
  EXPECT_EQ(replay.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(replay.message(), "never overwritten"))
      << replay;
  auto more = RunLoop(second, model, 3, 4, 4);
  ASSERT_TRUE(second.OnTrainEnd().ok());
  truth.insert(truth.end(), more.begin(), more.end());
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  auto epochs = (*store)->Epochs();
  ASSERT_EQ(epochs.size(), 5u);
  for (int e = 0; e < 5; ++e) {
    EXPECT_EQ(epochs[e].epoch(), e);
    EXPECT_EQ(epochs[e].step(), 4 * (e + 1));
    EXPECT_EQ(DiffStates(*(*store)->ReadEpoch(e), truth[e]), "") << e;
  }
}

TEST(HistoryRecorder, WriterErrorSurfacesLaterAndTrainingGoesOn) {
  const std::string dir = MakeTempDir("errors");
  FaultInjectionEnv env(Env::Default());
  torch::nn::Sequential model = SmallCnn(2);
  HistoryRecorderOptions options;
  options.store.env = &env;
  options.max_pending = 1;
  HistoryRecorder recorder(model, dir, options);
  ASSERT_TRUE(recorder.OnTrainBegin().ok());
  RunLoop(recorder, model, 0, 0, 1);
  ASSERT_TRUE(recorder.OnTrainEnd().ok());  // flushes epoch 0
  env.SetWriteBudget(10);                   // the disk is full
  SimulateEpoch(model, 1);
  EXPECT_TRUE(recorder.OnEpochEnd(1, {}).ok());  // queued; fails in background
  for (int i = 0; i < 2000 && recorder.snapshots_failed() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(recorder.snapshots_failed(), 1u);
  env.ClearFaults();
  SimulateEpoch(model, 2);
  NamedTensors e2 = StateOf(model);
  // The next event returns the background failure; epoch 2 is still queued.
  absl::Status s = recorder.OnEpochEnd(2, {});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "epoch 1")) << s;
  // OnTrainEnd reports the run's first failure again.
  absl::Status end = recorder.OnTrainEnd();
  EXPECT_EQ(end.code(), absl::StatusCode::kResourceExhausted) << end;
  EXPECT_TRUE(absl::StrContains(end.message(), "epoch 1")) << end;
  EXPECT_EQ(recorder.snapshots_written(), 2u);
  EXPECT_EQ(recorder.snapshots_failed(), 1u);
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok());
  auto epochs = (*store)->Epochs();
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_EQ(epochs[1].epoch(), 2);
  EXPECT_EQ(DiffStates(*(*store)->ReadEpoch(2), e2), "");
}

// Hazard "errors, not exceptions": a writer thread that cannot start is an
// error of OnTrainBegin, not an exception in the loop.
TEST(HistoryRecorder, AFailedThreadStartIsAnError) {
  const std::string dir = MakeTempDir("thread");
  torch::nn::Sequential model = SmallCnn(4);
  FaultInjectionEnv env(Env::Default());
  env.SetFailThreadStart(true);
  HistoryRecorderOptions options;
  options.store.env = &env;
  HistoryRecorder recorder(model, dir, options);
  absl::Status s = recorder.OnTrainBegin();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "thread")) << s;
  EXPECT_FALSE(recorder.OnEpochEnd(0, {}).ok());
  EXPECT_FALSE(recorder.OnTrainEnd().ok());
  // Synchronous writing needs no thread.
  options.async = false;
  HistoryRecorder sync(model, MakeTempDir("thread_sync"), options);
  EXPECT_TRUE(sync.OnTrainBegin().ok());
  EXPECT_TRUE(sync.OnEpochEnd(0, {}).ok());
}

TEST(HistoryRecorder, SyncModeReturnsTheErrorAtOnce) {
  const std::string dir = MakeTempDir("sync");
  FaultInjectionEnv env(Env::Default());
  torch::nn::Sequential model = SmallCnn(2);
  HistoryRecorderOptions options;
  options.store.env = &env;
  options.async = false;
  HistoryRecorder recorder(model, dir, options);
  ASSERT_TRUE(recorder.OnTrainBegin().ok());
  env.SetShortWrites(true);
  absl::Status s = recorder.OnEpochEnd(0, {});
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_EQ(recorder.last_epoch(), -1);  // the failed epoch is not taken
  env.ClearFaults();
  EXPECT_TRUE(recorder.OnEpochEnd(0, {}).ok());  // retried once space is back
  EXPECT_TRUE(recorder.OnEpochEnd(1, {}).ok());
  EXPECT_EQ(recorder.OnTrainEnd().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(recorder.snapshots_written(), 2u);
  EXPECT_EQ(recorder.snapshots_failed(), 1u);
}

// A model trained on a GPU is snapshotted to CPU tensors and loads back onto
// the GPU bit for bit.
TEST(HistoryRecorder, SnapshotsAndLoadsCudaModels) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "needs a CUDA build of LibTorch and a GPU (run on the "
                    "device machine; Debian's LibTorch is CPU-only)";
  }
  const std::string dir = MakeTempDir("cuda");
  torch::nn::Sequential model = SmallCnn(5);
  model->to(torch::kCUDA);
  HistoryRecorder recorder(model, dir);
  ASSERT_TRUE(recorder.OnTrainBegin().ok());
  auto truth = RunLoop(recorder, model, 0, 2, 2);
  ASSERT_TRUE(recorder.OnTrainEnd().ok());
  torch::nn::Sequential loaded = SmallCnn(6);
  loaded->to(torch::kCUDA);
  ASSERT_TRUE(recorder.store()->LoadEpoch(1, *loaded).ok());
  EXPECT_TRUE(loaded->parameters()[0].is_cuda());
  EXPECT_EQ(DiffStates(StateOf(loaded), truth[1]), "");
}

TEST(HistoryRecorder, UnsupportedModelAndNonWriterRanks) {
  const std::string dir = MakeTempDir("unsupported");
  torch::nn::Sequential model(torch::nn::Linear(2, 2), torch::nn::Softmax(1));
  HistoryRecorder recorder(model, dir);
  absl::Status s = recorder.OnTrainBegin();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "layer '1'")) << s;
  // Later events report the same problem instead of crashing.
  EXPECT_FALSE(recorder.OnEpochEnd(0, {}).ok());
  // An empty holder is an error too, not an exception.
  HistoryRecorder empty(torch::nn::Sequential(nullptr), dir + "/empty");
  EXPECT_EQ(empty.OnTrainBegin().code(), absl::StatusCode::kInvalidArgument);

  HistoryRecorderOptions other_rank;
  other_rank.is_writer = false;
  const std::string dir2 = MakeTempDir("rank1");
  torch::nn::Sequential cnn = SmallCnn();
  HistoryRecorder passive(cnn, dir2 + "/store", other_rank);
  EXPECT_TRUE(passive.OnTrainBegin().ok());
  EXPECT_TRUE(passive.OnEpochEnd(0, {}).ok());
  EXPECT_TRUE(passive.OnTrainEnd().ok());
  EXPECT_FALSE(Env::Default()->FileExists(dir2 + "/store"));
}

}  // namespace
}  // namespace posttrain

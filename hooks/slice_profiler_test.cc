#include "hooks/slice_profiler.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "common/module_state.h"
#include "slicer/slicer.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;
using ::posttrain::testing::DiffStates;
using ::posttrain::testing::MakeTempDir;
using ::posttrain::testing::SmallCnn;

// A CNN with Dropout and no BatchNorm: with learning rate 0 nothing in it
// changes while the loop trains (BatchNorm would update its running
// statistics in train mode).
nn::Sequential FrozenCnn() {
  torch::manual_seed(3);
  return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 4, 3).padding(1)),
                        nn::ReLU(), nn::MaxPool2d(2), nn::Dropout(0.5),
                        nn::Flatten(), nn::Linear(4 * 4 * 4, 16), nn::ReLU(),
                        nn::Dropout(0.3), nn::Linear(16, 3));
}

// The user's loop: train mode, cross entropy, SGD, the callback's events.
void Train(nn::Sequential& model, Callback& callback, const at::Tensor& x,
           const at::Tensor& y, int epochs, double lr, int64_t batch) {
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(lr));
  ASSERT_TRUE(callback.OnTrainBegin().ok());
  for (int epoch = 0; epoch < epochs; ++epoch) {
    model->train();
    ASSERT_TRUE(callback.OnEpochBegin(epoch).ok());
    for (int64_t b = 0; b < x.size(0); b += batch) {
      at::Tensor xb = x.narrow(0, b, std::min(batch, x.size(0) - b));
      at::Tensor yb = y.narrow(0, b, xb.size(0));
      sgd.zero_grad();
      at::Tensor logits = model->forward(xb);
      at::Tensor loss = torch::nn::functional::cross_entropy(logits, yb);
      loss.backward();
      sgd.step();
      ASSERT_TRUE(callback.OnBatchEnd({xb, yb, logits.detach()}).ok());
    }
    ASSERT_TRUE(callback.OnEpochEnd(epoch, {}).ok());
  }
}

void ExpectClose(const at::Tensor& a, const at::Tensor& b, double rel) {
  ASSERT_EQ(a.sizes(), b.sizes());
  const double err = (a - b).abs().max().item<double>();
  const double scale = std::max(b.abs().max().item<double>(), 1e-12);
  EXPECT_LE(err / scale, rel) << "max abs error " << err;
}

TEST(SliceProfiler, OnlineProfileOfAFrozenModelEqualsTheOfflineProfile) {
  nn::Sequential model = FrozenCnn();
  torch::manual_seed(5);
  at::Tensor x = torch::rand({200, 1, 8, 8});
  at::Tensor y = torch::randint(0, 3, {200}, torch::kLong);
  SliceProfilerOptions options;
  options.every_n_batches = 1;
  SliceProfiler profiler(model, options);
  Train(model, profiler, x, y, /*epochs=*/2, /*lr=*/0.0, /*batch=*/32);
  ASSERT_TRUE(profiler.OnTrainEnd().ok());
  // The user's mode (train, every submodule) is back.
  for (const auto& m : model->modules()) EXPECT_TRUE(m->is_training());
  const Profile* online = profiler.profile();
  ASSERT_NE(online, nullptr);
  EXPECT_EQ(online->num_criteria(), 3);  // one per output by default
  EXPECT_EQ(online->count(), 200);       // the last epoch only
  EXPECT_EQ(profiler.profiled_batches(), 7);
  auto offline = ProfileModel(model, x, y, 3, /*batch_size=*/64);
  ASSERT_TRUE(offline.ok()) << offline.status();
  EXPECT_TRUE(torch::equal(online->counts(), offline->counts()));
  ExpectClose(online->sums(), offline->sums(), 1e-6);
  // A non-zero learning rate moves the model, and the profiles part.
  nn::Sequential moving = FrozenCnn();
  SliceProfiler moving_profiler(moving, options);
  Train(moving, moving_profiler, x, y, 2, /*lr=*/0.5, 32);
  auto final_offline = ProfileModel(moving, x, y, 3);
  const double diff =
      (moving_profiler.profile()->sums() - final_offline->sums())
          .abs()
          .max()
          .item<double>();
  EXPECT_GT(diff, 1e-3);
}

TEST(SliceProfiler, SamplesEveryNthBatchAndRestartsEachEpoch) {
  nn::Sequential model = FrozenCnn();
  at::Tensor x = torch::rand({100, 1, 8, 8});
  at::Tensor y = torch::randint(0, 3, {100}, torch::kLong);
  SliceProfilerOptions options;
  options.every_n_batches = 3;
  options.sampling = SliceProfilerOptions::Sampling::kEveryNth;
  SliceProfiler profiler(model, options);
  // 10 batches of 10: batches 0, 3, 6 and 9 are profiled.
  Train(model, profiler, x, y, 1, 0.0, 10);
  EXPECT_EQ(profiler.profiled_batches(), 4);
  EXPECT_EQ(profiler.profile()->count(), 40);
  Train(model, profiler, x, y, 1, 0.0, 10);  // a second epoch restarts
  EXPECT_EQ(profiler.profile()->count(), 40);
  // Batches 0, 3, 6, 9 of the data: the profile is theirs (to float
  // rounding: one batch of 40 and four of 10 may round differently, as
  // PyTorch 2.x's CPU kernels do; other batches would differ by far more).
  std::vector<at::Tensor> picked;
  for (int b : {0, 3, 6, 9})
    picked.push_back(torch::arange(b * 10, b * 10 + 10));
  at::Tensor rows = torch::cat(picked);
  auto offline =
      ProfileModel(model, x.index_select(0, rows), y.index_select(0, rows), 3);
  ASSERT_TRUE(offline.ok());
  ExpectClose(profiler.profile()->sums(), offline->sums(), 1e-6);
  // The tail policy: the first epoch samples every 3rd batch; then the last
  // ceil(10 / 3) = 4 batches of each epoch (6, 7, 8, 9).
  SliceProfilerOptions tail_options = options;
  tail_options.sampling = SliceProfilerOptions::Sampling::kEpochTail;
  SliceProfiler tail(model, tail_options);
  Train(model, tail, x, y, 1, 0.0, 10);
  EXPECT_EQ(tail.profile()->count(), 40);
  Train(model, tail, x, y, 1, 0.0, 10);
  EXPECT_EQ(tail.profiled_batches(), 4);
  auto tail_offline =
      ProfileModel(model, x.narrow(0, 60, 40), y.narrow(0, 60, 40), 3);
  ExpectClose(tail.profile()->sums(), tail_offline->sums(), 1e-6);
  // Accumulating over the run instead.
  options.restart_each_epoch = false;
  SliceProfiler whole_run(model, options);
  Train(model, whole_run, x, y, 2, 0.0, 10);
  EXPECT_EQ(whole_run.profile()->count(), 80);
}

TEST(SliceProfiler, FinalEpochProfilesOnlyTheLastEpochAndTheSameBatches) {
  torch::manual_seed(7);
  nn::Sequential model = SmallCnn();
  at::Tensor x = torch::rand({120, 1, 8, 8});
  at::Tensor y = torch::randint(0, 3, {120}, torch::kLong);
  // The criteria function runs once per profiled batch: it counts them.
  int every_epoch_calls = 0, final_calls = 0;
  SliceProfilerOptions every;
  every.every_n_batches = 4;
  every.num_criteria = 3;
  every.criteria = [&](const BatchEnd& b) {
    ++every_epoch_calls;
    return b.targets;
  };
  SliceProfilerOptions last = every;
  last.final_epoch = 2;
  last.criteria = [&](const BatchEnd& b) {
    ++final_calls;
    return b.targets;
  };
  auto a = std::make_shared<SliceProfiler>(model, every);
  auto b = std::make_shared<SliceProfiler>(model, last);
  CallbackList both({a, b});
  // Three epochs of 12 batches, the model moving (lr 0.1).
  Train(model, both, x, y, /*epochs=*/3, /*lr=*/0.1, /*batch=*/10);
  ASSERT_TRUE(both.OnTrainEnd().ok());
  // Epoch 0 samples every 4th batch (3), epochs 1 and 2 their last
  // ceil(12 / 4) = 3 batches: 9 in all; final_epoch = 2 profiles only
  // epoch 2's tail, which is epoch 2's first tail batch too.
  EXPECT_EQ(every_epoch_calls, 9);
  EXPECT_EQ(final_calls, 3);
  ASSERT_NE(a->profile(), nullptr);
  ASSERT_NE(b->profile(), nullptr);
  EXPECT_TRUE(torch::equal(a->profile()->sums(), b->profile()->sums()));
  EXPECT_TRUE(torch::equal(a->profile()->counts(), b->profile()->counts()));
}

TEST(SliceProfiler, FinalEpochNotReachedLeavesNoProfileAndNoError) {
  nn::Sequential model = FrozenCnn();
  at::Tensor x = torch::rand({40, 1, 8, 8});
  at::Tensor y = torch::randint(0, 3, {40}, torch::kLong);
  SliceProfilerOptions options;
  options.final_epoch = 5;  // the loop stops early, after epoch 1
  SliceProfiler profiler(model, options);
  Train(model, profiler, x, y, /*epochs=*/2, 0.0, 10);
  EXPECT_TRUE(profiler.OnTrainEnd().ok());
  EXPECT_EQ(profiler.profile(), nullptr);
  // A loop that calls only OnEpochEnd: the epoch after OnEpochEnd(4) is 5.
  SliceProfiler no_begin(model, options);
  ASSERT_TRUE(no_begin.OnTrainBegin().ok());
  for (int64_t epoch = 3; epoch <= 5; ++epoch) {
    for (int64_t i = 0; i < 4; ++i) {
      ASSERT_TRUE(no_begin
                      .OnBatchEnd({x.narrow(0, 10 * i, 10),
                                   y.narrow(0, 10 * i, 10), at::Tensor()})
                      .ok());
    }
    // Only epoch 5, the last, is profiled (the first epoch of a run
    // without OnEpochBegin counts as 0).
    EXPECT_EQ(no_begin.profile() != nullptr, epoch == 5) << epoch;
    ASSERT_TRUE(no_begin.OnEpochEnd(epoch, {}).ok());
  }
  ASSERT_TRUE(no_begin.OnTrainEnd().ok());
  ASSERT_NE(no_begin.profile(), nullptr);
  EXPECT_EQ(no_begin.profile()->count(), 10);  // the tail: ceil(4 / 32) = 1
}

TEST(SliceProfiler, LeavesBatchNormStatisticsAndModesAlone) {
  nn::Sequential model = SmallCnn(4);
  model->train();
  model[1]->eval();  // a frozen BatchNorm the user keeps in eval mode
  auto before = CopyModuleState(*model);
  SliceProfilerOptions options;
  options.every_n_batches = 1;
  SliceProfiler profiler(model, options);
  ASSERT_TRUE(profiler.OnTrainBegin().ok());
  at::Tensor x = torch::rand({8, 1, 8, 8});
  at::Tensor y = torch::randint(0, 3, {8}, torch::kLong);
  ASSERT_TRUE(profiler.OnBatchEnd({x, y}).ok());
  auto after = CopyModuleState(*model);
  EXPECT_EQ(DiffStates(*before, *after), "");
  EXPECT_TRUE(model->is_training());
  EXPECT_FALSE(model[1]->is_training());
  EXPECT_TRUE(model[6]->is_training());
}

TEST(SliceProfiler, GroupCriteriaAllReduceAndSave) {
  nn::Sequential model = FrozenCnn();
  at::Tensor x = torch::rand({60, 1, 8, 8});
  at::Tensor y = torch::randint(0, 3, {60}, torch::kLong);
  at::Tensor groups = torch::arange(60) % 2;  // e.g. a protected attribute
  const std::string dir = MakeTempDir("profiler");
  SliceProfilerOptions options;
  options.every_n_batches = 1;
  options.num_criteria = 2;
  // The batch's rows are found by their first pixel, as a user would look
  // up a group column.
  options.criteria = [&](const BatchEnd& b) {
    at::Tensor key = b.inputs.reshape({b.inputs.size(0), -1}).select(1, 0);
    at::Tensor all = x.reshape({60, -1}).select(1, 0);
    return groups.index_select(
        0, key.unsqueeze(1).eq(all).to(torch::kLong).argmax(1));
  };
  int reduce_calls = 0;
  options.all_reduce = [&](at::Tensor& sums, at::Tensor& counts) {
    ++reduce_calls;  // two identical ranks
    sums.mul_(2);
    counts.mul_(2);
    return absl::OkStatus();
  };
  options.save_path = dir + "/profile.pb";
  SliceProfiler profiler(model, options);
  Train(model, profiler, x, y, 1, 0.0, 20);
  ASSERT_TRUE(profiler.OnTrainEnd().ok());
  EXPECT_EQ(reduce_calls, 1);
  const Profile* p = profiler.profile();
  EXPECT_EQ(p->count(), 120);
  EXPECT_EQ(p->criterion_count(0), 60);
  auto offline = ProfileModel(model, x, groups, 2);
  ExpectClose(*p->CriterionMean(1, 1), *offline->CriterionMean(1, 1), 1e-9);
  std::ifstream in(options.save_path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  pb::Profile proto;
  ASSERT_TRUE(proto.ParseFromString(bytes.str()));
  auto loaded = Profile::FromProto(proto);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(torch::equal(loaded->sums(), p->sums()));
}

TEST(SliceProfiler, ErrorsAreClear) {
  // An unsupported layer is named.
  nn::Sequential softmax(nn::Linear(2, 2), nn::Softmax(1));
  SliceProfiler bad_model(softmax);
  absl::Status s = bad_model.OnTrainBegin();
  EXPECT_TRUE(absl::StrContains(s.message(), "layer '1'")) << s;
  // NaN activations name the point.
  nn::Sequential model = FrozenCnn();
  SliceProfiler profiler(model);
  ASSERT_TRUE(profiler.OnTrainBegin().ok());
  at::Tensor nan = torch::full({4, 1, 8, 8}, NAN);
  at::Tensor y = torch::zeros({4}, torch::kLong);
  s = profiler.OnBatchEnd({nan, y});
  EXPECT_TRUE(absl::StrContains(s.message(), "NaN")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "point '0'")) << s;
  // No batch profiled: OnTrainEnd says so.
  SliceProfiler idle(model);
  EXPECT_EQ(idle.OnTrainEnd().code(), absl::StatusCode::kFailedPrecondition);
  // Criterion ids out of range, or of the wrong length.
  SliceProfilerOptions options;
  options.criteria = [](const BatchEnd&) {
    return torch::zeros({2}, torch::kLong);
  };
  SliceProfiler short_ids(model, options);
  s = short_ids.OnBatchEnd({torch::rand({4, 1, 8, 8}), y});
  EXPECT_TRUE(absl::StrContains(s.message(), "one criterion id per sample"))
      << s;
  SliceProfiler labels(model);
  s = labels.OnBatchEnd({torch::rand({4, 1, 8, 8}), torch::full({4}, 7L)});
  EXPECT_TRUE(absl::StrContains(s.message(), "criterion ids")) << s;
  // A failing all-reduce is reported with its cause.
  SliceProfilerOptions failing;
  failing.all_reduce = [](at::Tensor&, at::Tensor&) {
    return absl::UnavailableError("rank 3 is gone");
  };
  SliceProfiler reduced(model, failing);
  ASSERT_TRUE(reduced.OnBatchEnd({torch::rand({4, 1, 8, 8}), y}).ok());
  s = reduced.OnTrainEnd();
  EXPECT_TRUE(absl::StrContains(s.message(), "rank 3 is gone")) << s;
  // Saving into a missing directory names the path.
  SliceProfilerOptions unsaved;
  unsaved.save_path = "/nonexistent/dir/profile.pb";
  SliceProfiler saver(model, unsaved);
  ASSERT_TRUE(saver.OnBatchEnd({torch::rand({4, 1, 8, 8}), y}).ok());
  s = saver.OnTrainEnd();
  EXPECT_TRUE(absl::StrContains(s.message(), "/nonexistent/dir")) << s;
}

TEST(SliceProfiler, ProfilesCudaModelsOnTheCpu) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "needs a CUDA build of LibTorch and a GPU (run on the "
                    "device machine; Debian's LibTorch is CPU-only)";
  }
  nn::Sequential model = FrozenCnn();
  at::Tensor x = torch::rand({64, 1, 8, 8});
  at::Tensor y = torch::randint(0, 3, {64}, torch::kLong);
  auto cpu = ProfileModel(model, x, y, 3);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  model->to(torch::kCUDA);
  SliceProfilerOptions options;
  options.every_n_batches = 1;
  SliceProfiler profiler(model, options);
  Train(model, profiler, x.to(torch::kCUDA), y.to(torch::kCUDA), 1, 0.0, 16);
  ASSERT_TRUE(profiler.OnTrainEnd().ok());
  ASSERT_TRUE(profiler.profile()->sums().device().is_cpu());
  ExpectClose(profiler.profile()->sums(), cpu->sums(), 1e-4);  // TF32 etc.
  // Slicing the CUDA model (CPU inputs are moved to it) agrees with slicing
  // its CPU twin, up to Δy signs that float rounding may flip.
  auto offline = ProfileModel(model, x, y, 3);
  ASSERT_TRUE(offline.ok()) << offline.status();
  EXPECT_EQ(offline->count(), 64);
  auto view = ModelView::Create(model);
  auto gpu_slices = SliceCriteria(*view, *offline, x, y, {0, 1, 2}, {});
  ASSERT_TRUE(gpu_slices.ok()) << gpu_slices.status();
  nn::Sequential twin = FrozenCnn();  // same seed, same weights
  auto twin_view = ModelView::Create(twin);
  auto cpu_slices = SliceCriteria(*twin_view, *cpu, x, y, {0, 1, 2}, {});
  ASSERT_TRUE(cpu_slices.ok()) << cpu_slices.status();
  EXPECT_GE(*KeySynapseJaccard(*gpu_slices, *cpu_slices), 0.99);
}

}  // namespace
}  // namespace posttrain

// The adversarial-training baselines as post-training tasks.
#include "robustness/adversarial_training.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "tests/test_util.h"
#include "tuner/pipeline.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

// The blobs moved into [0, 1], where the attacks work.
LabelledData Blobs01(int64_t n, uint64_t seed) {
  testing::Blobs b = testing::GaussianBlobs(n, seed);
  return {((b.x + 3) / 7.5).clamp(0, 1), b.y};
}

nn::Sequential Trained(const LabelledData& train) {
  nn::Sequential model = testing::BlobsMlp();
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(2e-2));
  for (int step = 0; step < 200; ++step) {
    adam.zero_grad();
    nn::functional::cross_entropy(model->forward(train.inputs), train.labels)
        .backward();
    adam.step();
  }
  return model;
}

TEST(AdversarialTraining, EveryMethodTunesOnExamplesCraftedAgainstM) {
  const LabelledData train = Blobs01(800, 1), val = Blobs01(600, 2);
  const nn::Sequential original = Trained(train);
  auto clean = Accuracy(original, train.inputs, train.labels);
  ASSERT_TRUE(clean.ok());
  ASSERT_GT(*clean, 0.7);
  for (const std::string& method : AdversarialTrainingNames()) {
    AdversarialTrainingOptions at;
    at.method = method;
    at.train = train;
    at.validation = val;
    at.samples = 300;
    at.validation_samples = 40;
    at.linf.epsilon = 0.1;
    at.jsma.gamma = 0.5;  // 3 of the 6 features
    at.pipeline.tuner.max_epochs = 3;
    at.pipeline.tuner.learning_rates = {1e-2, 1e-3};
    auto task = MakeAdversarialTrainingTask(at);
    ASSERT_TRUE(task.ok()) << task.status();
    nn::Sequential model(
        std::dynamic_pointer_cast<nn::SequentialImpl>(original->clone()));
    TaskContext ctx;
    ctx.model = model;
    // The tuning set: `samples` images that M gets wrong far more often.
    ASSERT_TRUE((*task)->MakeGuard(ctx).ok());
    auto aug = (*task)->Augment(ctx, 1);
    ASSERT_TRUE(aug.ok()) << method << ": " << aug.status();
    EXPECT_EQ(aug->train.size(), 300) << method;
    EXPECT_EQ(aug->validation.size(), 40) << method;
    auto adv_acc = Accuracy(model, aug->train.inputs, aug->train.labels);
    ASSERT_TRUE(adv_acc.ok());
    EXPECT_LT(*adv_acc, *clean - 0.1) << method;
    EXPECT_GE(aug->train.inputs.min().item<double>(), 0.0);
    EXPECT_LE(aug->train.inputs.max().item<double>(), 1.0);
    // The whole phase: cross-entropy on every parameter, under the guard.
    auto r = RunPipeline(**task, ctx);
    ASSERT_TRUE(r.ok()) << method << ": " << r.status();
    EXPECT_EQ(r->task, method);
    EXPECT_FALSE(r->settings.slice);
    EXPECT_FALSE(r->settings.transform);
    EXPECT_TRUE(r->slices.empty());
    EXPECT_EQ(r->augmentation.figures.at("T"), 300);
    EXPECT_LE(r->tune.guard_accuracy_before - r->tune.guard_accuracy_after,
              0.02 + 1e-12)
        << method;
    // The L∞ baselines tune: accepted, with a lower cross-entropy on the
    // crafted validation set, and the weights moved.
    if (method == "fgsm_at" || method == "pgd_at") {
      EXPECT_TRUE(r->tune.accepted) << method << ": " << r->tune.reason;
      EXPECT_LT(r->tune.validation_loss_after, r->tune.validation_loss_before)
          << method;
      EXPECT_FALSE(
          torch::equal(model->parameters()[0], original->parameters()[0]))
          << method;
    }
    bool recorded = false;
    for (const auto& [k, v] : (*task)->Describe()) {
      if (k == "crafting") recorded = absl::StrContains(v, "\"attack\"");
    }
    EXPECT_TRUE(recorded) << method;
  }
  {  // No samples (Dare mined none): the phase keeps the original.
    AdversarialTrainingOptions none;
    none.method = "fgsm_at";
    none.train = train;
    none.validation = val;
    none.samples = 0;
    auto task = MakeAdversarialTrainingTask(none);
    ASSERT_TRUE(task.ok());
    TaskContext ctx;
    ctx.model = nn::Sequential(
        std::dynamic_pointer_cast<nn::SequentialImpl>(original->clone()));
    auto r = RunPipeline(**task, ctx);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE(r->tune.accepted);
    EXPECT_TRUE(absl::StrContains(r->tune.reason, "0 training"))
        << r->tune.reason;
  }
  AdversarialTrainingOptions bad;
  bad.method = "trades";
  bad.train = train;
  bad.validation = val;
  EXPECT_TRUE(absl::StrContains(
      MakeAdversarialTrainingTask(bad).status().message(), "pgd_at"));
  bad.method = "pgd_at";
  bad.samples = -2;
  EXPECT_FALSE(MakeAdversarialTrainingTask(bad).ok());
  bad.samples = -1;
  bad.train = {};
  EXPECT_TRUE(absl::StrContains(
      MakeAdversarialTrainingTask(bad).status().message(), "`train`"));
}

// The guard split is a pure function of the data, the fraction and the seed.
TEST(AdversarialTraining, GuardSplitIsSeeded) {
  const LabelledData val = Blobs01(100, 3);
  auto a = SplitForGuard(val, 0.1, 7), b = SplitForGuard(val, 0.1, 7),
       c = SplitForGuard(val, 0.1, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->guard.inputs.size(0), 10);
  EXPECT_EQ(a->rest.inputs.size(0), 90);
  EXPECT_TRUE(torch::equal(a->guard.inputs, b->guard.inputs));
  EXPECT_FALSE(torch::equal(a->guard.inputs, c->guard.inputs));
  auto capped = SplitForGuard(val, 0.1, 7, 20);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->rest.inputs.size(0), 20);
  EXPECT_FALSE(SplitForGuard(val, 1.0, 7).ok());
}

}  // namespace
}  // namespace posttrain

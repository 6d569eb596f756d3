#include "slicer/profile.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "common/model_view.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

nn::Sequential Cnn() {
  torch::manual_seed(11);
  return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 4, 3).padding(1)),
                        nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(),
                        nn::Linear(64, 8), nn::ReLU(), nn::Linear(8, 3));
}

struct Fixture {
  nn::Sequential model = Cnn();
  ModelView view = *ModelView::Create(model);
  torch::Tensor x = torch::rand({12, 1, 8, 8});
  torch::Tensor labels =
      torch::tensor({0, 1, 2, 0, 1, 2, 0, 1, 2, 0, -1, -1}, torch::kLong);
};

TEST(Profile, MeansAreTheMeansOfTheRightActivations) {
  Fixture f;
  auto profile = Profile::Create(f.view, f.x.slice(0, 0, 1), 3);
  ASSERT_TRUE(profile.ok()) << profile.status();
  ASSERT_EQ(profile->num_points(), 4);  // inputs of 3 weighted layers + output
  EXPECT_EQ(profile->point(1).layer(), "4");
  EXPECT_EQ(profile->point(1).features(), 64);  // per position after Flatten
  EXPECT_EQ(profile->point(2).features(), 8);
  EXPECT_EQ(profile->point(3).layer(), "output");
  ASSERT_TRUE(profile->AddBatch(f.view, f.x, f.labels).ok());
  EXPECT_EQ(profile->count(), 12);
  EXPECT_EQ(profile->criterion_count(0), 4);
  EXPECT_EQ(profile->criterion_count(2), 3);

  torch::NoGradGuard g;
  auto h = f.model->forward(f.x);
  // Point 0: the image's single channel, averaged over positions.
  auto m0 = profile->Mean(0);
  ASSERT_TRUE(m0.ok());
  EXPECT_TRUE(torch::allclose(*m0, f.x.to(torch::kDouble).mean({0, 2, 3})));
  // Point 2: after the hidden ReLU; criterion 1 = samples 1, 4, 7.
  auto hidden =
      f.model[5]->as<nn::ReLU>()->forward(f.model[4]->as<nn::Linear>()->forward(
          f.model[3]->as<nn::Flatten>()->forward(
              f.model[2]->as<nn::MaxPool2d>()->forward(
                  f.model[1]->as<nn::ReLU>()->forward(
                      f.model[0]->as<nn::Conv2d>()->forward(f.x))))));
  auto c1 = profile->CriterionMean(2, 1);
  ASSERT_TRUE(c1.ok());
  auto idx = torch::tensor({1, 4, 7}, torch::kLong);
  EXPECT_TRUE(torch::allclose(
      *c1, hidden.index_select(0, idx).to(torch::kDouble).mean(0), 1e-6, 1e-7));
  // Output point: logits, no activation.
  auto m3 = profile->Mean(3);
  EXPECT_TRUE(torch::allclose(*m3, h.to(torch::kDouble).mean(0), 1e-6, 1e-7));
}

TEST(Profile, BatchesAndMergesAddUp) {
  Fixture f;
  auto whole = Profile::Create(f.view, f.x.slice(0, 0, 1), 3);
  auto a = Profile::Create(f.view, f.x.slice(0, 0, 1), 3);
  auto b = Profile::Create(f.view, f.x.slice(0, 0, 1), 3);
  ASSERT_TRUE(whole.ok() && a.ok() && b.ok());
  // Two batches into one profile, or into two that are merged: the same
  // additions, so the same bits. (One batch of 10 instead would differ in
  // the last float32 bits: BLAS blocks the products by batch size.)
  ASSERT_TRUE(
      whole->AddBatch(f.view, f.x.slice(0, 0, 5), f.labels.slice(0, 0, 5))
          .ok());
  ASSERT_TRUE(
      whole->AddBatch(f.view, f.x.slice(0, 5), f.labels.slice(0, 5)).ok());
  ASSERT_TRUE(
      a->AddBatch(f.view, f.x.slice(0, 0, 5), f.labels.slice(0, 0, 5)).ok());
  ASSERT_TRUE(b->AddBatch(f.view, f.x.slice(0, 5), f.labels.slice(0, 5)).ok());
  ASSERT_TRUE(a->Merge(*b).ok());
  EXPECT_TRUE(torch::equal(a->counts(), whole->counts()));
  EXPECT_TRUE(torch::equal(a->sums(), whole->sums()));
  auto one_batch = Profile::Create(f.view, f.x.slice(0, 0, 1), 3);
  ASSERT_TRUE(one_batch->AddBatch(f.view, f.x, f.labels).ok());
  EXPECT_TRUE(torch::allclose(a->sums(), one_batch->sums(), 1e-6, 1e-9));
  // Serialized and back: identical totals.
  auto back = Profile::FromProto(whole->ToProto());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(torch::equal(back->sums(), whole->sums()));
  EXPECT_TRUE(torch::equal(back->counts(), whole->counts()));
  // ... and it keeps profiling the same model.
  ASSERT_TRUE(back->AddBatch(f.view, f.x, f.labels).ok());
  EXPECT_EQ(back->count(), 24);
  EXPECT_TRUE(torch::allclose(*back->Mean(2), *whole->Mean(2)));
}

TEST(Profile, BadInputsGiveClearErrors) {
  Fixture f;
  auto p = Profile::Create(f.view, f.x.slice(0, 0, 1), 3);
  ASSERT_TRUE(p.ok());
  // A criterion without samples.
  ASSERT_TRUE(
      p->AddBatch(f.view, f.x.slice(0, 0, 2), f.labels.slice(0, 0, 2)).ok());
  auto none = p->CriterionMean(1, 2);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(none.status().message(), "criterion 2"));
  // Criterion ids out of range.
  EXPECT_FALSE(
      p->AddBatch(f.view, f.x.slice(0, 0, 1), torch::tensor({7}, torch::kLong))
          .ok());
  // NaN activations name the point.
  auto nan = f.x.slice(0, 0, 2).clone();
  nan[0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  absl::Status s = p->AddBatch(f.view, nan, f.labels.slice(0, 0, 2));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "NaN")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "point '0'")) << s;
  // Malformed serialized profiles.
  pb::Profile proto = p->ToProto();
  proto.mutable_sums()->RemoveLast();
  EXPECT_FALSE(Profile::FromProto(proto).ok());
  proto = p->ToProto();
  proto.set_version(5);
  EXPECT_FALSE(Profile::FromProto(proto).ok());
  // Declared sizes beyond the stored sums (which summed would overflow).
  proto = p->ToProto();
  proto.mutable_points(0)->set_features(std::numeric_limits<int64_t>::max());
  auto huge = Profile::FromProto(proto);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(huge.status().message(), "point '0'"))
      << huge.status();
  proto = p->ToProto();
  proto.set_num_criteria(std::numeric_limits<int32_t>::max());
  EXPECT_FALSE(Profile::FromProto(proto).ok());
  // Merging a profile of another model.
  nn::Sequential other(nn::Flatten(), nn::Linear(64, 3));
  auto other_view = ModelView::Create(other);
  auto q = Profile::Create(*other_view, f.x.slice(0, 0, 1), 3);
  ASSERT_TRUE(q.ok());
  EXPECT_FALSE(p->Merge(*q).ok());
}

}  // namespace
}  // namespace posttrain

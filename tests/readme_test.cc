// Runs the README's integration snippet (extracted at build time into
// readme_snippet.inc by tests/extract_examples.sh, so the test always runs
// exactly what the README shows) on a tiny MLP and blob data.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <utility>
#include <vector>

#include "fairness/fmt.h"
#include "fairness/tabular.h"
#include "fairness/tabular_schema.h"
#include "hooks/post_train_callback.h"
#include "robustness/dare.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;

TEST(Readme, TheIntegrationSnippetRunsOnATinyModel) {
  const std::string cwd = testing::MakeTempDir("readme");
  ASSERT_EQ(chdir(cwd.c_str()), 0);
  nn::Sequential model = testing::BlobsMlp();
  auto [train_images, train_labels] = testing::GaussianBlobs(800, 1);
  auto [val_images, val_labels] = testing::GaussianBlobs(400, 2);
  std::vector<std::pair<at::Tensor, at::Tensor>> batches;
  for (int64_t b = 0; b < 800; b += 50) {
    batches.emplace_back(train_images.narrow(0, b, 50),
                         train_labels.narrow(0, b, 50));
  }
  torch::optim::Adam optimizer(model->parameters(),
                               torch::optim::AdamOptions(2e-2));
  auto train_step = [&](const at::Tensor& x, const at::Tensor& y) {
    model->train();
    optimizer.zero_grad();
    at::Tensor l = nn::functional::cross_entropy(model->forward(x), y);
    l.backward();
    optimizer.step();
    return l.item<double>();
  };
  const int64_t epochs = 4;
  double loss = 0;
  auto snippet = [&]() -> absl::Status {
#include "readme_snippet.inc"
    return absl::OkStatus();
  };
  absl::Status s = snippet();
  ASSERT_TRUE(s.ok()) << s;
  // The phase ran and left its traces where the README says.
  const std::string dir = cwd + "/runs/my_model/history";
  EXPECT_TRUE(std::filesystem::exists(dir + "/report.json"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/report.md"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/profile.pb"));
  auto store = HistoryStore::OpenReadOnly(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_GE((*store)->Epochs().size(), 4u);
  EXPECT_EQ((*store)->Epochs()[3].epoch(), 3);
}

// The README's FMT snippet compiles (it reads Adult; the fairness tests
// and the example run the same calls).
[[maybe_unused]] void FmtSnippetCompiles(nn::Sequential& model,
                                         PostTrainCallbackOptions& options) {
#include "readme_fmt_snippet.inc"
}

}  // namespace
}  // namespace posttrain

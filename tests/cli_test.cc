// End-to-end test of the posttrain command-line tool on a real store.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "history/store.h"
#include "tests/test_util.h"

namespace posttrain {
namespace {

struct Result {
  int exit_code;
  std::string output;
};

Result RunTool(const std::string& args) {
  const std::string cmd = absl::StrCat(POSTTRAIN_CLI, " ", args, " 2>&1");
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(Cli, ListsVerifiesAndReportsDamage) {
  const std::string dir = testing::MakeTempDir("cli");
  pb::ModelSpec spec;
  spec.set_version(1);
  auto* l = spec.add_layers();
  l->set_name("0");
  l->set_kind(pb::LayerSpec::LINEAR);
  l->set_in_features(64);
  l->set_out_features(10);
  l->set_bias(true);
  {
    auto store = HistoryStore::Open(dir, {}, spec);
    ASSERT_TRUE(store.ok());
    for (int e = 0; e < 3; ++e) {
      EpochMetadata meta;
      meta.epoch = e;
      meta.step = 10 * e;
      meta.metrics = {{"val_acc", 0.5 + 0.1 * e}};
      ASSERT_TRUE((*store)->Append(meta, testing::SyntheticState(e)).ok());
    }
  }
  Result ls = RunTool("history ls " + dir);
  EXPECT_EQ(ls.exit_code, 0) << ls.output;
  EXPECT_TRUE(absl::StrContains(ls.output, "Linear(64, 10)")) << ls.output;
  EXPECT_TRUE(absl::StrContains(ls.output, "val_acc=0.7")) << ls.output;
  Result ok = RunTool("history verify " + dir);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_TRUE(absl::StrContains(ok.output, "3 epochs verified")) << ok.output;

  const std::string blob = JoinPath(dir, BlobFileName(1));
  testing::FlipByteAt(blob, testing::FileSize(blob) - 3);
  Result bad = RunTool("history verify " + dir);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(bad.output, "epoch-00000001.blob"))
      << bad.output;
  EXPECT_TRUE(absl::StrContains(bad.output, "epoch 1")) << bad.output;

  testing::WriteFileBytes(JoinPath(dir, "MANIFEST.tmp"), "x");
  Result gc = RunTool("history gc " + dir);
  EXPECT_EQ(gc.exit_code, 0) << gc.output;
  EXPECT_FALSE(Env::Default()->FileExists(JoinPath(dir, "MANIFEST.tmp")));
  EXPECT_EQ(RunTool("history frobnicate " + dir).exit_code, 2);
  EXPECT_EQ(RunTool("history ls " + dir + "/missing").exit_code, 2);
}

}  // namespace
}  // namespace posttrain

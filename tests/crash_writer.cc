// Helper of history/crash_test.cc: opens the store in argv[1] for writing and
// appends SyntheticState(e) for e = last + 1, last + 2, ... until killed.
// Prints "ready <last epoch>" once the store is open.
//
//   crash_writer DIR                 append until killed
//   crash_writer DIR PHASE N         pause (print "paused <last appended
//                                    epoch> <call>", then sleep) at the N-th
//                                    call of PHASE, so the killer lands there:
//     blob       creating or renaming an epoch blob
//     manifest   renaming the new MANIFEST in (before the rename, odd N; or
//                before the directory sync that follows, even N)
//     drop       removing a blob that retention dropped
//     posttrain  the MANIFEST rename of an epoch stored the way the
//                post-trainer stores its model (metric "posttrain")
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/match.h"
#include "common/model_spec.pb.h"
#include "history/fault_injection_env.h"
#include "history/store.h"
#include "tests/test_util.h"

namespace {

int64_t g_last_appended = -1;
bool g_posttrain_append = false;
bool g_opened =
    false;  // calls inside Open (its first MANIFEST, leftovers) do not count

// Pauses the process at the N-th call of a phase.
class PausingEnv : public posttrain::FaultInjectionEnv {
 public:
  PausingEnv(std::string phase, int n)
      : FaultInjectionEnv(posttrain::Env::Default()),
        phase_(std::move(phase)),
        n_(n) {}

  absl::StatusOr<std::unique_ptr<posttrain::WritableFile>> NewWritableFile(
      const std::string& path) override {
    if (phase_ == "blob" && absl::EndsWith(path, ".blob.tmp")) Hit(path);
    return FaultInjectionEnv::NewWritableFile(path);
  }
  absl::Status RenameFile(const std::string& from,
                          const std::string& to) override {
    if (phase_ == "blob" && absl::EndsWith(to, ".blob")) Hit(to);
    if (absl::EndsWith(to, "MANIFEST")) {
      if (phase_ == "manifest") Hit(to);
      if (phase_ == "posttrain" && g_posttrain_append) Hit(to);
      renamed_manifest_ = true;
    }
    return FaultInjectionEnv::RenameFile(from, to);
  }
  absl::Status RemoveFile(const std::string& path) override {
    if (phase_ == "drop" && absl::EndsWith(path, ".blob")) Hit(path);
    return FaultInjectionEnv::RemoveFile(path);
  }
  absl::Status SyncDir(const std::string& dir) override {
    if (phase_ == "manifest" && renamed_manifest_) Hit(dir);
    renamed_manifest_ = false;
    return FaultInjectionEnv::SyncDir(dir);
  }

 private:
  void Hit(const std::string& what) {
    if (!g_opened || ++count_ < n_) return;
    std::printf("paused %lld %s\n", static_cast<long long>(g_last_appended),
                what.c_str());
    std::fflush(stdout);
    for (;;) pause();
  }

  const std::string phase_;
  const int n_;
  int count_ = 0;
  bool renamed_manifest_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 4) {
    std::fprintf(stderr, "usage: crash_writer DIR [PHASE N]\n");
    return 2;
  }
  posttrain::pb::ModelSpec spec;
  spec.set_version(1);
  auto* layer = spec.add_layers();
  layer->set_name("0");
  layer->set_kind(posttrain::pb::LayerSpec::LINEAR);
  posttrain::HistoryOptions options;
  options.codec = posttrain::pb::CODEC_DELTA;
  options.keyframe_interval = 3;
  options.retention = posttrain::RetentionPolicy::KeepLast(6);
  std::unique_ptr<PausingEnv> env;
  int posttrain_every = 0;
  if (argc == 4) {
    env = std::make_unique<PausingEnv>(argv[2], std::atoi(argv[3]));
    options.env = env.get();
    if (std::strcmp(argv[2], "posttrain") == 0) posttrain_every = 3;
  }
  auto store = posttrain::HistoryStore::Open(argv[1], options, spec);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  g_last_appended = (*store)->last_epoch();
  g_opened = true;
  std::printf("ready %lld\n", static_cast<long long>(g_last_appended));
  std::fflush(stdout);
  for (int64_t e = (*store)->last_epoch() + 1; e < 1000000; ++e) {
    posttrain::EpochMetadata meta;
    meta.epoch = e;
    meta.step = e * 10;
    g_posttrain_append = posttrain_every > 0 && e % posttrain_every == 0;
    if (g_posttrain_append) meta.metrics[posttrain::kPostTrainMetric] = 1;
    absl::Status s =
        (*store)->Append(meta, posttrain::testing::SyntheticState(e, 4));
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
    g_last_appended = e;
  }
  return 0;
}

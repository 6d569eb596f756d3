// Helper of history/crash_test.cc: opens the store in argv[1] for writing and
// appends SyntheticState(e) for e = last + 1, last + 2, ... until killed.
// Prints "ready <last epoch>" once the store is open.
#include <cstdio>
#include <cstdlib>

#include "common/model_spec.pb.h"
#include "history/store.h"
#include "tests/test_util.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: crash_writer DIR\n");
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
  auto store = posttrain::HistoryStore::Open(argv[1], options, spec);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  std::printf("ready %lld\n", static_cast<long long>((*store)->last_epoch()));
  std::fflush(stdout);
  for (int64_t e = (*store)->last_epoch() + 1; e < 1000000; ++e) {
    posttrain::EpochMetadata meta;
    meta.epoch = e;
    meta.step = e * 10;
    absl::Status s =
        (*store)->Append(meta, posttrain::testing::SyntheticState(e, 4));
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  return 0;
}

// posttrain: the command-line tool.
//
//   posttrain history ls DIR       epochs of a history store, with metadata
//   posttrain history verify DIR   read every epoch and check every checksum
//   posttrain history gc DIR       remove leftovers of an interrupted writer
//
// Exit status: 0 on success, 1 when the store is damaged or unreadable,
// 2 on a usage error. The post-training subcommands come with the tuner.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/model_spec.h"
#include "history/store.h"

namespace {

using posttrain::HistoryStore;

int Usage() {
  std::fprintf(stderr,
               "usage: posttrain history ls|verify|gc DIR\n"
               "  ls      list the epochs of a history store\n"
               "  verify  read every epoch and check every checksum\n"
               "  gc      remove files left by an interrupted writer\n");
  return 2;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

const char* CodecName(posttrain::pb::Codec c) {
  switch (c) {
    case posttrain::pb::CODEC_RAW:
      return "raw";
    case posttrain::pb::CODEC_ZSTD:
      return "zstd";
    case posttrain::pb::CODEC_DELTA:
      return "delta";
    case posttrain::pb::CODEC_LOSSY:
      return "lossy";
    default:
      return "?";
  }
}

int List(const HistoryStore& store) {
  const posttrain::pb::Manifest m = store.manifest();
  std::printf(
      "store %s: %d layers, codec %s, keyframe every %u, %lld epochs "
      "appended\n",
      store.dir().c_str(), m.model_spec().layers_size(), CodecName(m.codec()),
      m.keyframe_interval(), static_cast<long long>(m.epochs_appended()));
  for (const auto& l : m.model_spec().layers()) {
    std::printf("  layer %-6s %s\n", l.name().c_str(),
                posttrain::LayerSummary(l).c_str());
  }
  std::printf("%6s %8s %10s %6s %5s  %-20s %s\n", "epoch", "step", "bytes",
              "codec", "base", "time (UTC)", "metrics");
  for (const auto& e : store.Epochs()) {
    std::vector<std::string> metrics;
    for (const auto& [k, v] : e.metrics())
      metrics.push_back(absl::StrCat(k, "=", v));
    std::sort(metrics.begin(), metrics.end());
    std::printf(
        "%6lld %8lld %10llu %6s %5s  %-20s %s\n",
        static_cast<long long>(e.epoch()), static_cast<long long>(e.step()),
        static_cast<unsigned long long>(e.blob_size()), CodecName(e.codec()),
        e.base_epoch() < 0 ? "-" : std::to_string(e.base_epoch()).c_str(),
        absl::FormatTime(
            "%Y-%m-%d %H:%M:%S",
            absl::FromUnixSeconds(static_cast<int64_t>(e.wall_time())),
            absl::UTCTimeZone())
            .c_str(),
        absl::StrJoin(metrics, " ").c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 || std::string(argv[1]) != "history") return Usage();
  const std::string cmd = argv[2], dir = argv[3];
  if (cmd == "gc") {
    // Opening for writing removes leftovers; the architecture is the store's.
    auto reader = HistoryStore::OpenReadOnly(dir);
    if (!reader.ok()) return Fail(reader.status());
    posttrain::HistoryOptions options;
    auto writer = HistoryStore::Open(dir, options, (*reader)->model_spec());
    if (!writer.ok()) return Fail(writer.status());
    std::printf("ok: %s\n", dir.c_str());
    return 0;
  }
  auto store = HistoryStore::OpenReadOnly(dir);
  if (!store.ok()) return Fail(store.status());
  if (cmd == "ls") return List(**store);
  if (cmd == "verify") {
    if (absl::Status s = (*store)->Verify(); !s.ok()) return Fail(s);
    std::printf("ok: %zu epochs verified in %s\n", (*store)->Epochs().size(),
                dir.c_str());
    return 0;
  }
  return Usage();
}

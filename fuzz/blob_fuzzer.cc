// libFuzzer target: the history store's blob reader (ParseBlobHeader, then
// DecodeBlob in every codec). Input: a blob file's bytes. Each blob is
// decoded twice: onto an empty state (a keyframe needs none; a delta must
// then fail cleanly) and onto the state of the seed model
// (fuzz/seed_model.h), where the seed corpus's delta records find their
// bases. Bad input must be a status naming the file; a decoded state holds
// exactly the header's tensors.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/module_state.h"
#include "fuzz/seed_model.h"
#include "history/file_format.h"

namespace {

const char kName[] = "epoch-00000002.blob";

void Decode(absl::string_view bytes, const posttrain::pb::BlobHeader& header,
            posttrain::NamedTensors state) {
  const absl::Status s = posttrain::DecodeBlob(bytes, header, kName, &state);
  if (!s.ok()) {
    if (s.message().find(kName) == std::string::npos) __builtin_trap();
    return;
  }
  if (static_cast<int>(state.size()) != header.tensors_size()) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const posttrain::NamedTensors* const base = [] {
    auto state = posttrain::CopyModuleState(*posttrain::fuzz::MakeSeedModel());
    if (!state.ok()) __builtin_trap();
    return new posttrain::NamedTensors(*std::move(state));
  }();
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  // The seeds hold epochs 0..2 (keyframes and deltas); the header must name
  // the epoch asked for.
  absl::StatusOr<posttrain::pb::BlobHeader> header;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    header = posttrain::ParseBlobHeader(bytes, kName, epoch);
    if (header.ok()) break;
    if (header.status().message().find(kName) == std::string::npos) {
      __builtin_trap();
    }
  }
  if (!header.ok()) return 0;
  // A record may declare up to kMaxTensorBytes once decoded, which the
  // reader allocates before decompressing (the size is bounded, not
  // trusted to be small); the fuzzer tests parsing and decoding, not the
  // allocator, so it skips more than 16 MiB.
  constexpr uint64_t kLimit = uint64_t{16} << 20;
  uint64_t declared = 0;
  for (const auto& r : header->tensors()) {
    if (r.raw_size() > kLimit || (declared += r.raw_size()) > kLimit) return 0;
  }
  Decode(bytes, *header, {});
  posttrain::NamedTensors copy;
  for (const auto& t : *base) copy.push_back({t.name, t.tensor.clone()});
  Decode(bytes, *header, std::move(copy));
  return 0;
}

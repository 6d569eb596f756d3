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
  auto header = posttrain::ParseBlobHeader(bytes, kName, 2);
  if (!header.ok()) {
    if (header.status().message().find(kName) == std::string::npos) {
      __builtin_trap();
    }
    return 0;
  }
  Decode(bytes, *header, {});
  posttrain::NamedTensors copy;
  for (const auto& t : *base) copy.push_back({t.name, t.tensor.clone()});
  Decode(bytes, *header, std::move(copy));
  return 0;
}

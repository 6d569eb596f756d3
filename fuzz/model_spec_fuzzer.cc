// libFuzzer target: the model spec reader (a ModelSpec message from a
// store's MANIFEST or an exported file, then BuildSequential). Input: the
// serialized message. Sizes are checked before anything is allocated (the
// fuzzer allows 2^20 elements; the library's default is 2^32). A spec that
// builds describes back to the same architecture.
#include <torch/nn/modules/container/sequential.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "common/model_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  posttrain::pb::ModelSpec spec;
  if (!spec.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto model = posttrain::BuildSequential(spec, int64_t{1} << 20);
  if (!model.ok()) return 0;
  auto described = posttrain::DescribeSequential(*model);
  const absl::Status same =
      described.ok() ? posttrain::CheckSameArchitecture(spec, *described)
                     : described.status();
  if (!same.ok()) {
    std::fprintf(stderr, "built, but: %s\n", same.ToString().c_str());
    __builtin_trap();
  }
  return 0;
}

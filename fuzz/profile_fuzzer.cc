// libFuzzer target: the NNSlicer profile and slice readers
// (Profile::FromProto, SliceFromProto), which read what the slice
// profiler saved beside a history. Input: 'P' then a serialized Profile,
// or 'S' then a serialized SliceProto. Sizes must be checked against the
// data before anything is allocated; a profile that loads gives a mean
// of the right size for each point with samples, and a slice's masks have their
// declared shapes.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "slicer/profile.h"
#include "slicer/slicer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const char kind = static_cast<char>(data[0]);
  ++data;
  --size;
  if (kind == 'P') {
    posttrain::pb::Profile proto;
    if (!proto.ParseFromArray(data, static_cast<int>(size))) return 0;
    auto profile = posttrain::Profile::FromProto(proto);
    if (!profile.ok()) return 0;
    // A row without samples has no mean (FailedPrecondition); any other
    // error, or a mean of the wrong size, is a bug.
    auto bad = [](const absl::StatusOr<at::Tensor>& mean, int64_t features) {
      return mean.ok() ? mean->numel() != features
                       : mean.status().code() !=
                             absl::StatusCode::kFailedPrecondition;
    };
    for (int p = 0; p < profile->num_points(); ++p) {
      const int64_t features = proto.points(p).features();
      if (bad(profile->Mean(p), features)) __builtin_trap();
      for (int c = 0; c < std::min(proto.num_criteria(), 3); ++c) {
        if (bad(profile->CriterionMean(p, c), features)) __builtin_trap();
      }
    }
  } else if (kind == 'S') {
    posttrain::pb::SliceProto proto;
    if (!proto.ParseFromArray(data, static_cast<int>(size))) return 0;
    auto slice = posttrain::SliceFromProto(proto);
    if (!slice.ok()) return 0;
    for (int l = 0; l < proto.layers_size(); ++l) {
      const posttrain::LayerSlice& layer = slice->layers[l];
      if (layer.synapse_mask.numel() !=
              static_cast<int64_t>(proto.layers(l).synapse_mask().size()) ||
          layer.neuron_mask.numel() != proto.layers(l).counts_shape(0)) {
        __builtin_trap();
      }
    }
  }
  return 0;
}

// Model export without pickle (issue "The nightly path"):
//  - safetensors (https://huggingface.co/docs/safetensors): an 8-byte
//    little-endian header length N, N bytes of JSON (padded with spaces to a
//    multiple of 8), then the raw little-endian tensor bytes. Each tensor is
//    {"dtype": "F32"|"F64"|"I64"|..., "shape": [...], "data_offsets": [b, e]}
//    relative to the end of the header; "__metadata__" maps strings to
//    strings. posttrain stores the model spec there as protobuf JSON under
//    "posttrain.model_spec" (.proto field names, e.g. "in_features"; int64
//    values as strings; `name` base64, it is a bytes field; fields at their
//    default omitted), so the file alone rebuilds the model. Tensors appear
//    in the order of the state, named as in the state dict ("0.weight").
//  - TorchScript: a torch::jit::Module built from the model spec, with the
//    weights as registered parameters and buffers (named "l<path>_<name>",
//    the state-dict name with '.' replaced by '_') and a `define`d forward,
//    saved with Module::save, so that torch.jit.load runs it in Python or
//    C++. The forward is the eval-mode one whatever train() says (Dropout is
//    the identity, BatchNorm uses its running statistics when it tracks
//    them); the archive holds the spec JSON as the extra file
//    "posttrain/model_spec.json".
//
// Example:
//   PT_ASSIGN_OR_RETURN(posttrain::pb::ModelSpec spec,
//                       posttrain::DescribeSequential(model));
//   PT_ASSIGN_OR_RETURN(posttrain::NamedTensors state,
//                       posttrain::CopyModuleState(*model));
//   PT_RETURN_IF_ERROR(
//       posttrain::WriteSafetensors("model.safetensors", spec, state));
//   PT_RETURN_IF_ERROR(
//       posttrain::WriteTorchScript("model.pt", spec, state));
//   PT_ASSIGN_OR_RETURN(posttrain::SafetensorsModel back,
//                       posttrain::ReadSafetensors("model.safetensors"));
//
// Thread safety: free functions without shared state.
#ifndef POSTTRAIN_TOOLS_EXPORT_H_
#define POSTTRAIN_TOOLS_EXPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/model_spec.pb.h"
#include "common/module_state.h"

namespace posttrain {

// One tensor of a parsed safetensors file, without torch (for the fuzzer).
struct SafetensorsEntry {
  std::string name;
  std::string dtype;            // "F32", "F64", "I64", ...
  std::vector<int64_t> shape;   // each >= 0
  uint64_t begin = 0, end = 0;  // byte range relative to the data section
};

struct SafetensorsFile {
  std::map<std::string, std::string> metadata;
  std::vector<SafetensorsEntry> tensors;  // in file order (by begin)
  uint64_t data_offset = 0;               // 8 + header length
};

// Largest header accepted (the format's own limit is 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeader = 100u << 20;

// Parses and validates the layout of `bytes` (a whole file): header length,
// JSON, each entry's dtype, shape and offsets (within the data, no overlap,
// no gap, size = numel * dtype size, no overflow). Errors name `file` and
// the tensor or the byte offset at fault.
absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::string_view bytes,
                                                 absl::string_view file);

// Writes `state` (CPU or not; written contiguous, little-endian) and `spec`
// as a safetensors file, through a temporary file and a rename.
absl::Status WriteSafetensors(const std::string& path,
                              const pb::ModelSpec& spec,
                              const NamedTensors& state);

struct SafetensorsModel {
  pb::ModelSpec spec;
  NamedTensors state;  // CPU tensors, in file order
};

// Reads a file WriteSafetensors wrote (the spec from the metadata, checked
// against the tensors' names by the caller's LoadModuleState).
absl::StatusOr<SafetensorsModel> ReadSafetensors(const std::string& path);

// Reads a TorchScript file WriteTorchScript wrote: the spec from its extra
// file "posttrain/model_spec.json", the tensors from the module's
// attributes, named as in the state dict. Errors name the file.
absl::StatusOr<SafetensorsModel> ReadTorchScript(const std::string& path);

// Builds the TorchScript module of `spec` with `state` and saves it at
// `path` (through a temporary file and a rename). Errors name the layer
// the exporter cannot express.
absl::Status WriteTorchScript(const std::string& path,
                              const pb::ModelSpec& spec,
                              const NamedTensors& state);

}  // namespace posttrain

#endif  // POSTTRAIN_TOOLS_EXPORT_H_

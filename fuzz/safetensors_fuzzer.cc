// libFuzzer target: the safetensors layout check (ParseSafetensors in
// tools/export.h): header length, JSON header, dtypes, shapes, offsets, the
// coverage of the data section. Input: a whole file's bytes. Bad input must
// be a status naming the file; a file that parses satisfies the layout's
// invariants. Torch-free at run time (the parser touches no tensor; the
// target links LibTorch only because export.cc also holds the writers).
// Seeds (fuzz/corpus/safetensors/): one_f32 and mixed_dtypes, written by
// hand (struct.pack('<Q', len(header)) + header + data), and
// posttrain_model, a WriteSafetensors file of export_test's model
// (POSTTRAIN_EXPORT_DIR, see scripts/check_exports.py).
#include <cstddef>
#include <cstdint>
#include <string>

#include "tools/export.h"

namespace {

uint64_t DtypeSize(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto file = posttrain::ParseSafetensors(bytes, "fuzz.safetensors");
  if (!file.ok()) {
    if (file.status().code() != absl::StatusCode::kInvalidArgument ||
        file.status().message().find("fuzz.safetensors") ==
            absl::string_view::npos) {
      __builtin_trap();  // every error is InvalidArgument naming the file
    }
    return 0;
  }
  // The entries tile the data section in file order, each of its size.
  if (file->data_offset < 8 || file->data_offset > size ||
      (file->data_offset - 8) > posttrain::kMaxSafetensorsHeader) {
    __builtin_trap();
  }
  uint64_t covered = 0;
  for (const posttrain::SafetensorsEntry& e : file->tensors) {
    uint64_t bytes_needed = DtypeSize(e.dtype);
    if (bytes_needed == 0 || e.name.empty() || e.begin != covered ||
        e.end < e.begin) {
      __builtin_trap();
    }
    for (int64_t d : e.shape) {
      if (d < 0) __builtin_trap();
      bytes_needed *= static_cast<uint64_t>(d);  // checked by the parser
    }
    if (e.end - e.begin != bytes_needed) __builtin_trap();
    covered = e.end;
  }
  if (file->data_offset + covered != size) __builtin_trap();
  return 0;
}

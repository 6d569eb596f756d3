// libFuzzer target: the history store's MANIFEST reader
// (DecodeManifestFile: framing, CRC, version, the epoch list's
// consistency). Input: a MANIFEST file's bytes. Bad input must be a
// status; a manifest that decodes re-encodes to one that decodes equal.
#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "history/file_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto manifest = posttrain::DecodeManifestFile(bytes, "MANIFEST");
  if (!manifest.ok()) {
    if (manifest.status().message().find("MANIFEST") == std::string::npos) {
      __builtin_trap();  // every error names the file
    }
    return 0;
  }
  const std::string again = posttrain::EncodeManifestFile(*manifest);
  auto decoded = posttrain::DecodeManifestFile(again, "MANIFEST");
  // NaN metrics are valid (a NaN loss is stored as given) and equal here.
  google::protobuf::util::DefaultFieldComparator nan_equal;
  nan_equal.set_treat_nan_as_equal(true);
  google::protobuf::util::MessageDifferencer differ;
  differ.set_field_comparator(&nan_equal);
  if (!decoded.ok() || !differ.Compare(*manifest, *decoded)) {
    __builtin_trap();
  }
  return 0;
}

// libFuzzer target: the tabular schema parser and the data-file reader
// (fairness/tabular_schema.h), the readers of a user's schema and CSV
// files. Input: schema text, a line "---", then data text. Neither parser
// may crash, hang or read out of bounds; bad input must be a status.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fairness/tabular_schema.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find("\n---\n");
  const std::string schema_text =
      split == std::string::npos ? input : input.substr(0, split);
  const std::string rows_text =
      split == std::string::npos ? "" : input.substr(split + 5);
  auto schema = posttrain::ParseTabularSchema(schema_text, "fuzz.schema");
  if (!schema.ok()) return 0;
  std::string attr = schema->protected_attribute;
  if (attr.empty() && !schema->privileged.empty()) {
    attr = schema->privileged.begin()->first;
  }
  posttrain::TabularRows rows;
  posttrain::ParseTabularText(*schema, attr, rows_text, "fuzz.csv", &rows)
      .IgnoreError();
  // Invariants of a successful parse.
  for (const auto& column : rows.cells) {
    if (column.size() != rows.label.size()) __builtin_trap();
  }
  return 0;
}

// TabularSchema: a declared description of a tabular data set, read from a
// small text file, so that a user's own data set needs no code; and the
// reader that turns its files into rows (ReadTabularRows). Neither uses
// torch: fairness/tabular.h encodes the rows into tensors.
//
// Schema file format: one directive per line, `key: value`; `#` starts a
// comment; blank lines are ignored. Directives (repeatable ones marked *):
//   name: adult
//   file: adult.data            * data files, relative to the data directory,
//                                 concatenated in order
//   separator: comma            comma (fields trimmed) or whitespace
//   skip: |                     * lines starting with this are not data
//   missing: ?                  the missing-value token (rows with one are
//                               dropped and counted)
//   column: age numeric         * every column of the files, in order:
//   column: workclass categorical   numeric or categorical
//   derive: sex from personal_status A91=male A92=female ...  *
//                               a categorical column mapped from another
//   drop: fnlwgt                * columns not used as features
//   label: income-per-year      the label column
//   favourable: >50K            the favourable label value (Ŷ = 1)
//   relabel: >50K. >50K         * a label value normalised before use
//   protected: sex              the default protected attribute
//   privileged: sex == Male     * per attribute: ==, !=, >, >=, <, <= (a
//   privileged: age > 25          number for numeric columns) or `in a,b`
//
// Example:
//   absl::StatusOr<posttrain::TabularSchema> schema =
//       posttrain::ReadTabularSchema("fairness/schemas/adult.schema");
//   if (!schema.ok()) return schema.status();
//   absl::StatusOr<posttrain::TabularRows> rows =
//       posttrain::ReadTabularRows(*schema, "../shared/data/tabular/adult");
//
// Thread safety: free functions and plain values.
#ifndef POSTTRAIN_FAIRNESS_TABULAR_SCHEMA_H_
#define POSTTRAIN_FAIRNESS_TABULAR_SCHEMA_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace posttrain {

// A privileged-group predicate on one column's value.
struct Predicate {
  enum class Op { kEq, kNe, kGt, kGe, kLt, kLe, kIn };
  Op op = Op::kEq;
  std::vector<std::string> values;  // kEq, kNe: one; kIn: several
  double number = 0;                // kGt .. kLe
  // Whether a cell matches (numeric ops parse the cell as a number).
  bool Matches(absl::string_view cell) const;
  std::string ToString() const;
};

struct ColumnSpec {
  std::string name;
  bool numeric = false;
};

struct DerivedColumn {
  std::string name;
  std::string from;
  std::map<std::string, std::string> mapping;  // from's value -> value
};

struct TabularSchema {
  std::string name;
  std::string source;  // the schema file (for messages)
  std::vector<std::string> files;
  enum class Separator { kComma, kWhitespace };
  Separator separator = Separator::kComma;
  std::vector<std::string> skip_prefixes;
  std::string missing = "?";
  std::vector<ColumnSpec> columns;
  std::vector<DerivedColumn> derived;
  std::vector<std::string> drop;
  std::string label;
  std::string favourable;
  std::map<std::string, std::string> relabel;
  std::string protected_attribute;
  std::map<std::string, Predicate> privileged;
};

// Parses a schema; `source` names it in errors ("adult.schema:12: ...").
// Errors: unknown directive, malformed value, a column named twice, a
// label, protected attribute, drop or derive source that is no column, a
// protected attribute without a privileged predicate.
absl::StatusOr<TabularSchema> ParseTabularSchema(absl::string_view text,
                                                 absl::string_view source);
absl::StatusOr<TabularSchema> ReadTabularSchema(const std::string& path);

// The rows of a data set: every column of the schema (derived ones
// appended), rows with a missing value dropped.
struct TabularRows {
  std::vector<ColumnSpec> columns;  // file columns, then derived ones
  // cells[c][r]: the text of column c in row r (trimmed).
  std::vector<std::vector<std::string>> cells;
  std::vector<int64_t> label;       // 1: favourable
  std::vector<int64_t> privileged;  // 1: privileged, for `protected_name`
  std::string protected_name;
  int64_t rows_read = 0;             // data lines seen
  int64_t rows_dropped_missing = 0;  // of those, dropped for a missing value
  int64_t rows() const { return static_cast<int64_t>(label.size()); }
  // Index of a column by name, -1 when absent.
  int Column(absl::string_view name) const;
};

// Parses the text of one data file into `rows` (appending). Errors name
// the file, the line and the column: a wrong number of fields, a value
// that is not a number in a numeric column, a derived column's unmapped
// value.
absl::Status ParseTabularText(const TabularSchema& schema,
                              const std::string& protected_name,
                              absl::string_view text,
                              absl::string_view file_name, TabularRows* rows);

// Reads every file of the schema from `data_dir`. `protected_name` empty:
// the schema's default protected attribute. Files larger than 1 GiB are
// refused.
absl::StatusOr<TabularRows> ReadTabularRows(
    const TabularSchema& schema, const std::string& data_dir,
    const std::string& protected_name = "");

}  // namespace posttrain

#endif  // POSTTRAIN_FAIRNESS_TABULAR_SCHEMA_H_

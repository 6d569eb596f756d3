#include "fairness/tabular_schema.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "history/env.h"

namespace posttrain {
namespace {

constexpr uint64_t kMaxFileSize = uint64_t{1} << 30;

std::vector<std::string> Words(absl::string_view s) {
  return absl::StrSplit(s, absl::ByAnyChar(" \t"), absl::SkipEmpty());
}

absl::Status LineError(absl::string_view source, int line,
                       absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(source, ":", line, ": ", what));
}

absl::StatusOr<Predicate> ParsePredicate(const std::vector<std::string>& w,
                                         absl::string_view source, int line) {
  // w[0] is the attribute; w[1] the operator; the rest the value(s).
  if (w.size() < 3) {
    return LineError(source, line,
                     "privileged: expected `<attribute> <op> <value>`");
  }
  Predicate p;
  const std::string& op = w[1];
  const std::string value = absl::StrJoin(w.begin() + 2, w.end(), " ");
  if (op == "==" || op == "!=") {
    p.op = op == "==" ? Predicate::Op::kEq : Predicate::Op::kNe;
    p.values = {value};
    return p;
  }
  if (op == "in") {
    p.op = Predicate::Op::kIn;
    for (absl::string_view v : absl::StrSplit(value, ',')) {
      v = absl::StripAsciiWhitespace(v);
      if (!v.empty()) p.values.emplace_back(v);
    }
    if (p.values.empty()) return LineError(source, line, "`in` needs values");
    return p;
  }
  static const std::pair<const char*, Predicate::Op> kOps[] = {
      {">", Predicate::Op::kGt},
      {">=", Predicate::Op::kGe},
      {"<", Predicate::Op::kLt},
      {"<=", Predicate::Op::kLe}};
  for (const auto& [name, o] : kOps) {
    if (op != name) continue;
    p.op = o;
    if (!absl::SimpleAtod(value, &p.number)) {
      return LineError(source, line,
                       absl::StrCat("'", value, "' is not a number"));
    }
    return p;
  }
  return LineError(
      source, line,
      absl::StrCat("unknown operator '", op, "' (==, !=, >, >=, <, <=, in)"));
}

}  // namespace

bool Predicate::Matches(absl::string_view cell) const {
  switch (op) {
    case Op::kEq:
      return cell == values[0];
    case Op::kNe:
      return cell != values[0];
    case Op::kIn:
      return std::find(values.begin(), values.end(), cell) != values.end();
    default:
      break;
  }
  double v = 0;
  if (!absl::SimpleAtod(cell, &v)) return false;
  switch (op) {
    case Op::kGt:
      return v > number;
    case Op::kGe:
      return v >= number;
    case Op::kLt:
      return v < number;
    case Op::kLe:
      return v <= number;
    default:
      return false;
  }
}

std::string Predicate::ToString() const {
  switch (op) {
    case Op::kEq:
      return absl::StrCat("== ", values[0]);
    case Op::kNe:
      return absl::StrCat("!= ", values[0]);
    case Op::kIn:
      return absl::StrCat("in ", absl::StrJoin(values, ","));
    case Op::kGt:
      return absl::StrCat("> ", number);
    case Op::kGe:
      return absl::StrCat(">= ", number);
    case Op::kLt:
      return absl::StrCat("< ", number);
    case Op::kLe:
      return absl::StrCat("<= ", number);
  }
  return "";
}

int TabularRows::Column(absl::string_view name) const {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

absl::StatusOr<TabularSchema> ParseTabularSchema(absl::string_view text,
                                                 absl::string_view source) {
  TabularSchema s;
  s.source = std::string(source);
  int line_no = 0;
  std::set<std::string> names;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line_no;
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#') continue;
    // A trailing comment starts at " #".
    if (size_t hash = line.find(" #"); hash != absl::string_view::npos) {
      line = absl::StripTrailingAsciiWhitespace(line.substr(0, hash));
    }
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) {
      return LineError(source, line_no, "expected `key: value`");
    }
    const std::string key(absl::StripAsciiWhitespace(line.substr(0, colon)));
    const std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    const std::vector<std::string> w = Words(value);
    if (value.empty()) {
      return LineError(source, line_no, absl::StrCat("`", key, "` is empty"));
    }
    if (key == "name") {
      s.name = value;
    } else if (key == "file") {
      if (value.find('/') != std::string::npos) {
        return LineError(source, line_no,
                         "file: a name inside the data directory, no '/'");
      }
      s.files.push_back(value);
    } else if (key == "separator") {
      if (value == "comma") {
        s.separator = TabularSchema::Separator::kComma;
      } else if (value == "whitespace") {
        s.separator = TabularSchema::Separator::kWhitespace;
      } else {
        return LineError(source, line_no, "separator: `comma` or `whitespace`");
      }
    } else if (key == "skip") {
      s.skip_prefixes.push_back(value);
    } else if (key == "missing") {
      s.missing = value;
    } else if (key == "column") {
      if (w.size() != 2 || (w[1] != "numeric" && w[1] != "categorical")) {
        return LineError(source, line_no,
                         "column: `<name> numeric|categorical`");
      }
      if (!names.insert(w[0]).second) {
        return LineError(source, line_no,
                         absl::StrCat("column '", w[0], "' named twice"));
      }
      s.columns.push_back({w[0], w[1] == "numeric"});
    } else if (key == "derive") {
      if (w.size() < 4 || w[1] != "from") {
        return LineError(source, line_no,
                         "derive: `<name> from <column> <value>=<value> ...`");
      }
      DerivedColumn d;
      d.name = w[0];
      d.from = w[2];
      for (size_t i = 3; i < w.size(); ++i) {
        std::vector<std::string> kv = absl::StrSplit(w[i], '=');
        if (kv.size() != 2 || kv[0].empty() || kv[1].empty()) {
          return LineError(source, line_no,
                           absl::StrCat("derive: '", w[i], "' is not a=b"));
        }
        d.mapping[kv[0]] = kv[1];
      }
      if (!names.insert(d.name).second) {
        return LineError(source, line_no,
                         absl::StrCat("column '", d.name, "' named twice"));
      }
      s.derived.push_back(std::move(d));
    } else if (key == "drop") {
      for (const std::string& c : w) s.drop.push_back(c);
    } else if (key == "label") {
      s.label = value;
    } else if (key == "favourable" || key == "favorable") {
      s.favourable = value;
    } else if (key == "relabel") {
      if (w.size() != 2) {
        return LineError(source, line_no, "relabel: `<from> <to>`");
      }
      s.relabel[w[0]] = w[1];
    } else if (key == "protected") {
      s.protected_attribute = value;
    } else if (key == "privileged") {
      PT_ASSIGN_OR_RETURN(Predicate p, ParsePredicate(w, source, line_no));
      s.privileged[w[0]] = std::move(p);
    } else {
      return LineError(source, line_no,
                       absl::StrCat("unknown directive '", key, "'"));
    }
  }
  auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  };
  if (s.files.empty()) return fail("no `file:`");
  if (s.columns.empty()) return fail("no `column:`");
  auto known = [&](const std::string& c) { return names.count(c) > 0; };
  for (const DerivedColumn& d : s.derived) {
    bool from_file = false;
    for (const ColumnSpec& c : s.columns) from_file |= c.name == d.from;
    if (!from_file) {
      return fail(absl::StrCat("derive: '", d.from, "' is not a file column"));
    }
  }
  for (const std::string& c : s.drop) {
    if (!known(c)) return fail(absl::StrCat("drop: no column '", c, "'"));
  }
  if (s.label.empty() || !known(s.label)) {
    return fail(absl::StrCat("label: no column '", s.label, "'"));
  }
  if (s.favourable.empty()) return fail("no `favourable:` label value");
  for (const auto& [attr, p] : s.privileged) {
    if (!known(attr))
      return fail(absl::StrCat("privileged: no column '", attr, "'"));
  }
  for (const auto& [attr, p] : s.privileged) {
    if (attr == s.label ||
        std::find(s.drop.begin(), s.drop.end(), attr) != s.drop.end()) {
      return fail(absl::StrCat("protected attribute '", attr,
                               "' is the label or dropped; it must stay an "
                               "input"));
    }
  }
  if (!s.protected_attribute.empty() &&
      !s.privileged.count(s.protected_attribute)) {
    return fail(absl::StrCat("protected attribute '", s.protected_attribute,
                             "' has no `privileged:` predicate"));
  }
  return s;
}

absl::StatusOr<TabularSchema> ReadTabularSchema(const std::string& path) {
  PT_ASSIGN_OR_RETURN(std::string text,
                      Env::Default()->ReadFile(path, 1 << 20));
  return ParseTabularSchema(text, path);
}

absl::Status ParseTabularText(const TabularSchema& schema,
                              const std::string& protected_name,
                              absl::string_view text,
                              absl::string_view file_name, TabularRows* rows) {
  const size_t n_file = schema.columns.size();
  if (rows->columns.empty()) {
    rows->columns = schema.columns;
    for (const DerivedColumn& d : schema.derived) {
      rows->columns.push_back({d.name, false});
    }
    rows->cells.assign(rows->columns.size(), {});
    rows->protected_name = protected_name;
  }
  const int label_col = rows->Column(schema.label);
  const int protected_col = rows->Column(protected_name);
  auto pred = schema.privileged.find(protected_name);
  if (label_col < 0 || protected_col < 0 || pred == schema.privileged.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(schema.source, ": protected attribute '", protected_name,
                     "' is not a column with a `privileged:` predicate"));
  }
  std::vector<int> derived_from;
  for (const DerivedColumn& d : schema.derived) {
    derived_from.push_back(rows->Column(d.from));
  }
  int line_no = 0;
  std::vector<absl::string_view> fields;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    bool skip = false;
    for (const std::string& p : schema.skip_prefixes) {
      skip |= absl::StartsWith(line, p);
    }
    if (skip) continue;
    ++rows->rows_read;
    fields.clear();
    if (schema.separator == TabularSchema::Separator::kComma) {
      for (absl::string_view f : absl::StrSplit(line, ',')) {
        fields.push_back(absl::StripAsciiWhitespace(f));
      }
    } else {
      for (absl::string_view f :
           absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
        fields.push_back(f);
      }
    }
    if (fields.size() != n_file) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_name, ":", line_no, ": expected ", n_file,
                       " fields, got ", fields.size()));
    }
    bool missing = false;
    for (absl::string_view f : fields) missing |= f == schema.missing;
    if (missing) {
      ++rows->rows_dropped_missing;
      continue;
    }
    for (size_t c = 0; c < n_file; ++c) {
      double v;
      if (schema.columns[c].numeric &&
          !(absl::SimpleAtod(fields[c], &v) && std::isfinite(v))) {
        return absl::InvalidArgumentError(absl::StrCat(
            file_name, ":", line_no, ": column '", schema.columns[c].name,
            "' (", c + 1, "): '", fields[c], "' is not a finite number"));
      }
    }
    std::vector<std::string> derived;
    for (size_t d = 0; d < schema.derived.size(); ++d) {
      const std::string from(fields[derived_from[d]]);
      auto it = schema.derived[d].mapping.find(from);
      if (it == schema.derived[d].mapping.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            file_name, ":", line_no, ": column '", schema.derived[d].from,
            "' (", derived_from[d] + 1, "): value '", from,
            "' has no mapping for the derived column '", schema.derived[d].name,
            "'"));
      }
      derived.push_back(it->second);
    }
    for (size_t c = 0; c < n_file; ++c) {
      rows->cells[c].emplace_back(fields[c]);
    }
    for (size_t d = 0; d < derived.size(); ++d) {
      rows->cells[n_file + d].push_back(std::move(derived[d]));
    }
    std::string label = rows->cells[label_col].back();
    if (auto r = schema.relabel.find(label); r != schema.relabel.end()) {
      label = r->second;
    }
    rows->label.push_back(label == schema.favourable ? 1 : 0);
    rows->privileged.push_back(
        pred->second.Matches(rows->cells[protected_col].back()) ? 1 : 0);
  }
  return absl::OkStatus();
}

absl::StatusOr<TabularRows> ReadTabularRows(const TabularSchema& schema,
                                            const std::string& data_dir,
                                            const std::string& protected_name) {
  const std::string attr =
      protected_name.empty() ? schema.protected_attribute : protected_name;
  if (attr.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        schema.source, ": no protected attribute (set `protected:`)"));
  }
  if (!schema.privileged.count(attr)) {
    return absl::InvalidArgumentError(
        absl::StrCat(schema.source, ": protected attribute '", attr,
                     "' has no `privileged:` predicate"));
  }
  TabularRows rows;
  for (const std::string& f : schema.files) {
    const std::string path = JoinPath(data_dir, f);
    PT_ASSIGN_OR_RETURN(std::string text,
                        Env::Default()->ReadFile(path, kMaxFileSize));
    PT_RETURN_IF_ERROR(ParseTabularText(schema, attr, text, path, &rows));
  }
  return rows;
}

}  // namespace posttrain

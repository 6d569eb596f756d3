#include "fairness/tabular_schema.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "tests/tabular_data.h"

namespace posttrain {
namespace {

const char kSmall[] = R"(# a small data set
name: small
file: small.csv
separator: comma
skip: |
missing: ?
column: age numeric
column: group categorical
column: code categorical
column: outcome categorical
derive: kind from code X=one Y=two
drop: code
label: outcome
favourable: yes
relabel: yes. yes
protected: group
privileged: group == g1
privileged: age > 30
)";

TEST(TabularSchema, ParsesEveryDirective) {
  auto s = ParseTabularSchema(kSmall, "small.schema");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name, "small");
  EXPECT_EQ(s->files, std::vector<std::string>{"small.csv"});
  ASSERT_EQ(s->columns.size(), 4u);
  EXPECT_TRUE(s->columns[0].numeric);
  EXPECT_FALSE(s->columns[1].numeric);
  ASSERT_EQ(s->derived.size(), 1u);
  EXPECT_EQ(s->derived[0].mapping.at("Y"), "two");
  EXPECT_EQ(s->relabel.at("yes."), "yes");
  EXPECT_EQ(s->privileged.at("age").ToString(), "> 30");
  EXPECT_TRUE(s->privileged.at("age").Matches("31"));
  EXPECT_FALSE(s->privileged.at("age").Matches("30"));
  EXPECT_FALSE(s->privileged.at("age").Matches("old"));
}

TEST(TabularSchema, SchemaErrorsNameTheLine) {
  struct Case {
    std::string text, want;
  };
  const std::string base =
      "file: f\ncolumn: a numeric\ncolumn: y categorical\n"
      "label: y\nfavourable: 1\n";
  const Case cases[] = {
      {base + "colour: red\n", "s:6: unknown directive 'colour'"},
      {base + "column: b integer\n", "s:6: column:"},
      {base + "column: a numeric\n", "s:6: column 'a' named twice"},
      {base + "privileged: a >> 3\n", "s:6: unknown operator '>>'"},
      {base + "privileged: a > x\n", "s:6: 'x' is not a number"},
      {base + "separator: tab\n", "s:6: separator"},
      {base + "nonsense\n", "s:6: expected `key: value`"},
      {base + "protected: a\n", "'a' has no `privileged:` predicate"},
      {base + "drop: b\n", "drop: no column 'b'"},
      {"file: f\ncolumn: a numeric\nlabel: y\nfavourable: 1\n",
       "label: no column 'y'"},
      {base + "file: ../x\n", "s:6: file:"},
      {base + "privileged: a > 1\ndrop: a\n", "'a' is the label or dropped"},
  };
  for (const Case& c : cases) {
    auto s = ParseTabularSchema(c.text, "s");
    EXPECT_FALSE(s.ok()) << c.text;
    EXPECT_TRUE(absl::StrContains(s.status().message(), c.want))
        << s.status() << "\nwanted: " << c.want;
  }
}

TEST(TabularSchema, ParsesRowsDropsMissingAndNamesBadFields) {
  auto s = ParseTabularSchema(kSmall, "small.schema");
  ASSERT_TRUE(s.ok());
  TabularRows rows;
  absl::Status st = ParseTabularText(
      *s, "group",
      "|header line\n25, g1, X, yes\n40, g2, Y, no\n33, ?, X, yes.\n"
      "\n31, g2, X, yes.\n",
      "small.csv", &rows);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(rows.rows_read, 4);
  EXPECT_EQ(rows.rows_dropped_missing, 1);
  ASSERT_EQ(rows.rows(), 3);
  EXPECT_EQ(rows.label, (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(rows.privileged, (std::vector<int64_t>{1, 0, 0}));
  EXPECT_EQ(rows.cells[rows.Column("kind")],
            (std::vector<std::string>{"one", "two", "one"}));
  // Privileged by the numeric predicate instead.
  TabularRows by_age;
  ASSERT_TRUE(ParseTabularText(*s, "age", "25, g1, X, yes\n40, g2, Y, no\n",
                               "small.csv", &by_age)
                  .ok());
  EXPECT_EQ(by_age.privileged, (std::vector<int64_t>{0, 1}));

  struct Case {
    std::string text, want;
  };
  const Case bad[] = {
      {"25, g1, X\n", "small.csv:1: expected 4 fields, got 3"},
      {"25, g1, X, yes\nold, g1, X, yes\n",
       "small.csv:2: column 'age' (1): 'old' is not a finite number"},
      {"25, g1, X, yes\nnan, g1, X, yes\n",
       "small.csv:2: column 'age' (1): 'nan' is not a finite number"},
      {"25, g1, Z, yes\n",
       "small.csv:1: column 'code' (3): value 'Z' has no mapping for the "
       "derived column 'kind'"},
  };
  for (const Case& c : bad) {
    TabularRows r;
    absl::Status e = ParseTabularText(*s, "group", c.text, "small.csv", &r);
    EXPECT_TRUE(absl::StrContains(e.message(), c.want))
        << e << "\nwanted: " << c.want;
  }
}

std::string Data(const std::string& name) {
  return std::string(POSTTRAIN_TABULAR_DIR) + "/" + name;
}

// The built-in schemas on the real files (../shared/data/tabular; on
// another machine scripts/download_tabular.sh fetches them).
TEST(TabularSchema, AdultAsAif360ReadsIt) {
  // Skipped, not failed, only where the data set is absent (a checkout
  // without ../shared/data, no network): the schema logic is covered by the
  // tests above. CI has the files; there a missing file fails.
  POSTTRAIN_SKIP_WITHOUT_DATA(Data("adult/adult.data"));
  auto s =
      ReadTabularSchema(std::string(POSTTRAIN_SCHEMA_DIR) + "/adult.schema");
  ASSERT_TRUE(s.ok()) << s.status();
  auto rows = ReadTabularRows(*s, Data("adult"));
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->rows_read, 48842);
  EXPECT_EQ(rows->rows(), 45222);
  EXPECT_EQ(rows->rows_dropped_missing, 48842 - 45222);
  int64_t fav = 0, male = 0;
  for (int64_t i = 0; i < rows->rows(); ++i) {
    fav += rows->label[i];
    male += rows->privileged[i];
  }
  EXPECT_NEAR(static_cast<double>(fav) / rows->rows(), 0.2478, 5e-5);
  EXPECT_EQ(rows->protected_name, "sex");
  EXPECT_GT(male, rows->rows() / 2);
  auto race = ReadTabularRows(*s, Data("adult"), "race");
  ASSERT_TRUE(race.ok()) << race.status();
  EXPECT_EQ(race->protected_name, "race");
}

TEST(TabularSchema, GermanAsAif360ReadsIt) {
  // Skipped only without the data set, as above.
  POSTTRAIN_SKIP_WITHOUT_DATA(Data("german/german.data"));
  auto s =
      ReadTabularSchema(std::string(POSTTRAIN_SCHEMA_DIR) + "/german.schema");
  ASSERT_TRUE(s.ok()) << s.status();
  auto sex = ReadTabularRows(*s, Data("german"), "sex");
  auto age = ReadTabularRows(*s, Data("german"), "age");
  ASSERT_TRUE(sex.ok()) << sex.status();
  ASSERT_TRUE(age.ok()) << age.status();
  EXPECT_EQ(sex->rows(), 1000);
  int64_t male = 0, old = 0, good = 0;
  for (int64_t i = 0; i < 1000; ++i) {
    male += sex->privileged[i];
    old += age->privileged[i];
    good += sex->label[i];
  }
  EXPECT_EQ(male, 690);
  EXPECT_EQ(old, 810);
  EXPECT_EQ(good, 700);
  auto missing = ReadTabularRows(*s, Data("german"), "colour");
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "'colour'"))
      << missing.status();
}

}  // namespace
}  // namespace posttrain

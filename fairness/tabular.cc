#include "fairness/tabular.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {

absl::StatusOr<TabularData> EncodeTabular(const TabularSchema& schema,
                                          const TabularRows& rows,
                                          const TabularOptions& options) {
  const int64_t n = rows.rows();
  if (n < 10) {
    return absl::InvalidArgumentError(
        absl::StrCat(schema.source, ": ", n, " rows; at least 10 needed"));
  }
  if (!(options.test_fraction > 0 && options.test_fraction < 1) ||
      !(options.validation_fraction > 0 && options.validation_fraction < 1)) {
    return absl::InvalidArgumentError(
        "test_fraction and validation_fraction must be in (0, 1)");
  }
  TabularData data;
  data.name = schema.name;
  data.protected_name = rows.protected_name;
  data.rows = n;
  data.rows_dropped_missing = rows.rows_dropped_missing;
  // The split, seeded: test first, then validation, then train.
  auto gen = at::detail::createCPUGenerator(options.seed);
  const at::Tensor order = torch::randperm(n, gen);
  const int64_t n_test = std::max<int64_t>(
      1, std::llround(static_cast<double>(n) * options.test_fraction));
  const int64_t n_val =
      std::max<int64_t>(1, std::llround(static_cast<double>(n - n_test) *
                                        options.validation_fraction));
  const int64_t n_train = n - n_test - n_val;
  if (n_train < 2) return absl::InvalidArgumentError("too few training rows");
  const int64_t* ord = order.data_ptr<int64_t>();
  std::vector<int64_t> train_rows(ord + n_test + n_val, ord + n);
  std::set<std::string> skip(schema.drop.begin(), schema.drop.end());
  skip.insert(schema.label);
  // The blocks, fitted on the training rows.
  for (size_t c = 0; c < rows.columns.size(); ++c) {
    const ColumnSpec& col = rows.columns[c];
    if (skip.count(col.name)) continue;
    FeatureBlock b;
    b.column = col.name;
    b.start = data.features;
    if (col.name == rows.protected_name) {
      b.kind = FeatureBlock::Kind::kProtected;
      data.protected_feature = b.start;
    } else if (col.numeric) {
      b.kind = FeatureBlock::Kind::kNumeric;
      b.min = INFINITY;
      b.max = -INFINITY;
      for (int64_t r : train_rows) {
        double v = 0;
        absl::SimpleAtod(rows.cells[c][r], &v);
        b.min = std::min(b.min, v);
        b.max = std::max(b.max, v);
      }
    } else {
      b.kind = FeatureBlock::Kind::kCategorical;
      std::set<std::string> seen;
      for (int64_t r : train_rows) seen.insert(rows.cells[c][r]);
      b.categories.assign(seen.begin(), seen.end());
      b.width = static_cast<int64_t>(b.categories.size());
    }
    data.features += b.width;
    data.blocks.push_back(std::move(b));
  }
  bool have_protected = false;
  for (const FeatureBlock& b : data.blocks) {
    have_protected |= b.kind == FeatureBlock::Kind::kProtected;
  }
  if (!have_protected) {
    return absl::InvalidArgumentError(
        absl::StrCat(schema.source, ": the protected attribute '",
                     rows.protected_name, "' is not among the input columns"));
  }
  // Encode every row.
  std::vector<float> x(static_cast<size_t>(n * data.features), 0.0f);
  for (const FeatureBlock& b : data.blocks) {
    const int c = rows.Column(b.column);
    std::map<std::string, int64_t> index;
    for (size_t k = 0; k < b.categories.size(); ++k) index[b.categories[k]] = k;
    for (int64_t r = 0; r < n; ++r) {
      float* row = x.data() + r * data.features;
      if (b.kind == FeatureBlock::Kind::kProtected) {
        row[b.start] = static_cast<float>(rows.privileged[r]);
      } else if (b.kind == FeatureBlock::Kind::kNumeric) {
        double v = 0;
        absl::SimpleAtod(rows.cells[c][r], &v);
        row[b.start] = b.max > b.min
                           ? static_cast<float>((v - b.min) / (b.max - b.min))
                           : 0.0f;
      } else if (auto it = index.find(rows.cells[c][r]); it != index.end()) {
        row[b.start + it->second] = 1.0f;
      }
    }
  }
  at::Tensor all_x =
      torch::from_blob(x.data(), {n, data.features}, torch::kFloat).clone();
  at::Tensor all_y = torch::tensor(rows.label, torch::kLong);
  at::Tensor all_a = torch::tensor(rows.privileged, torch::kLong);
  auto take = [&](int64_t from, int64_t len) {
    at::Tensor idx = order.narrow(0, from, len);
    return TabularSplit{all_x.index_select(0, idx), all_y.index_select(0, idx),
                        all_a.index_select(0, idx)};
  };
  data.test = take(0, n_test);
  data.validation = take(n_test, n_val);
  data.train = take(n_test + n_val, n_train);
  for (const auto& [split, what] :
       {std::make_pair(&data.train, "train"),
        std::make_pair(&data.validation, "validation"),
        std::make_pair(&data.test, "test")}) {
    const int64_t priv = split->a.sum().item<int64_t>();
    const int64_t fav = split->y.sum().item<int64_t>();
    if (priv == 0 || priv == split->size() || fav == 0 ||
        fav == split->size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(schema.source, ": the ", what,
                       " split lacks a group or a label value; use more rows"));
    }
  }
  return data;
}

torch::nn::Sequential ReferenceMlp(int64_t features, uint64_t seed) {
  torch::manual_seed(seed);
  namespace nn = torch::nn;
  return nn::Sequential(nn::Linear(features, 64), nn::ReLU(),
                        nn::Linear(64, 32), nn::ReLU(), nn::Linear(32, 16),
                        nn::ReLU(), nn::Linear(16, 8), nn::ReLU(),
                        nn::Linear(8, 4), nn::ReLU(), nn::Linear(4, 2));
}

}  // namespace posttrain

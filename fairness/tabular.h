// Tabular data as tensors (ALGORITHMS.md §4): the rows of a schema
// (fairness/tabular_schema.h) split with a seed into train, validation and
// test, categorical columns one-hot, numeric columns min-max scaled, both
// fitted on the training split only; the protected attribute stays in the
// input as one 0/1 column (1 = privileged). The label is the target, 1 =
// favourable.
//
// Choices where the issue is silent: the encoding is fitted on `train`
// only (not validation); a category not seen in `train` encodes as all
// zeros; numeric values outside the training range scale outside [0, 1]
// (no clipping); a constant numeric column encodes as 0. Of the other
// protected attributes a schema declares, only the chosen one is
// binarized; the rest are ordinary features.
//
// Example:
//   posttrain::TabularOptions options;
//   options.seed = 3;
//   absl::StatusOr<posttrain::TabularData> encoded =
//       posttrain::EncodeTabular(*schema, *rows, options);
//   if (!encoded.ok()) return encoded.status();
//   at::Tensor x = encoded->train.x;  // float [N, d]
//
// Thread safety: free functions and plain values.
#ifndef POSTTRAIN_FAIRNESS_TABULAR_H_
#define POSTTRAIN_FAIRNESS_TABULAR_H_

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/sequential.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fairness/tabular_schema.h"

namespace posttrain {

struct TabularSplit {
  at::Tensor x;  // float [N, d]
  at::Tensor y;  // int64 [N]: 1 favourable
  at::Tensor a;  // int64 [N]: 1 privileged
  int64_t size() const { return x.defined() ? x.size(0) : 0; }
};

// Where one original attribute lives in the encoded input.
struct FeatureBlock {
  std::string column;
  enum class Kind { kNumeric, kCategorical, kProtected };
  Kind kind = Kind::kNumeric;
  int64_t start = 0, width = 1;         // columns [start, start + width)
  std::vector<std::string> categories;  // kCategorical, in column order
  double min = 0, max = 0;              // kNumeric, from `train`
};

struct TabularData {
  std::string name;            // the schema's
  std::string protected_name;  // the protected attribute
  TabularSplit train, validation, test;
  std::vector<FeatureBlock> blocks;
  int64_t features = 0;           // d
  int64_t protected_feature = 0;  // the 0/1 protected column of x
  int64_t rows = 0;               // after dropping missing values
  int64_t rows_dropped_missing = 0;
};

struct TabularOptions {
  uint64_t seed = 1;
  double test_fraction = 0.3;        // of all rows
  double validation_fraction = 0.2;  // of the training part
};

// Errors: fewer than 10 rows, fractions outside (0, 1), a split without
// both groups or both labels.
absl::StatusOr<TabularData> EncodeTabular(const TabularSchema& schema,
                                          const TabularRows& rows,
                                          const TabularOptions& options);

// The reference MLP of ALGORITHMS.md §4: d→64→32→16→8→4→2 with ReLU
// (weighted layer 5, the 4-unit layer, is the regression target at p = 1).
torch::nn::Sequential ReferenceMlp(int64_t features, uint64_t seed);

}  // namespace posttrain

#endif  // POSTTRAIN_FAIRNESS_TABULAR_H_

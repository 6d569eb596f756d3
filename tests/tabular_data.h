// The tabular data sets the tests read (Adult, German credit) live outside
// the repository: ../shared/data/tabular beside the checkout, or where
// scripts/download_tabular.sh put them (the build's POSTTRAIN_TABULAR_DIR).
#ifndef POSTTRAIN_TESTS_TABULAR_DATA_H_
#define POSTTRAIN_TESTS_TABULAR_DATA_H_

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

// Returns from the test when `file` is missing: a skip that names it on a
// user's machine without the data, but a failure in CI (CI=true), which
// always has the data, so a wrong path there cannot pass quietly.
#define POSTTRAIN_SKIP_WITHOUT_DATA(file)                          \
  do {                                                             \
    if (!std::filesystem::exists(file)) {                          \
      const char* ci = std::getenv("CI");                          \
      if (ci != nullptr && std::strcmp(ci, "true") == 0) {         \
        GTEST_FAIL() << "CI=true but no data at " << (file);       \
      }                                                            \
      GTEST_SKIP() << "no data at " << (file)                      \
                   << " (scripts/download_tabular.sh fetches it)"; \
    }                                                              \
  } while (0)

#endif  // POSTTRAIN_TESTS_TABULAR_DATA_H_

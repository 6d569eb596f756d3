// The names the Example blocks of the public headers use without declaring
// them (a model, data tensors, a store, ...). tests/extract_examples.sh puts
// every example in a function that starts with POSTTRAIN_EXAMPLE_CONTEXT;
// an example's own declarations shadow these in its inner block. The
// functions are compiled, not run.
#ifndef POSTTRAIN_TESTS_HEADER_EXAMPLES_CONTEXT_H_
#define POSTTRAIN_TESTS_HEADER_EXAMPLES_CONTEXT_H_

#include <gtest/gtest.h>
// The whole of torch on purpose: the examples may use any public torch API
// (layers, no-grad guards, tensors), and this is one translation unit.
#include <torch/torch.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/model_spec.h"
#include "common/model_view.h"
#include "common/module_state.h"
#include "common/sequential_block.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "fairness/tabular.h"
#include "fairness/tabular_schema.h"
#include "history/async_writer.h"
#include "history/codec.h"
#include "history/env.h"
#include "history/fault_injection_env.h"
#include "history/retention.h"
#include "history/store.h"
#include "hooks/callback.h"
#include "hooks/history_recorder.h"
#include "hooks/post_train_callback.h"
#include "hooks/post_trainer.h"
#include "hooks/progress_bar.h"
#include "hooks/slice_profiler.h"
#include "robustness/attacks.h"
#include "robustness/dare.h"
#include "robustness/fashion_mnist.h"
#include "robustness/history_miner.h"
#include "slicer/profile.h"
#include "slicer/slicer.h"
#include "tuner/masked_tuner.h"
#include "tuner/pipeline.h"
#include "tuner/progress.h"
#include "tuner/regression_view.h"
#include "tuner/task.h"

#define POSTTRAIN_EXAMPLE_CONTEXT                                             \
  [[maybe_unused]] torch::nn::Sequential model(torch::nn::Linear(4, 3));      \
  [[maybe_unused]] at::Tensor x, out, images, labels, val_images, val_labels, \
      train_images, train_labels, images_of_class_3;                          \
  [[maybe_unused]] std::unique_ptr<HistoryStore> store;                       \
  [[maybe_unused]] std::string dir = "/tmp/posttrain_example";                \
  [[maybe_unused]] pb::ModelSpec spec;                                        \
  [[maybe_unused]] EpochMetadata meta;                                        \
  [[maybe_unused]] NamedTensors state;                                        \
  [[maybe_unused]] const uint8_t* cur = nullptr;                              \
  [[maybe_unused]] const uint8_t* base = nullptr;                             \
  [[maybe_unused]] size_t n = 0;                                              \
  [[maybe_unused]] CallbackList callbacks;                                    \
  [[maybe_unused]] std::shared_ptr<HistoryRecorder> recorder;                 \
  [[maybe_unused]] std::shared_ptr<SliceProfiler> profiler;                   \
  [[maybe_unused]] DareOptions dare, dare_options;                            \
  [[maybe_unused]] FashionMnist data;                                         \
  [[maybe_unused]] ModelView view = *ModelView::Create(model);                \
  [[maybe_unused]] Profile profile = *Profile::Create(view, x, 1);            \
  [[maybe_unused]] std::vector<Slice> slices;                                 \
  [[maybe_unused]] TuningData train_set, val_set;                             \
  [[maybe_unused]] LabelledData guard;                                        \
  [[maybe_unused]] double loss = 0;                                           \
  [[maybe_unused]] int start = 0, epochs = 1;                                 \
  [[maybe_unused]] absl::StatusOr<TabularSchema> schema;                      \
  [[maybe_unused]] absl::StatusOr<TabularRows> rows;                          \
  [[maybe_unused]] absl::StatusOr<TabularData> encoded;                       \
  [[maybe_unused]] std::vector<double> val_prob, test_prob;                   \
  [[maybe_unused]] std::vector<int64_t> val_y, val_a, test_a;

#endif  // POSTTRAIN_TESTS_HEADER_EXAMPLES_CONTEXT_H_

// Slicer benchmarks (issue 3), one JSON object per section, all ratios taken
// within one run on one machine:
//
//  overhead   The example loop's epochs rotate between three configurations
//             (no callback, SliceProfiler, SliceProfiler + HistoryRecorder);
//             reports the median epoch of each and the profiler's own time
//             inside OnBatchEnd (the direct cost, robust to the VM's noise).
//  agreement  Trains the example CNN (the main job's settings), profiling
//             online with the default SliceProfiler and, in the last epoch,
//             with other sampling rates; then slices all 10 classes (q = 95,
//             D'_c = the training images of class c) with each online
//             profile and with the exact offline profile of the final model,
//             and reports the key-synapse Jaccard of each against the exact
//             one. Also times slicing all 10 classes against one epoch.
//  sizes      Slicing time for CNNs of four widths (random weights; slicing
//             cost does not depend on training), per 1000 inputs.
//
//   slicer_bench --sections=overhead,agreement,sizes --threads=2
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "cnn_training.h"
#include "hooks/history_recorder.h"
#include "hooks/slice_profiler.h"
#include "robustness/fashion_mnist.h"
#include "slicer/slicer.h"

ABSL_FLAG(std::string, sections, "overhead,agreement,sizes",
          "comma-separated: overhead, agreement, sizes");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(int64_t, overhead_train_size, 12000,
          "overhead: training images per epoch");
ABSL_FLAG(int, rounds, 5,
          "overhead: rounds of the three configurations, after one warm-up");
ABSL_FLAG(int64_t, train_size, 30000, "agreement: training images");
ABSL_FLAG(int, epochs, 6, "agreement: training epochs");
ABSL_FLAG(std::string, rates, "1,4,16,64",
          "agreement: every_n_batches values profiled in the last epoch, "
          "each with both sampling policies");
ABSL_FLAG(int64_t, sizes_inputs, 5000, "sizes: inputs sliced per model");
ABSL_FLAG(std::string, tmp, "/tmp/posttrain_slicer_bench",
          "scratch directory for the history store");

namespace {

using posttrain::bench::Median;
using posttrain::bench::Seconds;
namespace nn = torch::nn;

std::string Join(const std::vector<double>& v) {
  std::vector<std::string> parts;
  for (double x : v) parts.push_back(std::to_string(x).substr(0, 6));
  return absl::StrJoin(parts, ", ");
}

nn::Sequential SizedCnn(int64_t c1, int64_t c2, int64_t hidden) {
  return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, c1, 3).padding(1)),
                        nn::BatchNorm2d(c1), nn::ReLU(), nn::MaxPool2d(2),
                        nn::Conv2d(nn::Conv2dOptions(c1, c2, 3).padding(1)),
                        nn::BatchNorm2d(c2), nn::ReLU(), nn::MaxPool2d(2),
                        nn::Flatten(), nn::Linear(c2 * 7 * 7, hidden),
                        nn::ReLU(), nn::Linear(hidden, 10));
}

int64_t Parameters(const nn::Sequential& m) {
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  return n;
}

std::vector<int64_t> ClassOutputs() {
  std::vector<int64_t> o;
  for (int64_t c = 0; c < 10; ++c) o.push_back(c);
  return o;
}

#define CHECK_OK(expr)                                                \
  do {                                                                \
    const absl::Status _s = (expr);                                   \
    if (!_s.ok()) {                                                   \
      std::fprintf(stderr, "%s: %s\n", #expr, _s.ToString().c_str()); \
      std::exit(1);                                                   \
    }                                                                 \
  } while (0)

template <typename T>
T ValueOrDie(absl::StatusOr<T> v) {
  if (!v.ok()) {
    std::fprintf(stderr, "%s\n", v.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(v);
}

void Overhead() {
  posttrain::FashionMnistOptions data_options;
  data_options.train_limit = absl::GetFlag(FLAGS_overhead_train_size);
  data_options.validation_limit = 0;
  auto data = ValueOrDie(posttrain::LoadFashionMnist(data_options));
  const std::string dir = absl::GetFlag(FLAGS_tmp) + "/overhead";
  std::filesystem::remove_all(dir);
  torch::manual_seed(1);
  nn::Sequential model = fmnist::MakeCnn();
  torch::optim::Adam optimizer(model->parameters(),
                               torch::optim::AdamOptions(1e-3));
  posttrain::SliceProfiler profiler(model);  // the default options
  posttrain::HistoryRecorder recorder(model, dir);
  CHECK_OK(profiler.OnTrainBegin());
  CHECK_OK(recorder.OnTrainBegin());
  const int rounds = absl::GetFlag(FLAGS_rounds);
  std::vector<double> none, prof, both;
  double profiler_s = 0;  // inside the profiler, over the measured epochs
  int profiled_epochs = 0;
  for (int epoch = 0; epoch < 3 * (rounds + 1); ++epoch) {
    const int config = epoch % 3;  // 0 none, 1 profiler, 2 both
    const double before = profiler.seconds();
    const auto start = std::chrono::steady_clock::now();
    fmnist::TrainEpoch(model, optimizer, data.train, 128, 100 + epoch,
                       [&](const at::Tensor& x, const at::Tensor& y,
                           const at::Tensor& logits, double loss) {
                         posttrain::BatchEnd b{x, y, logits, loss};
                         if (config >= 1) profiler.OnBatchEnd(b).IgnoreError();
                         if (config == 2) recorder.OnBatchEnd(b).IgnoreError();
                       });
    if (config >= 1) CHECK_OK(profiler.OnEpochEnd(epoch, {}));
    if (config == 2) CHECK_OK(recorder.OnEpochEnd(epoch, {}));
    const double s = Seconds(start);
    if (epoch < 3) continue;  // warm-up round
    (config == 0 ? none : config == 1 ? prof : both).push_back(s);
    if (config >= 1) {
      profiler_s += profiler.seconds() - before;
      ++profiled_epochs;
    }
  }
  CHECK_OK(recorder.OnTrainEnd());
  std::filesystem::remove_all(dir);
  const double a = Median(none);
  std::printf(
      "{\"section\": \"overhead\", \"threads\": %d, "
      "\"train_size\": %lld, \"rounds\": %d,\n",
      torch::get_num_threads(), static_cast<long long>(data.train.size()),
      rounds);
  std::printf(" \"every_n_batches\": %d,\n",
              posttrain::SliceProfilerOptions().every_n_batches);
  std::printf(" \"epochs_none_s\": [%s],\n", Join(none).c_str());
  std::printf(" \"epochs_profiler_s\": [%s],\n", Join(prof).c_str());
  std::printf(" \"epochs_profiler_recorder_s\": [%s],\n", Join(both).c_str());
  std::printf(" \"profiler_overhead_percent_median\": %.2f,\n",
              100.0 * (Median(prof) / a - 1.0));
  std::printf(" \"both_overhead_percent_median\": %.2f,\n",
              100.0 * (Median(both) / a - 1.0));
  std::printf(" \"profiler_in_loop_percent\": %.3f,\n",
              100.0 * profiler_s / profiled_epochs / a);
  std::printf(" \"targets_percent\": {\"profiler\": 3, \"both\": 5}}\n");
}

void Agreement() {
  posttrain::FashionMnistOptions data_options;
  data_options.train_limit = absl::GetFlag(FLAGS_train_size);
  data_options.validation_limit = 0;
  auto data = ValueOrDie(posttrain::LoadFashionMnist(data_options));
  torch::manual_seed(1);
  nn::Sequential model = fmnist::MakeCnn();
  torch::optim::Adam optimizer(model->parameters(),
                               torch::optim::AdamOptions(1e-3));
  posttrain::SliceProfiler online(model);  // default options, every epoch
  CHECK_OK(online.OnTrainBegin());
  std::vector<int> rates;
  for (absl::string_view r : absl::StrSplit(absl::GetFlag(FLAGS_rates), ',')) {
    rates.push_back(std::stoi(std::string(r)));
  }
  // Every rate with both sampling policies.
  using Sampling = posttrain::SliceProfilerOptions::Sampling;
  std::vector<std::unique_ptr<posttrain::SliceProfiler>> extra;
  std::vector<std::pair<int, Sampling>> extra_setting;
  for (int r : rates) {
    for (Sampling sampling : {Sampling::kEveryNth, Sampling::kEpochTail}) {
      posttrain::SliceProfilerOptions o;
      o.every_n_batches = r;
      o.sampling = sampling;
      extra.push_back(std::make_unique<posttrain::SliceProfiler>(model, o));
      extra_setting.emplace_back(r, sampling);
    }
  }
  const int epochs = absl::GetFlag(FLAGS_epochs);
  std::vector<double> epoch_s;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    // The extra profilers see the last two epochs: the tail policy learns
    // the epoch length from the one before; both restart each epoch, so
    // their profiles are of the last epoch.
    const bool extras = epoch >= epochs - 2;
    auto r = fmnist::TrainEpoch(model, optimizer, data.train, 128, 1000 + epoch,
                                [&](const at::Tensor& x, const at::Tensor& y,
                                    const at::Tensor& logits, double loss) {
                                  posttrain::BatchEnd b{x, y, logits, loss};
                                  CHECK_OK(online.OnBatchEnd(b));
                                  if (extras) {
                                    for (auto& p : extra)
                                      CHECK_OK(p->OnBatchEnd(b));
                                  }
                                });
    CHECK_OK(online.OnEpochEnd(epoch, {}));
    if (extras) {
      for (auto& p : extra) CHECK_OK(p->OnEpochEnd(epoch, {}));
    }
    epoch_s.push_back(r.seconds);
  }
  // Epoch time without callbacks, for the slicing comparison: one epoch of
  // the same loop on a fresh model of the same architecture.
  nn::Sequential timing_model = fmnist::MakeCnn();
  torch::optim::Adam timing_opt(timing_model->parameters(),
                                torch::optim::AdamOptions(1e-3));
  const double plain_epoch_s =
      fmnist::TrainEpoch(timing_model, timing_opt, data.train, 128, 7).seconds;

  const at::Tensor& x = data.train.images;
  const at::Tensor& y = data.train.labels;
  auto start = std::chrono::steady_clock::now();
  posttrain::Profile exact =
      ValueOrDie(posttrain::ProfileModel(model, x, y, 10));
  const double offline_profile_s = Seconds(start);
  auto view = ValueOrDie(posttrain::ModelView::Create(model));
  model->eval();
  posttrain::SliceOptions options;  // q = 95, per tensor, per input
  start = std::chrono::steady_clock::now();
  auto reference = ValueOrDie(
      posttrain::SliceCriteria(view, exact, x, y, ClassOutputs(), options));
  const double slice_s = Seconds(start);
  struct Agree {
    double key = 0, key_min_class = 1, excluded = 0, excluded_min_class = 1;
    // What two random masks of the same sizes would give, per tensor.
    double key_chance = 0, excluded_chance = 0;
  };
  auto jaccard = [&](const posttrain::Profile& p) {
    auto slices = ValueOrDie(
        posttrain::SliceCriteria(view, p, x, y, ClassOutputs(), options));
    Agree a;
    for (size_t c = 0; c < slices.size(); ++c) {
      a.key_min_class =
          std::min(a.key_min_class, ValueOrDie(posttrain::KeySynapseJaccard(
                                        {slices[c]}, {reference[c]})));
      a.excluded_min_class = std::min(
          a.excluded_min_class, ValueOrDie(posttrain::ExcludedSynapseJaccard(
                                    {slices[c]}, {reference[c]})));
    }
    a.key = ValueOrDie(posttrain::KeySynapseJaccard(slices, reference));
    a.excluded =
        ValueOrDie(posttrain::ExcludedSynapseJaccard(slices, reference));
    double kb = 0, ke = 0, eb = 0, ee = 0;  // expected both / either
    for (size_t c = 0; c < slices.size(); ++c) {
      for (size_t k = 0; k < slices[c].layers.size(); ++k) {
        const double n = slices[c].layers[k].synapse_mask.numel();
        const double s1 = slices[c].layers[k].synapse_mask.sum().item<double>();
        const double s2 =
            reference[c].layers[k].synapse_mask.sum().item<double>();
        kb += s1 * s2 / n;
        ke += s1 + s2 - s1 * s2 / n;
        eb += (n - s1) * (n - s2) / n;
        ee += (n - s1) + (n - s2) - (n - s1) * (n - s2) / n;
      }
    }
    a.key_chance = kb / ke;
    a.excluded_chance = eb / ee;
    return a;
  };
  auto print = [](const Agree& a) {
    std::printf(
        "\"jaccard\": %.5f, \"jaccard_min_class\": %.5f, "
        "\"jaccard_random_masks\": %.5f, \"excluded_jaccard\": %.5f, "
        "\"excluded_jaccard_min_class\": %.5f, "
        "\"excluded_jaccard_random_masks\": %.5f}",
        a.key, a.key_min_class, a.key_chance, a.excluded, a.excluded_min_class,
        a.excluded_chance);
  };
  std::printf(
      "{\"section\": \"agreement\", \"threads\": %d, "
      "\"train_size\": %lld, \"epochs\": %d, \"q\": 95,\n",
      torch::get_num_threads(), static_cast<long long>(x.size(0)), epochs);
  std::printf(" \"epoch_s_with_profilers\": [%s],\n", Join(epoch_s).c_str());
  std::printf(
      " \"default\": {\"every_n_batches\": %d, \"profiled_samples\": "
      "%lld, ",
      posttrain::SliceProfilerOptions().every_n_batches,
      static_cast<long long>(online.profile()->count()));
  print(jaccard(*online.profile()));
  std::printf(",\n");
  std::printf(" \"last_epoch_rates\": [");
  for (size_t i = 0; i < extra.size(); ++i) {
    std::printf(
        "%s\n  {\"every_n_batches\": %d, \"sampling\": \"%s\", "
        "\"profiled_samples\": %lld, ",
        i ? "," : "", extra_setting[i].first,
        extra_setting[i].second == Sampling::kEpochTail ? "tail" : "every_nth",
        static_cast<long long>(extra[i]->profile()->count()));
    print(jaccard(*extra[i]->profile()));
  }
  std::printf("],\n");
  std::printf(
      " \"offline_profile_s\": %.3f, \"slice_10_classes_s\": %.3f, "
      "\"plain_epoch_s\": %.3f, \"slice_to_epoch_ratio\": %.3f}\n",
      offline_profile_s, slice_s, plain_epoch_s, slice_s / plain_epoch_s);
}

void Sizes() {
  posttrain::FashionMnistOptions data_options;
  data_options.train_limit = absl::GetFlag(FLAGS_sizes_inputs);
  data_options.validation_limit = 0;
  auto data = ValueOrDie(posttrain::LoadFashionMnist(data_options));
  const at::Tensor& x = data.train.images;
  const at::Tensor& y = data.train.labels;
  struct Size {
    const char* name;
    int64_t c1, c2, hidden;
  };
  std::printf(
      "{\"section\": \"sizes\", \"threads\": %d, \"inputs\": %lld, "
      "\"models\": [",
      torch::get_num_threads(), static_cast<long long>(x.size(0)));
  bool first = true;
  for (const Size& s :
       {Size{"half", 8, 16, 32}, Size{"example", 16, 32, 64},
        Size{"double", 32, 64, 128}, Size{"quadruple", 64, 128, 256}}) {
    torch::manual_seed(2);
    nn::Sequential model = SizedCnn(s.c1, s.c2, s.hidden);
    model->eval();
    auto profile = ValueOrDie(posttrain::ProfileModel(model, x, y, 10));
    auto view = ValueOrDie(posttrain::ModelView::Create(model));
    // One plain forward pass over the inputs, for scale.
    auto start = std::chrono::steady_clock::now();
    {
      torch::NoGradGuard g;
      for (int64_t b = 0; b < x.size(0); b += 256) {
        model->forward(x.narrow(0, b, std::min<int64_t>(256, x.size(0) - b)));
      }
    }
    const double forward_s = Seconds(start);
    // The forward with the profile points tapped, as slicing runs it.
    start = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < x.size(0); b += 256) {
      ValueOrDie(profile.NeuronValues(
          view, x.narrow(0, b, std::min<int64_t>(256, x.size(0) - b))));
    }
    const double values_s = Seconds(start);
    start = std::chrono::steady_clock::now();
    auto slices = ValueOrDie(posttrain::SliceCriteria(
        view, profile, x, y, ClassOutputs(), posttrain::SliceOptions()));
    const double slice_s = Seconds(start);
    std::printf(
        "%s\n  {\"model\": \"%s\", \"parameters\": %lld, "
        "\"slice_10_classes_s\": %.3f, \"per_1000_inputs_s\": %.4f, "
        "\"forward_s\": %.3f, \"neuron_values_s\": %.3f, "
        "\"slice_to_forward_ratio\": %.2f}",
        first ? "" : ",", s.name, static_cast<long long>(Parameters(model)),
        slice_s, slice_s * 1000.0 / x.size(0), forward_s, values_s,
        slice_s / forward_s);
    first = false;
  }
  std::printf("]}\n");
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  for (absl::string_view s :
       absl::StrSplit(absl::GetFlag(FLAGS_sections), ',')) {
    if (s == "overhead") {
      Overhead();
    } else if (s == "agreement") {
      Agreement();
    } else if (s == "sizes") {
      Sizes();
    } else {
      std::fprintf(stderr, "unknown section '%s'\n", std::string(s).c_str());
      return 1;
    }
    std::fflush(stdout);
  }
  return 0;
}

// Dare benchmark: trains the example CNN once at the main job's settings
// (HistoryRecorder + SliceProfiler), then runs the post-training phase of
// every Dare variant (dare, dare_no_slice, dare_no_transform, dare_last,
// dare_random) on its own copy of the trained model, and prints JSON: the
// phase's wall time split into augment, slice and tune against the
// training time, clean test accuracy, and FGSM / PGD (eps 0.1) robust
// accuracy under the transfer protocol (examples crafted once against the
// original) and FGSM under the adaptive protocol.
//
//   dare_bench --epochs=8 --threads=2
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "bench/tensor_memory.h"
#include "cnn_training.h"
#include "hooks/history_recorder.h"
#include "hooks/post_trainer.h"
#include "hooks/slice_profiler.h"
#include "robustness/attacks.h"
#include "robustness/dare.h"
#include "robustness/fashion_mnist.h"

ABSL_FLAG(int, epochs, 8, "training epochs");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(uint64_t, seed, 1, "seed");
ABSL_FLAG(std::string, variants,
          "dare,dare_no_slice,dare_no_transform,dare_last,dare_random",
          "variants to run");
ABSL_FLAG(std::string, lrs, "1e-4", "tuner lr grid");
ABSL_FLAG(int, tune_epochs, 10, "most tuning epochs per lr");
ABSL_FLAG(std::string, lr_search, "grid",
          "comma-separated: grid, halving (TunerOptions::kSuccessiveHalving); "
          "each variant runs once per search, on the same trained model");
ABSL_FLAG(int, halving_min_epochs, 2, "successive halving: first rung");
ABSL_FLAG(int64_t, mine_inputs, 10000, "validation images mined");
ABSL_FLAG(int64_t, attack_size, 2000, "test images attacked");
ABSL_FLAG(std::string, tmp, "/tmp/posttrain_dare_bench", "scratch directory");
ABSL_FLAG(bool, op_profile, false,
          "record the first variant's phase with LibTorch's profiler and "
          "print the ops' self time (the profiler slows the phase: its times "
          "are then not the phase's)");

namespace {

using posttrain::bench::Seconds;
namespace prof = torch::autograd::profiler;

// Self and inclusive time per op name, from the legacy profiler's
// push/pop events (each thread's list is properly nested).
void PrintOpProfile(const prof::thread_event_lists& lists, double phase_s,
                    bool first) {
  struct Total {
    int64_t calls = 0;
    double self_us = 0, inclusive_us = 0;
  };
  std::map<std::string, Total> totals;
  for (const auto& events : lists) {
    struct Open {
      const prof::LegacyEvent* push;
      double child_us;
    };
    std::vector<Open> stack;
    for (const prof::LegacyEvent& e : events) {
      if (e.kind() == prof::EventKind::PushRange) {
        stack.push_back({&e, 0.0});
      } else if (e.kind() == prof::EventKind::PopRange && !stack.empty()) {
        const Open open = stack.back();
        stack.pop_back();
        const double us = open.push->cpuElapsedUs(e);
        Total& t = totals[open.push->name()];
        ++t.calls;
        t.inclusive_us += us;
        t.self_us += us - open.child_us;
        if (!stack.empty()) stack.back().child_us += us;
      }
    }
  }
  std::vector<std::pair<std::string, Total>> rows(totals.begin(), totals.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return a.second.self_us > b.second.self_us;
  });
  std::printf("%s\n  {\"op_profile\": {\"phase_s_profiled\": %.2f, \"ops\": [",
              first ? "" : ",", phase_s);
  for (size_t i = 0; i < rows.size() && i < 25; ++i) {
    std::printf(
        "%s\n  {\"op\": \"%s\", \"calls\": %lld, \"self_s\": %.3f, "
        "\"inclusive_s\": %.3f}",
        i ? "," : "", rows[i].first.c_str(),
        static_cast<long long>(rows[i].second.calls),
        rows[i].second.self_us / 1e6, rows[i].second.inclusive_us / 1e6);
  }
  std::printf("]}}");
}

double Acc(const torch::nn::Sequential& m, const at::Tensor& x,
           const at::Tensor& y) {
  auto a = posttrain::Accuracy(m, x, y);
  return a.ok() ? *a : -1;
}

}  // namespace

// Records the peak of live tensor bytes within each stage of the phase
// (bench/tensor_memory.h), above the live bytes when the phase started.
class StagePeaks : public posttrain::ProgressSink {
 public:
  void Start() {
    using posttrain::bench::TensorMemory;
    base_ = TensorMemory::Live();
    stage_ = "setup";
    peaks_.clear();
    TensorMemory::ResetPeak();
  }
  void Update(const posttrain::ProgressUpdate& u) override {
    if (u.stage != stage_) Close(u.stage);
  }
  // Closes the last stage; returns "stage:MiB,..." in order.
  std::string Finish() {
    Close("");
    std::string out;
    for (const auto& [stage, bytes] : peaks_) {
      absl::StrAppendFormat(&out, "%s%s:%.2f", out.empty() ? "" : ",", stage,
                            bytes / 1048576.0);
    }
    return out;
  }
  // The highest peak of any stage.
  int64_t Max() const {
    int64_t m = 0;
    for (const auto& [stage, bytes] : peaks_) m = std::max(m, bytes);
    return m;
  }

 private:
  void Close(const std::string& next) {
    using posttrain::bench::TensorMemory;
    const int64_t peak = TensorMemory::Peak() - base_;
    bool found = false;
    for (auto& [stage, bytes] : peaks_) {
      if (stage == stage_) bytes = std::max(bytes, peak), found = true;
    }
    if (!found) peaks_.emplace_back(stage_, peak);
    stage_ = next;
    TensorMemory::ResetPeak();
  }
  int64_t base_ = 0;
  std::string stage_;
  std::vector<std::pair<std::string, int64_t>> peaks_;
};

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  posttrain::bench::TensorMemory::Install();
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  torch::manual_seed(seed);
  posttrain::FashionMnistOptions data_options;
  data_options.seed = seed;
  auto data = posttrain::LoadFashionMnist(data_options);
  if (!data.ok()) {
    std::fprintf(stderr, "%s\n", data.status().ToString().c_str());
    return 1;
  }
  const std::string dir = absl::GetFlag(FLAGS_tmp);
  std::filesystem::remove_all(dir);
  torch::nn::Sequential model = fmnist::MakeCnn();
  torch::optim::Adam optimizer(model->parameters(),
                               torch::optim::AdamOptions(1e-3));
  auto recorder =
      std::make_shared<posttrain::HistoryRecorder>(model, dir + "/history");
  posttrain::SliceProfilerOptions profiler_options;
  profiler_options.final_epoch = absl::GetFlag(FLAGS_epochs) - 1;  // as main
  auto profiler =
      std::make_shared<posttrain::SliceProfiler>(model, profiler_options);
  posttrain::CallbackList callbacks({recorder, profiler});
  if (!callbacks.OnTrainBegin().ok()) return 1;
  double train_s = 0;
  for (int epoch = 0; epoch < absl::GetFlag(FLAGS_epochs); ++epoch) {
    if (!callbacks.OnEpochBegin(epoch).ok()) return 1;
    train_s += fmnist::TrainEpoch(
                   model, optimizer, data->train, 128,
                   seed * 1000 + static_cast<uint64_t>(epoch),
                   [&](const at::Tensor& x, const at::Tensor& y,
                       const at::Tensor& logits, double loss) {
                     callbacks.OnBatchEnd({x, y, logits, loss}).IgnoreError();
                   })
                   .seconds;
    if (!callbacks.OnEpochEnd(epoch, {}).ok()) return 1;
  }
  if (!callbacks.OnTrainEnd().ok()) return 1;

  // One batch's working set, for the memory bound: a tuning step's forward
  // and backward (128 samples, parameter gradients included) and the
  // phase's largest forward without gradients (512 images: the tuner's
  // validation loss; mining, slicing and the guard run 256), on a copy of
  // the trained model. Live tensor bytes (bench/tensor_memory.h).
  using posttrain::bench::TensorMemory;
  int64_t step_bytes = 0, forward_bytes = 0;
  {
    auto copied = posttrain::CopyModel(model);
    if (!copied.ok()) return 1;
    torch::nn::Sequential probe = *copied;
    TensorMemory::ResetPeak();
    {
      at::Tensor out = probe->forward(data->train.images.narrow(0, 0, 128));
      torch::nn::functional::cross_entropy(out,
                                           data->train.labels.narrow(0, 0, 128))
          .backward();
    }
    step_bytes = TensorMemory::Peak() - TensorMemory::AtReset();
    for (auto& p : probe->parameters()) p.mutable_grad() = at::Tensor();
    torch::NoGradGuard no_grad;
    TensorMemory::ResetPeak();
    { at::Tensor out = probe->forward(data->train.images.narrow(0, 0, 512)); }
    forward_bytes = TensorMemory::Peak() - TensorMemory::AtReset();
  }
  const int64_t n =
      std::min(absl::GetFlag(FLAGS_attack_size), data->test.size());
  const at::Tensor x = data->test.images.narrow(0, 0, n);
  const at::Tensor y = data->test.labels.narrow(0, 0, n);
  posttrain::AttackOptions pgd_options;
  pgd_options.seed = seed;
  auto fgsm = posttrain::Fgsm(model, x, y, {});
  auto pgd = posttrain::Pgd(model, x, y, pgd_options);
  if (!fgsm.ok() || !pgd.ok()) return 1;
  std::printf(
      "{\"benchmark\": \"dare\", \"threads\": %d, \"epochs\": %d, "
      "\"training_s\": %.2f, \"profiler_s\": %.3f, "
      "\"attack_size\": %lld,\n",
      torch::get_num_threads(), absl::GetFlag(FLAGS_epochs), train_s,
      profiler->seconds(), static_cast<long long>(n));
  std::printf(
      " \"original\": {\"clean\": %.4f, \"fgsm\": %.4f, \"pgd\": "
      "%.4f},\n \"variants\": [",
      Acc(model, data->test.images, data->test.labels), Acc(model, *fgsm, y),
      Acc(model, *pgd, y));
  bool first = true;
  std::vector<std::pair<std::string, std::string>> runs;  // variant, search
  for (absl::string_view v :
       absl::StrSplit(absl::GetFlag(FLAGS_variants), ',')) {
    for (absl::string_view s :
         absl::StrSplit(absl::GetFlag(FLAGS_lr_search), ',')) {
      runs.emplace_back(std::string(v), std::string(s));
    }
  }
  for (const auto& [v, search] : runs) {
    auto copy = posttrain::CopyModel(model);
    if (!copy.ok()) return 1;
    posttrain::DareOptions dare;
    dare.variant = std::string(v);
    dare.validation = {data->validation.images, data->validation.labels};
    dare.slice_data = {data->train.images, data->train.labels};
    dare.max_mine_inputs = absl::GetFlag(FLAGS_mine_inputs);
    dare.pipeline.seed = seed;
    dare.pipeline.tuner.max_epochs = absl::GetFlag(FLAGS_tune_epochs);
    if (search == "halving") {
      dare.pipeline.tuner.search =
          posttrain::TunerOptions::Search::kSuccessiveHalving;
      dare.pipeline.tuner.halving_min_epochs =
          absl::GetFlag(FLAGS_halving_min_epochs);
    } else if (search != "grid") {
      std::fprintf(stderr, "--lr_search must be grid or halving\n");
      return 2;
    }
    dare.pipeline.tuner.learning_rates.clear();
    for (absl::string_view lr : absl::StrSplit(absl::GetFlag(FLAGS_lrs), ',')) {
      dare.pipeline.tuner.learning_rates.push_back(std::stod(std::string(lr)));
    }
    auto task = posttrain::MakeDareTask(dare);
    if (!task.ok()) {
      std::fprintf(stderr, "%s\n", task.status().ToString().c_str());
      return 1;
    }
    posttrain::PostTrainerOptions post;
    post.store_improved = false;
    post.report_dir = dir;
    StagePeaks stage_peaks;
    post.progress = &stage_peaks;
    posttrain::PostTrainer trainer(*copy, recorder, profiler, std::move(*task),
                                   post);
    const bool peak_reset = posttrain::bench::ResetPeakRss();
    TensorMemory::ResetPeak();
    const int64_t tensor_before = TensorMemory::Live();
    stage_peaks.Start();
    const int64_t rss_before_kib = posttrain::bench::ProcStatusKiB("VmRSS");
    const bool op_profile = first && absl::GetFlag(FLAGS_op_profile);
    if (op_profile) {
      prof::enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(
          torch::profiler::impl::ProfilerState::CPU));
    }
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = trainer.OnTrainBegin();
    if (s.ok()) s = trainer.OnTrainEnd();
    const double phase_s = Seconds(start);
    if (op_profile) {
      PrintOpProfile(prof::disableProfilerLegacy(), phase_s, first);
      first = false;
    }
    const int64_t peak_kib = posttrain::bench::ProcStatusKiB("VmHWM");
    const std::string stage_mib = stage_peaks.Finish();
    const int64_t tensor_growth = stage_peaks.Max();
    if (!s.ok()) {
      std::fprintf(stderr, "%s: %s\n", dare.variant.c_str(),
                   s.ToString().c_str());
      return 1;
    }
    const posttrain::PipelineResult& r = *trainer.result();
    auto adaptive = posttrain::Fgsm(*copy, x, y, {});
    const auto& f = r.augmentation.figures;
    // The memory bound of the miner's header: M, one more model and T
    // (inputs and references of T and of the guard part, float32).
    // References are the 64 outputs of the first Linear (p = 1).
    double model_numel = 0;
    for (const auto& t : model->parameters()) model_numel += t.numel();
    for (const auto& t : model->buffers()) model_numel += t.numel();
    const double model_mib = 4.0 * model_numel / 1048576;
    const double t_samples = (f.count("T") ? f.at("T") : 0.0) +
                             (f.count("guard_T") ? f.at("guard_T") : 0.0);
    const double t_mib =
        t_samples *
        (static_cast<double>(data->validation.images[0].numel()) + 64) * 4 /
        1048576;
    std::string trials;  // lr:epochs run:best epoch:best validation loss
    for (const posttrain::LearningRateTrial& t : r.tune.trials) {
      absl::StrAppendFormat(&trials, "%s%g:%d:%d:%.6g%s",
                            trials.empty() ? "" : " ", t.lr, t.epochs,
                            t.best_epoch, t.best_validation_loss,
                            t.eliminated ? ":out" : "");
    }
    // The two splits of the validation data the phase copies (SplitForGuard
    // at DareOptions' default guard fraction 0.1): the guard split and the
    // mined D, and the miner's [|D|, 64] reference table.
    const int64_t n_val = data->validation.size();
    const int64_t n_guard = std::llround(n_val * 0.1);
    const int64_t mine_flag = absl::GetFlag(FLAGS_mine_inputs);
    const int64_t n_mined =
        mine_flag > 0 ? std::min(mine_flag, n_val - n_guard) : n_val - n_guard;
    const double refs_mib = static_cast<double>(n_mined) * 64 * 4 / 1048576;
    // D goes after mining, before slicing copies its own sample of the
    // training data (at most max_slice_inputs): the larger of the two counts.
    const int64_t max_slice = posttrain::DefaultDarePipeline().max_slice_inputs;
    const int64_t n_sliced = max_slice > 0
                                 ? std::min(max_slice, data->train.size())
                                 : data->train.size();
    const double copied_inputs_mib =
        static_cast<double>(n_guard + std::max(n_mined, n_sliced)) *
        static_cast<double>(data->validation.images[0].numel()) * 4 / 1048576;
    // The stated bound (robustness/history_miner.h): the copied inputs, T, the
    // reference table, one batch's working set (the larger of a tuning step
    // and the largest no-grad forward), and the models the phase holds at
    // once: M, the history or regression model, the tuner's best weights,
    // gradients and Adam's two moments.
    constexpr double kMiB = 1048576.0;
    const double working_mib =
        static_cast<double>(std::max(step_bytes, forward_bytes)) / kMiB;
    const double bound_mib =
        copied_inputs_mib + t_mib + refs_mib + working_mib + 6 * model_mib;
    std::printf(
        "%s\n  {\"memory\": {\"peak_reset\": %s, \"rss_before_mib\": "
        "%.1f, \"phase_peak_growth_mib\": %.1f, "
        "\"phase_tensor_peak_growth_mib\": %.2f, \"model_mib\": %.2f, "
        "\"T_mib\": %.2f, \"references_mib\": %.2f, "
        "\"copied_inputs_mib\": %.2f, \"tuning_step_mib\": %.2f, "
        "\"forward_512_mib\": %.2f, "
        "\"bound_mib\": %.2f, \"within_bound\": %s, \"live_before_mib\": "
        "%.2f, \"stage_peak_mib\": \"%s\"}}",
        first ? "" : ",", peak_reset ? "true" : "false",
        rss_before_kib / 1024.0, (peak_kib - rss_before_kib) / 1024.0,
        tensor_growth / kMiB, model_mib, t_mib, refs_mib, copied_inputs_mib,
        step_bytes / kMiB, forward_bytes / kMiB, bound_mib,
        tensor_growth / kMiB <= bound_mib ? "true" : "false",
        tensor_before / kMiB, stage_mib.c_str());
    first = false;
    std::printf(
        "%s\n  {\"variant\": \"%s\", \"lr_search\": \"%s\", \"trials\": "
        "\"%s\", \"accepted\": %s, \"T_over_D\": %.4f, "
        "\"augment_s\": %.2f, \"slice_s\": %.2f, \"tune_s\": %.2f, "
        "\"phase_s\": %.2f, \"phase_to_training\": %.3f, \"lr\": %g, "
        "\"tune_epochs_run\": %d, \"guard_before\": %.4f, \"guard_after\": "
        "%.4f, \"clean\": %.4f, \"fgsm_transfer\": %.4f, \"pgd_transfer\": "
        "%.4f, \"fgsm_adaptive\": %.4f}",
        first ? "" : ",", dare.variant.c_str(), search.c_str(), trials.c_str(),
        r.tune.accepted ? "true" : "false", f.count("T/D") ? f.at("T/D") : 0.0,
        r.augment_seconds, r.slice_seconds, r.tune_seconds, phase_s,
        phase_s / train_s, r.tune.lr, r.tune.epochs_run,
        r.tune.guard_accuracy_before, r.tune.guard_accuracy_after,
        Acc(*copy, data->test.images, data->test.labels), Acc(*copy, *fgsm, y),
        Acc(*copy, *pgd, y), adaptive.ok() ? Acc(*copy, *adaptive, y) : -1.0);
    std::fflush(stdout);
    first = false;
  }
  std::printf("]}\n");
  std::filesystem::remove_all(dir);
  return 0;
}

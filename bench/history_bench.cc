// History store benchmark on real trained weights: bytes per epoch of every
// codec against torch::save of the same model, the lossy codec's error bound
// and the share of validation predictions it changes, single-thread write and
// read throughput, and the time and peak memory to load one epoch. Prints
// JSON.
//
//   history_bench --store=runs/fashion_mnist/history
//
// The input store is the one the main job leaves (any codec); its epochs are
// re-encoded with each codec into scratch stores.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "common/allocator.h"
#include "common/model_spec.h"
#include "common/module_state.h"
#include "history/file_format.h"
#include "history/store.h"
#include "robustness/fashion_mnist.h"

ABSL_FLAG(std::string, store, "runs/fashion_mnist/history",
          "history store written by the main job");
ABSL_FLAG(std::string, dump_dir, "",
          "if set: write every epoch's float32 tensors there as "
          "<epoch>_<name>.f32 (raw little-endian, for offline analysis) "
          "and exit");
ABSL_FLAG(std::string, tmp, "/tmp/posttrain_history_bench",
          "scratch directory");
ABSL_FLAG(int, repeats, 5, "repetitions of each timing (median reported)");
ABSL_FLAG(int64_t, validation_size, -1,
          "validation images for the prediction-change check (-1 = all)");
ABSL_FLAG(std::string, data_dir, posttrain::kFashionMnistDir,
          "Fashion-MNIST directory");
ABSL_FLAG(std::string, codecs, "raw,zstd,delta,lossy", "codecs to measure");
ABSL_FLAG(int, lossy_keyframe_bits,
          posttrain::HistoryOptions().lossy_keyframe_bits,
          "lossy codec: bits of keyframe values");
ABSL_FLAG(int, lossy_delta_bits, posttrain::HistoryOptions().lossy_delta_bits,
          "lossy codec: bits of delta values");
ABSL_FLAG(std::string, lossy_delta_step, "default",
          "lossy codec: step of delta tensors: range (max|delta| / qmax of "
          "the delta bits), keyframe_max (the keyframe's step), keyframe_std "
          "(4 std / qmax of the keyframe bits), or default (HistoryOptions)");
ABSL_FLAG(double, lossy_delta_step_factor,
          posttrain::HistoryOptions().lossy_delta_step_factor,
          "lossy codec: multiplier of the keyframe_* delta steps");
ABSL_FLAG(
    int, lossy_small_bits, posttrain::HistoryOptions().lossy_small_bits,
    "lossy codec: bits of tensors under lossy_min_elements (0: lossless)");
ABSL_FLAG(bool, lossy_diffusion,
          posttrain::HistoryOptions().lossy_error_diffusion,
          "lossy codec: error diffusion along each output row");
ABSL_FLAG(int, lossy_kernel_extra_bits,
          posttrain::HistoryOptions().lossy_kernel_extra_bits,
          "lossy codec: extra bits of convolution kernels (3+ dimensions)");
ABSL_FLAG(uint32_t, keyframe_interval,
          posttrain::HistoryOptions().keyframe_interval,
          "delta/lossy: every n-th blob of the store is a keyframe");
ABSL_FLAG(int64_t, lossy_min_elements,
          posttrain::HistoryOptions().lossy_min_elements,
          "lossy codec: smaller tensors are stored losslessly");
ABSL_FLAG(int, zstd_level, posttrain::HistoryOptions().zstd_level,
          "zstd level of every codec");
ABSL_FLAG(std::string, measure_load, "",
          "internal: load the last epoch of this store in a fresh process and "
          "print its time and peak memory");

namespace {

using namespace posttrain;  // NOLINT: a benchmark driver
using bench::Median;
using bench::Seconds;

void Die(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  std::exit(1);
}

LossyDeltaStep DeltaStepFlag() {
  const std::string v = absl::GetFlag(FLAGS_lossy_delta_step);
  if (v == "default") return HistoryOptions().lossy_delta_step;
  if (v == "range") return LossyDeltaStep::kDeltaRange;
  if (v == "keyframe_max") return LossyDeltaStep::kKeyframeMax;
  if (v == "keyframe_std") return LossyDeltaStep::kKeyframeStd;
  Die(absl::InvalidArgumentError(
      absl::StrCat("unknown --lossy_delta_step '", v, "'")));
  return LossyDeltaStep::kDeltaRange;
}

const char* DeltaStepName(LossyDeltaStep s) {
  switch (s) {
    case LossyDeltaStep::kDeltaRange:
      return "range";
    case LossyDeltaStep::kKeyframeMax:
      return "keyframe_max";
    case LossyDeltaStep::kKeyframeStd:
      return "keyframe_std";
  }
  return "?";
}

NamedTensors Clone(const NamedTensors& s) {
  NamedTensors out;
  for (const auto& nt : s) out.push_back({nt.name, nt.tensor.clone()});
  return out;
}

at::Tensor Predict(torch::nn::Sequential& model, const ImageDataset& d) {
  torch::NoGradGuard g;
  model->eval();
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < d.size(); b += 1000) {
    parts.push_back(
        model->forward(d.images.slice(0, b, std::min(d.size(), b + 1000)))
            .argmax(1));
  }
  return torch::cat(parts);
}

struct CodecResult {
  std::string name;
  double bytes_per_epoch = 0;
  double encode_mb_s = 0;  // EncodeBlob alone, in memory
  double decode_mb_s = 0;  // ParseBlobHeader + DecodeBlob alone
  double write_mb_s = 0;
  double read_mb_s = 0;
  double load_ms = 0;
  double load_peak_extra_mib = 0;
  double max_abs_error = 0;
  double changed_predictions = 0;
};

// In a fresh process (so the heap holds nothing reusable), loads the last
// epoch of `dir` into its model and prints "<ms> <peak extra KiB>".
int MeasureLoad(const std::string& dir) {
  auto store = HistoryStore::OpenReadOnly(dir);
  if (!store.ok()) Die(store.status());
  auto model = BuildSequential((*store)->model_spec());
  if (!model.ok()) Die(model.status());
  const int64_t last = (*store)->last_epoch();
  bench::ResetPeakRss();
  const int64_t base_kib = bench::ProcStatusKiB("VmRSS");
  const auto start = std::chrono::steady_clock::now();
  if (auto s = (*store)->LoadEpoch(last, **model); !s.ok()) Die(s);
  const double ms = 1e3 * Seconds(start);
  std::printf("%.3f %lld\n", ms,
              static_cast<long long>(bench::ProcStatusKiB("VmHWM") - base_kib));
  return 0;
}

std::pair<double, double> MeasureLoadInChild(const std::string& dir) {
  // Resolved here: inside popen's shell /proc/self/exe would be the shell.
  const std::string self = std::filesystem::read_symlink("/proc/self/exe");
  const std::string cmd =
      absl::StrCat("'", self, "' --measure_load='", dir, "'");
  FILE* p = popen(cmd.c_str(), "r");
  double ms = -1, kib = -1;
  if (p == nullptr || std::fscanf(p, "%lf %lf", &ms, &kib) != 2) {
    Die(absl::InternalError("load measurement failed"));
  }
  pclose(p);
  return {ms, kib};
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (!absl::GetFlag(FLAGS_measure_load).empty()) {
    return MeasureLoad(absl::GetFlag(FLAGS_measure_load));
  }
  // Freed activations stay mapped, as in the phase (common/allocator.h): the
  // prediction checks re-allocate the same buffers for every epoch. (Not in
  // the --measure_load child above, whose peak memory is a user's load.)
  posttrain::KeepFreedMemory();
  // Codec work is single-threaded by design; torch threads only speed up
  // the prediction check.
  torch::set_num_threads(2);
  auto source = HistoryStore::OpenReadOnly(absl::GetFlag(FLAGS_store));
  if (!source.ok()) Die(source.status());
  const pb::ModelSpec spec = (*source)->model_spec();
  std::vector<pb::EpochEntry> entries = (*source)->Epochs();
  std::vector<NamedTensors> states;
  {
    auto it = (*source)->NewIterator();
    while (it.Next()) states.push_back(Clone(it.state()));
    if (!it.status().ok()) Die(it.status());
  }
  if (states.empty()) Die(absl::NotFoundError("the store has no epochs"));
  if (const std::string dump = absl::GetFlag(FLAGS_dump_dir); !dump.empty()) {
    std::filesystem::create_directories(dump);
    for (size_t e = 0; e < states.size(); ++e) {
      for (const auto& nt : states[e]) {
        if (nt.tensor.scalar_type() != at::kFloat) continue;
        const std::string path =
            JoinPath(dump, absl::StrCat(e, "_", nt.name, ".f32"));
        std::ofstream f(path, std::ios::binary);
        f.write(static_cast<const char*>(nt.tensor.data_ptr()),
                static_cast<std::streamsize>(nt.tensor.nbytes()));
        f.close();
        if (!f) Die(absl::DataLossError(absl::StrCat("cannot write ", path)));
      }
    }
    std::printf("wrote %zu epochs to %s\n", states.size(), dump.c_str());
    return 0;
  }
  uint64_t raw_bytes = 0;
  for (const auto& nt : states.back()) raw_bytes += nt.tensor.nbytes();

  auto model_or = BuildSequential(spec);
  if (!model_or.ok()) Die(model_or.status());
  torch::nn::Sequential model = *model_or;
  if (auto s = LoadModuleState(states.back(), *model); !s.ok()) Die(s);
  std::ostringstream saved;
  torch::save(model, saved);
  const double torch_save_bytes = static_cast<double>(saved.str().size());

  FashionMnistOptions data_options;
  data_options.dir = absl::GetFlag(FLAGS_data_dir);
  data_options.seed = entries.back().seed();
  data_options.validation_limit = absl::GetFlag(FLAGS_validation_size);
  data_options.train_limit = 0;
  data_options.test_limit = 0;
  auto data = LoadFashionMnist(data_options);
  if (!data.ok()) Die(data.status());
  std::vector<at::Tensor> exact_predictions;
  for (const auto& s : states) {
    if (auto st = LoadModuleState(s, *model); !st.ok()) Die(st);
    exact_predictions.push_back(Predict(model, data->validation));
  }

  const int repeats = absl::GetFlag(FLAGS_repeats);
  const std::string tmp = absl::GetFlag(FLAGS_tmp);
  std::vector<CodecResult> results;
  const std::vector<std::string> wanted =
      absl::StrSplit(absl::GetFlag(FLAGS_codecs), ',');
  for (auto [name, codec] : std::vector<std::pair<std::string, pb::Codec>>{
           {"raw", pb::CODEC_RAW},
           {"zstd", pb::CODEC_ZSTD},
           {"delta", pb::CODEC_DELTA},
           {"lossy", pb::CODEC_LOSSY}}) {
    if (std::find(wanted.begin(), wanted.end(), name) == wanted.end()) continue;
    CodecResult r;
    r.name = name;
    std::vector<double> write_s, read_s, load_s, peak;
    const std::string dir = JoinPath(tmp, name);
    // The codec alone: encode every epoch in memory against the previous
    // one's reconstruction (as the store's writer does), then decode.
    std::vector<double> encode_s, decode_s;
    {
      BlobEncodeOptions enc;
      enc.codec = codec;
      enc.zstd_level = absl::GetFlag(FLAGS_zstd_level);
      enc.lossy_keyframe_bits = absl::GetFlag(FLAGS_lossy_keyframe_bits);
      enc.lossy_delta_bits = absl::GetFlag(FLAGS_lossy_delta_bits);
      enc.lossy_delta_step = DeltaStepFlag();
      enc.lossy_delta_step_factor =
          absl::GetFlag(FLAGS_lossy_delta_step_factor);
      enc.lossy_min_elements = absl::GetFlag(FLAGS_lossy_min_elements);
      enc.lossy_small_bits = absl::GetFlag(FLAGS_lossy_small_bits);
      enc.lossy_error_diffusion = absl::GetFlag(FLAGS_lossy_diffusion);
      enc.lossy_kernel_extra_bits =
          absl::GetFlag(FLAGS_lossy_kernel_extra_bits);
      BlobBuffers buffers;
      for (int rep = 0; rep < 3 * repeats; ++rep) {
        std::vector<std::string> files;
        double enc_s = 0;
        NamedTensors base;
        for (size_t e = 0; e < states.size(); ++e) {
          NamedTensors input = Clone(states[e]);
          NamedTensors recon;
          const bool chained =
              codec == pb::CODEC_DELTA || codec == pb::CODEC_LOSSY;
          const auto t = std::chrono::steady_clock::now();
          auto blob =
              EncodeBlob(static_cast<int64_t>(e), std::move(input),
                         chained && e > 0 ? &base : nullptr,
                         static_cast<int64_t>(e) - 1, enc, &buffers, &recon);
          enc_s += Seconds(t);
          if (!blob.ok()) Die(blob.status());
          std::string file = blob->head;
          file.append(blob->payload.data(), blob->payload.size());
          files.push_back(std::move(file));
          base = std::move(recon);
        }
        encode_s.push_back(enc_s);
        NamedTensors state;
        const auto t = std::chrono::steady_clock::now();
        for (size_t e = 0; e < files.size(); ++e) {
          auto h = ParseBlobHeader(files[e], "bench", static_cast<int64_t>(e));
          if (!h.ok()) Die(h.status());
          if (auto s = DecodeBlob(files[e], *h, "bench", &state); !s.ok())
            Die(s);
        }
        decode_s.push_back(Seconds(t));
      }
    }
    for (int rep = 0; rep < repeats; ++rep) {
      std::filesystem::remove_all(dir);
      HistoryOptions options;
      options.codec = codec;
      options.sync = false;  // codec and file-system cost, not disk flushes
      options.lossy_keyframe_bits = absl::GetFlag(FLAGS_lossy_keyframe_bits);
      options.lossy_delta_bits = absl::GetFlag(FLAGS_lossy_delta_bits);
      options.lossy_delta_step = DeltaStepFlag();
      options.lossy_delta_step_factor =
          absl::GetFlag(FLAGS_lossy_delta_step_factor);
      options.lossy_min_elements = absl::GetFlag(FLAGS_lossy_min_elements);
      options.lossy_small_bits = absl::GetFlag(FLAGS_lossy_small_bits);
      options.lossy_error_diffusion = absl::GetFlag(FLAGS_lossy_diffusion);
      options.lossy_kernel_extra_bits =
          absl::GetFlag(FLAGS_lossy_kernel_extra_bits);
      options.keyframe_interval = absl::GetFlag(FLAGS_keyframe_interval);
      options.zstd_level = absl::GetFlag(FLAGS_zstd_level);
      auto store = HistoryStore::Open(dir, options, spec);
      if (!store.ok()) Die(store.status());
      // Copies made before the clock starts: Append consumes its input.
      std::vector<NamedTensors> inputs;
      for (const auto& s : states) inputs.push_back(Clone(s));
      auto start = std::chrono::steady_clock::now();
      for (size_t e = 0; e < inputs.size(); ++e) {
        EpochMetadata meta;
        meta.epoch = entries[e].epoch();
        if (auto s = (*store)->Append(meta, std::move(inputs[e])); !s.ok())
          Die(s);
      }
      write_s.push_back(Seconds(start));
      start = std::chrono::steady_clock::now();
      auto it = (*store)->NewIterator();
      while (it.Next()) {
      }
      if (!it.status().ok()) Die(it.status());
      read_s.push_back(Seconds(start));
      // Loading the last epoch (the longest chain) into a model, in a fresh
      // process.
      auto [ms, kib] = MeasureLoadInChild(dir);
      load_s.push_back(ms / 1e3);
      peak.push_back(kib / 1024.0);
      if (rep == 0) {
        uint64_t bytes = 0;
        for (const auto& e : (*store)->Epochs()) bytes += e.blob_size();
        r.bytes_per_epoch = static_cast<double>(bytes) / states.size();
        r.max_abs_error = (*store)->manifest().lossy_max_abs_error();
        // Predictions of every decoded epoch against the exact weights.
        int64_t changed = 0, total = 0;
        auto it2 = (*store)->NewIterator();
        size_t i = 0;
        while (it2.Next()) {
          if (auto s = LoadModuleState(it2.state(), *model); !s.ok()) Die(s);
          at::Tensor p = Predict(model, data->validation);
          changed += p.ne(exact_predictions[i++]).sum().item<int64_t>();
          total += p.size(0);
        }
        r.changed_predictions =
            total ? static_cast<double>(changed) / total : 0;
      }
    }
    const double mb = static_cast<double>(raw_bytes) * states.size() / 1e6;
    r.encode_mb_s = mb / Median(encode_s);
    r.decode_mb_s = mb / Median(decode_s);
    r.write_mb_s = mb / Median(write_s);
    r.read_mb_s = mb / Median(read_s);
    r.load_ms = 1e3 * Median(load_s);
    r.load_peak_extra_mib = Median(peak);
    results.push_back(r);
  }
  std::filesystem::remove_all(tmp);

  std::printf("{\n  \"benchmark\": \"history_store\",\n");
  std::printf("  \"source_store\": \"%s\", \"epochs\": %zu,\n",
              absl::GetFlag(FLAGS_store).c_str(), states.size());
  std::printf("  \"model_fp32_bytes\": %llu, \"torch_save_bytes\": %.0f,\n",
              static_cast<unsigned long long>(raw_bytes), torch_save_bytes);
  std::printf(
      "  \"validation_images\": %lld, \"codec_threads\": 1, \"fsync\": "
      "false,\n",
      static_cast<long long>(data->validation.size()));
  std::printf(
      "  \"lossy_keyframe_bits\": %d, \"lossy_delta_bits\": %d, "
      "\"lossy_min_elements\": %lld, \"lossy_small_bits\": %d,\n"
      "  \"lossy_delta_step\": \"%s\", \"lossy_delta_step_factor\": %g, "
      "\"lossy_error_diffusion\": %s,\n",
      absl::GetFlag(FLAGS_lossy_keyframe_bits),
      absl::GetFlag(FLAGS_lossy_delta_bits),
      static_cast<long long>(absl::GetFlag(FLAGS_lossy_min_elements)),
      absl::GetFlag(FLAGS_lossy_small_bits), DeltaStepName(DeltaStepFlag()),
      absl::GetFlag(FLAGS_lossy_delta_step_factor),
      absl::GetFlag(FLAGS_lossy_diffusion) ? "true" : "false");
  std::printf("  \"codecs\": [\n");
  for (size_t i = 0; i < results.size(); ++i) {
    const CodecResult& r = results[i];
    std::printf(
        "    {\"codec\": \"%s\", \"bytes_per_epoch\": %.0f, "
        "\"smaller_than_torch_save\": %.2f, \"encode_MB_s\": %.0f, "
        "\"decode_MB_s\": %.0f, \"store_write_MB_s\": %.0f, "
        "\"store_read_MB_s\": %.0f, \"load_last_epoch_ms\": %.2f, "
        "\"load_peak_extra_MiB\": %.2f, \"max_abs_error\": %.3g, "
        "\"changed_validation_predictions\": %.5f}%s\n",
        r.name.c_str(), r.bytes_per_epoch, torch_save_bytes / r.bytes_per_epoch,
        r.encode_mb_s, r.decode_mb_s, r.write_mb_s, r.read_mb_s, r.load_ms,
        r.load_peak_extra_mib, r.max_abs_error, r.changed_predictions,
        i + 1 < results.size() ? "," : "");
  }
  std::printf("  ]\n}\n");
  return 0;
}

// Attack cross-check and speed (issue 10, acceptance 2 and 4): trains the
// Fashion-MNIST example CNN (seeded), writes its weights and the attacked
// test images as float32 IDX files, runs the library's FGSM, BIM and PGD at
// every ε of the protocol and C&W and JSMA once, and prints JSON with the
// robust accuracies, each attack's report and its images per second.
// scripts/golden/attacks_crosscheck.py then runs an independent PyTorch
// implementation on the same files and compares (it needs Debian's
// python3-torch; nothing in the C++ tests does).
//
//   attack_crosscheck --out=build/attack_crosscheck        # then:
//   python3 scripts/golden/attacks_crosscheck.py build/attack_crosscheck
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/bench_util.h"
#include "cnn_training.h"
#include "robustness/attacks.h"
#include "robustness/fashion_mnist.h"

ABSL_FLAG(std::string, out, "build/attack_crosscheck", "output directory");
ABSL_FLAG(int, epochs, 2, "training epochs of the example CNN");
ABSL_FLAG(int64_t, images, 2000, "test images attacked");
ABSL_FLAG(int64_t, cw_jsma_images, 200, "test images for C&W and JSMA");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(int64_t, batch_size, 256, "attack batch size");
ABSL_FLAG(uint64_t, seed, 1, "seed");

namespace {

// An N-dimensional float32 IDX file (magic 0x00000D00 | dims).
void WriteFloatIdx(const std::string& path, const at::Tensor& t) {
  const at::Tensor c = t.to(torch::kFloat).contiguous();
  std::string bytes;
  auto be32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<char>(v >> s));
  };
  be32(0x00000D00u | static_cast<uint32_t>(c.dim()));
  for (int64_t d : c.sizes()) be32(static_cast<uint32_t>(d));
  const float* p = c.data_ptr<float>();
  for (int64_t i = 0; i < c.numel(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &p[i], 4);
    be32(bits);
  }
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  torch::set_num_threads(absl::GetFlag(FLAGS_threads));
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  torch::manual_seed(seed);
  const std::string out = absl::GetFlag(FLAGS_out);
  std::filesystem::create_directories(out + "/weights");
  posttrain::FashionMnistOptions data_options;
  data_options.seed = seed;
  data_options.test_limit = absl::GetFlag(FLAGS_images);
  auto data = posttrain::LoadFashionMnist(data_options);
  if (!data.ok()) {
    std::fprintf(stderr, "error: %s\n", data.status().ToString().c_str());
    return 1;
  }
  torch::nn::Sequential model = fmnist::MakeCnn();
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-3));
  for (int e = 0; e < absl::GetFlag(FLAGS_epochs); ++e) {
    fmnist::TrainEpoch(model, adam, data->train, 128, seed + e);
  }
  model->eval();
  // Weights and buffers, named as PyTorch's nn.Sequential names them.
  std::vector<std::string> names;
  for (const auto& p : model->named_parameters()) {
    WriteFloatIdx(out + "/weights/" + p.key() + ".idx", p.value());
    names.push_back(p.key());
  }
  for (const auto& b : model->named_buffers()) {
    if (b.value().scalar_type() != torch::kFloat) continue;  // batch counts
    WriteFloatIdx(out + "/weights/" + b.key() + ".idx", b.value());
    names.push_back(b.key());
  }
  std::ofstream(out + "/weights/names.txt")
      << absl::StrJoin(names, "\n") << "\n";
  const posttrain::ImageDataset& test = data->test;
  if (auto s = posttrain::WriteIdxDataset(test, out + "/test-images.idx",
                                          out + "/test-labels.idx");
      !s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  }
  std::string json = absl::StrFormat(
      "{\"images\": %d, \"threads\": %d, \"batch_size\": %d, "
      "\"clean_accuracy\": %.6f, \"attacks\": [",
      test.size(), absl::GetFlag(FLAGS_threads),
      absl::GetFlag(FLAGS_batch_size),
      *posttrain::Accuracy(model, test.images, test.labels));
  bool first = true;
  auto record = [&](const std::string& name, const std::string& options,
                    const at::Tensor& x, const at::Tensor& y,
                    const absl::StatusOr<at::Tensor>& adv, double seconds,
                    const at::Tensor& targets = at::Tensor()) {
    if (!adv.ok()) {
      std::fprintf(stderr, "error: %s: %s\n", name.c_str(),
                   adv.status().ToString().c_str());
      std::exit(1);
    }
    auto r = posttrain::EvaluateAttack(model, x, *adv, y, targets);
    absl::StrAppend(&json, first ? "" : ", ",
                    absl::StrFormat("{\"name\": \"%s\", \"options\": %s, "
                                    "\"report\": %s, \"seconds\": %.3f, "
                                    "\"images_per_s\": %.1f}",
                                    name, options, r->ToJson(), seconds,
                                    x.size(0) / seconds));
    first = false;
  };
  const int64_t bs = absl::GetFlag(FLAGS_batch_size);
  for (double eps : {0.02, 0.05, 0.1}) {
    posttrain::AttackOptions fgsm;
    fgsm.epsilon = eps;
    fgsm.batch_size = bs;
    posttrain::AttackOptions bim = posttrain::BimDefaults();
    bim.epsilon = eps;
    bim.batch_size = bs;
    posttrain::AttackOptions pgd;
    pgd.epsilon = eps;
    pgd.seed = seed;
    pgd.batch_size = bs;
    auto t0 = std::chrono::steady_clock::now();
    auto a = posttrain::Fgsm(model, test.images, test.labels, fgsm);
    record(absl::StrFormat("fgsm_%g", eps), fgsm.Describe("fgsm"), test.images,
           test.labels, a, posttrain::bench::Seconds(t0));
    t0 = std::chrono::steady_clock::now();
    a = posttrain::Bim(model, test.images, test.labels, bim);
    record(absl::StrFormat("bim_%g", eps), bim.Describe("bim"), test.images,
           test.labels, a, posttrain::bench::Seconds(t0));
    t0 = std::chrono::steady_clock::now();
    a = posttrain::Pgd(model, test.images, test.labels, pgd);
    record(absl::StrFormat("pgd_%g", eps), pgd.Describe("pgd"), test.images,
           test.labels, a, posttrain::bench::Seconds(t0));
  }
  const posttrain::ImageDataset small =
      posttrain::Head(test, absl::GetFlag(FLAGS_cw_jsma_images));
  posttrain::CwOptions cw;
  cw.batch_size = bs;
  auto t0 = std::chrono::steady_clock::now();
  auto a = posttrain::CarliniWagnerL2(model, small.images, small.labels, cw);
  record("cw", cw.Describe(), small.images, small.labels, a,
         posttrain::bench::Seconds(t0));
  posttrain::JsmaOptions jsma;
  auto targets = posttrain::RandomTargets(small.labels, 10, seed);
  t0 = std::chrono::steady_clock::now();
  a = posttrain::Jsma(model, small.images, *targets, jsma);
  record("jsma", jsma.Describe(), small.images, small.labels, a,
         posttrain::bench::Seconds(t0), *targets);
  absl::StrAppend(&json, "]}");
  std::ofstream(out + "/cpp.json") << json << "\n";
  std::printf("%s\n", json.c_str());
  return 0;
}

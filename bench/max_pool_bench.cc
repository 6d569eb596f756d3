// max_pool_bench: LibTorch's max_pool2d against MaxPool2x2 (common/
// max_pool.h), forward and backward in grad mode, on the shapes of the
// example CNN's two pools in a tuning step (batch 128, post-ReLU maps).
// Prints JSON: milliseconds per forward+backward for each, and the ratio,
// measured alternately in one run.
//
//   build/bench/max_pool_bench [--threads=2] [--rounds=30]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/allocator.h"
#include "common/max_pool.h"

ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(int, rounds, 30, "forward+backward rounds per kernel and shape");

namespace {

double Millis(const at::Tensor& x, bool fast, int rounds) {
  at::Tensor grad;
  double total = 0;
  for (int r = -2; r < rounds; ++r) {  // two warm-up rounds
    at::Tensor input = x.detach().requires_grad_();
    const auto start = std::chrono::steady_clock::now();
    at::Tensor y =
        fast ? posttrain::MaxPool2x2(input) : at::max_pool2d(input, {2, 2});
    if (!grad.defined()) grad = at::randn(y.sizes());
    y.backward(grad);
    const double ms = std::chrono::duration<double, std::milli>(
                          std::chrono::steady_clock::now() - start)
                          .count();
    if (r >= 0) total += ms;
  }
  return total / rounds;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  at::set_num_threads(absl::GetFlag(FLAGS_threads));
  posttrain::KeepFreedMemory();  // as the phase runs (tuner/pipeline.cc)
  at::manual_seed(1);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  std::printf("{\"benchmark\": \"max_pool\", \"threads\": %d, \"shapes\": [",
              absl::GetFlag(FLAGS_threads));
  const int64_t shapes[2][4] = {{128, 16, 28, 28}, {128, 32, 14, 14}};
  for (int s = 0; s < 2; ++s) {
    const auto& d = shapes[s];
    const at::Tensor x = at::relu(at::randn({d[0], d[1], d[2], d[3]}));
    double aten = 0, fast = 0;
    for (int i = 0; i < 3; ++i) {  // alternate, to share the machine's noise
      aten += Millis(x, false, rounds);
      fast += Millis(x, true, rounds);
    }
    std::printf(
        "%s\n {\"shape\": [%ld, %ld, %ld, %ld], \"max_pool2d_ms\": %.3f, "
        "\"max_pool_2x2_ms\": %.3f, \"speedup\": %.2f}",
        s ? "," : "", static_cast<long>(d[0]), static_cast<long>(d[1]),
        static_cast<long>(d[2]), static_cast<long>(d[3]), aten / 3, fast / 3,
        aten / fast);
  }
  std::printf("]}\n");
  return 0;
}

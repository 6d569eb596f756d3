#include "tests/test_util.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace posttrain::testing {

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = absl::StrCat(::testing::TempDir(), "/", prefix, "-XXXXXX");
  char* dir = ::mkdtemp(tmpl.data());
  EXPECT_NE(dir, nullptr) << std::strerror(errno);
  return tmpl;
}

torch::nn::Sequential SmallCnn(uint64_t seed) {
  torch::manual_seed(seed);
  namespace nn = torch::nn;
  return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 4, 3).padding(1)),
                        nn::BatchNorm2d(4), nn::ReLU(), nn::MaxPool2d(2),
                        nn::Flatten(), nn::Linear(4 * 4 * 4, 16),
                        nn::BatchNorm1d(16), nn::ReLU(), nn::Linear(16, 3));
}

Blobs GaussianBlobs(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  at::Tensor y = torch::randint(0, 4, {n}, gen, torch::kLong);
  at::Tensor centers = torch::eye(4, 6) * 1.5;
  return {(centers.index_select(0, y) + torch::randn({n, 6}, gen))
              .to(torch::kFloat),
          y};
}

torch::nn::Sequential BlobsMlp(uint64_t seed) {
  torch::manual_seed(seed);
  namespace nn = torch::nn;
  return nn::Sequential(nn::Linear(6, 32), nn::ReLU(), nn::Linear(32, 16),
                        nn::ReLU(), nn::Linear(16, 4));
}

void SimulateEpoch(torch::nn::Sequential& model, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& p : model->parameters()) {
    p.add_((torch::randn(p.sizes(), gen) * 1e-3).to(p.device()));
  }
  for (auto& b : model->buffers()) {
    if (b.is_floating_point()) {
      b.mul_(0.9).add_((torch::rand(b.sizes(), gen) * 0.1).to(b.device()));
    } else {
      b.add_(7);
    }
  }
}

NamedTensors SyntheticState(int64_t epoch, int64_t scale) {
  auto base_gen = at::detail::createCPUGenerator(12345);
  NamedTensors s;
  s.push_back({"0.weight", torch::randn({8 * scale, 4, 3, 3}, base_gen) * 0.1});
  s.push_back({"0.bias", torch::randn({8 * scale}, base_gen) * 0.1});
  s.push_back({"2.weight", torch::randn({10, 64 * scale}, base_gen) * 0.05});
  s.push_back({"1.num_batches_tracked", torch::full({}, 0, torch::kLong)});
  auto gen =
      at::detail::createCPUGenerator(1000 + static_cast<uint64_t>(epoch));
  for (auto& nt : s) {
    if (nt.tensor.is_floating_point()) {
      // The state of epoch e is the base plus e seeded steps, like training.
      for (int64_t e = 0; e < epoch % 5; ++e) {
        nt.tensor.add_(torch::randn(nt.tensor.sizes(), gen) * 1e-3);
      }
      nt.tensor.add_(static_cast<double>(epoch) * 1e-4);
    } else {
      nt.tensor.fill_(epoch * 100);
    }
  }
  return s;
}

std::string DiffStates(const NamedTensors& a, const NamedTensors& b) {
  if (a.size() != b.size()) {
    return absl::StrCat("sizes differ: ", a.size(), " vs ", b.size());
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const auto& x = a[i];
    const auto& y = b[i];
    if (x.name != y.name) return absl::StrCat("name ", x.name, " vs ", y.name);
    if (x.tensor.scalar_type() != y.tensor.scalar_type()) {
      return absl::StrCat(x.name, ": dtype differs");
    }
    if (x.tensor.sizes() != y.tensor.sizes()) {
      return absl::StrCat(x.name, ": shape differs");
    }
    at::Tensor cx = x.tensor.contiguous(), cy = y.tensor.contiguous();
    if (std::memcmp(cx.data_ptr(), cy.data_ptr(), cx.nbytes()) != 0) {
      return absl::StrCat(x.name, ": bytes differ");
    }
  }
  return "";
}

uint8_t ReadByteAt(const std::string& path, uint64_t offset) {
  std::string s = ReadFileBytes(path);
  return static_cast<uint8_t>(s.at(offset));
}

void FlipByteAt(const std::string& path, uint64_t offset) {
  std::string s = ReadFileBytes(path);
  s.at(offset) = static_cast<char>(s.at(offset) ^ 0x5a);
  WriteFileBytes(path, s);
}

uint64_t FileSize(const std::string& path) {
  return ReadFileBytes(path).size();
}

void WriteFileBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace posttrain::testing

// The small model the history seeds are recorded from (fuzz/make_seeds.cc)
// and whose state the blob fuzzer decodes onto.
#ifndef POSTTRAIN_FUZZ_SEED_MODEL_H_
#define POSTTRAIN_FUZZ_SEED_MODEL_H_

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

namespace posttrain::fuzz {

inline torch::nn::Sequential MakeSeedModel() {
  return torch::nn::Sequential(torch::nn::Linear(6, 4), torch::nn::ReLU(),
                               torch::nn::Linear(4, 2));
}

}  // namespace posttrain::fuzz

#endif  // POSTTRAIN_FUZZ_SEED_MODEL_H_

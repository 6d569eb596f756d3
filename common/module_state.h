// Module state: a module's parameters and buffers as an ordered list of named
// tensors (the names of its state dict), and the way back into a module.
//
// Example:
//   PT_ASSIGN_OR_RETURN(NamedTensors state, CopyModuleState(*model));
//   // ... train ...
//   PT_RETURN_IF_ERROR(LoadModuleState(state, *model));  // roll back
//
// Thread safety: the functions read or write the module; the caller keeps
// other threads from using it meanwhile.
#ifndef POSTTRAIN_COMMON_MODULE_STATE_H_
#define POSTTRAIN_COMMON_MODULE_STATE_H_

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace posttrain {

struct NamedTensor {
  std::string name;
  at::Tensor tensor;
};
using NamedTensors = std::vector<NamedTensor>;

// Returns detached, contiguous CPU copies of every parameter, then every
// buffer, of `module` (recursively), named as in its state dict. Undefined
// buffers are skipped. The copy owns its memory: later training steps do not
// change it.
absl::StatusOr<NamedTensors> CopyModuleState(const torch::nn::Module& module);

// Copies `state` into the parameters and buffers of `module` by name, onto
// their devices. Every tensor of the module must be present with the same
// shape and dtype and no extra name may appear; otherwise InvalidArgument
// naming the tensor, and the module is left unchanged (all checks run before
// the first copy).
absl::Status LoadModuleState(const NamedTensors& state,
                             torch::nn::Module& module);

// Puts a module (and its children) in eval mode for the guard's lifetime and
// restores the mode it had: for an extra forward inside a training loop
// (BatchNorm reads its running statistics and does not update them; Dropout
// is off and draws no random numbers).
class EvalModeGuard {
 public:
  explicit EvalModeGuard(torch::nn::Module& module);
  ~EvalModeGuard();
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  // Every module of the tree with its mode (children may differ from the
  // root, e.g. a frozen BatchNorm kept in eval mode).
  std::vector<std::pair<torch::nn::Module*, bool>> modes_;
};

}  // namespace posttrain

#endif  // POSTTRAIN_COMMON_MODULE_STATE_H_

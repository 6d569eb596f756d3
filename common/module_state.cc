#include "common/module_state.h"

#include <torch/nn/module.h>

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

std::string ShapeString(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ","), "]");
}

// Parameters first, then buffers, each in registration order.
std::vector<std::pair<std::string, at::Tensor>> ModuleTensors(
    const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    out.emplace_back(p.key(), p.value());
  }
  for (const auto& b : module.named_buffers(/*recurse=*/true)) {
    if (b.value().defined()) out.emplace_back(b.key(), b.value());
  }
  return out;
}

}  // namespace

absl::StatusOr<NamedTensors> CopyModuleState(const torch::nn::Module& module) {
  NamedTensors state;
  PT_RETURN_IF_ERROR(CallTorch("copying module state", [&] {
    torch::NoGradGuard no_grad;
    for (auto& [name, t] : ModuleTensors(module)) {
      at::Tensor copy = t.detach().to(at::kCPU).contiguous();
      // to()/contiguous() return the same storage when nothing changes.
      if (copy.data_ptr() == t.data_ptr()) copy = copy.clone();
      state.push_back({name, std::move(copy)});
    }
  }));
  return state;
}

absl::Status LoadModuleState(const NamedTensors& state,
                             torch::nn::Module& module) {
  auto targets = ModuleTensors(module);
  absl::flat_hash_map<std::string, const at::Tensor*> by_name;
  for (const NamedTensor& nt : state) {
    if (!by_name.emplace(nt.name, &nt.tensor).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", nt.name, "' appears twice in the state"));
    }
  }
  for (const auto& [name, t] : targets) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "' of the model is missing from the state"));
    }
    const at::Tensor& src = *it->second;
    if (!src.defined() || src.sizes() != t.sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': stored shape ",
                       src.defined() ? ShapeString(src) : "undefined",
                       " does not match the model's ", ShapeString(t)));
    }
    if (src.scalar_type() != t.scalar_type()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "': stored dtype ",
          c10::toString(src.scalar_type()), " does not match the model's ",
          c10::toString(t.scalar_type())));
    }
  }
  if (by_name.size() != targets.size()) {
    absl::flat_hash_map<std::string, bool> known;
    for (const auto& [name, t] : targets) known[name] = true;
    for (const NamedTensor& nt : state) {
      if (!known.contains(nt.name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", nt.name, "' of the state is not in the model"));
      }
    }
  }
  return CallTorch("loading module state", [&] {
    torch::NoGradGuard no_grad;
    for (auto& [name, t] : targets) t.copy_(*by_name.at(name));
  });
}

EvalModeGuard::EvalModeGuard(torch::nn::Module& module) {
  for (const auto& m : module.modules(/*include_self=*/true)) {
    modes_.emplace_back(m.get(), m->is_training());
  }
  module.eval();
}

EvalModeGuard::~EvalModeGuard() {
  // Module::train(bool) recurses, so restore each module alone, parents
  // first: a parent's call would overwrite its children again.
  for (const auto& [m, training] : modes_) m->train(training);
}

}  // namespace posttrain

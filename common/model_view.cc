#include "common/model_view.h"

#include <ATen/core/grad_mode.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/pooling.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <typeinfo>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/batch_norm_eval.h"
#include "common/max_pool.h"
#include "common/model_spec.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {

struct ModelView::Impl {
  pb::ModelSpec spec;
  std::vector<Layer> layers;
  std::vector<int> weighted;
  // Parallel to layers. AnyModule::forward is non-const; running a forward
  // does not change the view.
  mutable std::vector<torch::nn::AnyModule> modules;
  // Parallel to layers: the module when it is exactly a
  // torch::nn::MaxPool2dImpl (not a user's subclass, whose forward may
  // differ), so MaxPool2x2 may run in its place; null otherwise. Its
  // options are read at each forward (they are a public field).
  std::vector<const torch::nn::MaxPool2dImpl*> max_pools;
  // Parallel to layers: the module when it is exactly a
  // torch::nn::BatchNorm2dImpl, so BatchNormEval may run it in grad mode
  // (read at each forward: its mode and options may change); null otherwise.
  std::vector<const torch::nn::BatchNorm2dImpl*> batch_norms;
};

namespace {

// Walks the Sequential and its spec together (DescribeSequential visits
// children in the same order), collecting leaves.
absl::Status Collect(
    const torch::nn::SequentialImpl& seq,
    const google::protobuf::RepeatedPtrField<pb::LayerSpec>& specs,
    std::vector<ModelView::Layer>* layers,
    std::vector<torch::nn::AnyModule>* modules) {
  if (static_cast<int>(seq.size()) != specs.size()) {
    return absl::InternalError("model and its spec disagree on layer count");
  }
  int i = 0;
  for (const torch::nn::AnyModule& any : seq) {
    const pb::LayerSpec& spec = specs.Get(i++);
    if (spec.kind() == pb::LayerSpec::SEQUENTIAL) {
      auto* child =
          dynamic_cast<const torch::nn::SequentialImpl*>(any.ptr().get());
      if (child == nullptr) {
        return absl::InternalError(
            absl::StrCat("layer '", spec.name(), "' is not a Sequential"));
      }
      PT_RETURN_IF_ERROR(Collect(*child, spec.children(), layers, modules));
      continue;
    }
    ModelView::Layer layer;
    layer.name = spec.name();
    layer.spec = spec;
    layer.weighted = spec.kind() == pb::LayerSpec::LINEAR ||
                     spec.kind() == pb::LayerSpec::CONV2D;
    layers->push_back(std::move(layer));
    modules->push_back(any);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelView> ModelView::Create(
    const torch::nn::Sequential& model) {
  PT_ASSIGN_OR_RETURN(pb::ModelSpec spec, DescribeSequential(model));
  auto impl = std::make_shared<Impl>();
  impl->spec = std::move(spec);
  PT_RETURN_IF_ERROR(
      Collect(*model, impl->spec.layers(), &impl->layers, &impl->modules));
  if (impl->layers.empty()) {
    return absl::InvalidArgumentError("model has no layers");
  }
  for (int i = 0; i < static_cast<int>(impl->layers.size()); ++i) {
    if (impl->layers[i].weighted) impl->weighted.push_back(i);
    const torch::nn::Module* m = impl->modules[i].ptr().get();
    impl->max_pools.push_back(
        typeid(*m) == typeid(torch::nn::MaxPool2dImpl)
            ? dynamic_cast<const torch::nn::MaxPool2dImpl*>(m)
            : nullptr);
    impl->batch_norms.push_back(
        typeid(*m) == typeid(torch::nn::BatchNorm2dImpl)
            ? dynamic_cast<const torch::nn::BatchNorm2dImpl*>(m)
            : nullptr);
  }
  return ModelView(std::move(impl));
}

const std::vector<ModelView::Layer>& ModelView::layers() const {
  return impl_->layers;
}
const std::vector<int>& ModelView::weighted_layers() const {
  return impl_->weighted;
}
const pb::ModelSpec& ModelView::spec() const { return impl_->spec; }

at::Tensor ModelView::Weight(int index) const {
  if (index < 0 || index >= size() || !impl_->layers[index].weighted) return {};
  const auto params = impl_->modules[index].ptr()->named_parameters(false);
  const at::Tensor* w = params.find("weight");
  return w ? *w : at::Tensor();
}

torch::nn::Module& ModelView::module(int index) const {
  return *impl_->modules.at(index).ptr();
}

absl::StatusOr<int> ModelView::IndexOf(absl::string_view name) const {
  for (int i = 0; i < size(); ++i) {
    if (impl_->layers[i].name == name) return i;
  }
  return absl::NotFoundError(
      absl::StrCat("the model has no layer '", name, "'"));
}

absl::StatusOr<at::Tensor> ModelView::Forward(
    const at::Tensor& x, int end, const std::vector<int>& taps,
    std::vector<at::Tensor>* tapped) const {
  if (end < 1 || end > size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward end ", end, " outside [1, ", size(), "]"));
  }
  for (int t : taps) {
    if (t < 0 || t >= end) {
      return absl::InvalidArgumentError(
          absl::StrCat("tapped layer ", t, " outside [0, ", end, ")"));
    }
  }
  if (!taps.empty() && tapped == nullptr) {
    return absl::InvalidArgumentError("taps given without an output vector");
  }
  if (tapped) tapped->assign(taps.size(), at::Tensor());
  const bool channels_last =
      ChannelsLastInference() && !at::GradMode::is_enabled() && x.defined() &&
      x.device().is_cpu() && x.scalar_type() == at::kFloat;
  // NCHW runs (tuning's forward and backward) take the vectorized 2x2 max
  // pooling; channels-last runs already have a fast kernel.
  const bool fast_pool = !channels_last && FastMaxPool();
  // With grad, an eval-mode BatchNorm2d's backward need not reduce for the
  // weight and bias gradients that tuning never asks for.
  const bool fast_batch_norm = at::GradMode::is_enabled() && FastBatchNorm();
  auto plain = [&](const at::Tensor& t) {
    return channels_last && t.dim() == 4 ? t.contiguous() : t;
  };
  at::Tensor h = x;
  // One try around the loop: the error's context (the layer's name and
  // summary) is formatted only when a layer throws, not on every forward.
  int i = 0;
  try {
    for (; i < end; ++i) {
      if (channels_last && h.dim() == 4) {
        h = h.contiguous(at::MemoryFormat::ChannelsLast);
      }
      if (fast_pool && impl_->max_pools[i] != nullptr &&
          MaxPool2x2Applies(impl_->max_pools[i]->options, h)) {
        h = MaxPool2x2(h);  // max_pool2d's values and gradients, faster
      } else if (fast_batch_norm && impl_->batch_norms[i] != nullptr &&
                 BatchNormEvalApplies(*impl_->batch_norms[i], h)) {
        h = BatchNormEval(*impl_->batch_norms[i], h);  // the same, bit for bit
      } else {
        h = impl_->modules[i].forward(h);
      }
      for (size_t k = 0; k < taps.size(); ++k) {
        if (taps[k] == i) (*tapped)[k] = plain(h);
      }
    }
  } catch (...) {
    return StatusFromCurrentException(
        absl::StrCat("forward of layer '", impl_->layers[i].name, "' (",
                     LayerSummary(impl_->layers[i].spec), ")"));
  }
  return plain(h);
}

namespace {
// A process-wide switch, on unless the environment sets `var` to "0".
std::atomic<bool>* NewEnvSwitch(const char* var) {
  const char* v = std::getenv(var);
  return new std::atomic<bool>(v == nullptr || std::string(v) != "0");
}
std::atomic<bool>& ChannelsLastFlag() {
  static std::atomic<bool>* flag = NewEnvSwitch("POSTTRAIN_CHANNELS_LAST");
  return *flag;
}
std::atomic<bool>& FastMaxPoolFlag() {
  static std::atomic<bool>* flag = NewEnvSwitch("POSTTRAIN_FAST_MAX_POOL");
  return *flag;
}
std::atomic<bool>& FastBatchNormFlag() {
  static std::atomic<bool>* flag = NewEnvSwitch("POSTTRAIN_FAST_BATCH_NORM");
  return *flag;
}
}  // namespace

bool ChannelsLastInference() { return ChannelsLastFlag().load(); }
void SetChannelsLastInference(bool on) { ChannelsLastFlag().store(on); }
bool FastMaxPool() { return FastMaxPoolFlag().load(); }
void SetFastMaxPool(bool on) { FastMaxPoolFlag().store(on); }
bool FastBatchNorm() { return FastBatchNormFlag().load(); }
void SetFastBatchNorm(bool on) { FastBatchNormFlag().store(on); }

}  // namespace posttrain

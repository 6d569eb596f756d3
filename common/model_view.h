// ModelView: a flat, named view of the leaf layers of a torch::nn::Sequential
// (nested Sequentials flattened), built on the same pb::ModelSpec the history
// store keeps, so there is one description of the layers. The view shares the
// user's modules: running it runs the user's weights.
//
// Example:
//   PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(model));
//   const int last_hidden = view.weighted_layers().end()[-2] + 1;  // its ReLU
//   std::vector<at::Tensor> taps;
//   PT_ASSIGN_OR_RETURN(at::Tensor logits,
//                       view.Forward(x, view.size(), {last_hidden}, &taps));
//
// Thread safety: const methods may run concurrently if the modules' forwards
// may (eval mode).
#ifndef POSTTRAIN_COMMON_MODEL_VIEW_H_
#define POSTTRAIN_COMMON_MODEL_VIEW_H_

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/model_spec.pb.h"

namespace torch::nn {
class Module;
class Sequential;
}  // namespace torch::nn

namespace posttrain {

class ModelView {
 public:
  struct Layer {
    std::string name;       // dotted path, the state-dict prefix ("3", "0.1")
    pb::LayerSpec spec;     // kind and options (no children)
    bool weighted = false;  // Linear or Conv2d: has synapses
  };

  // Errors: an unsupported layer (named), an empty model.
  static absl::StatusOr<ModelView> Create(const torch::nn::Sequential& model);

  // Leaf layers in forward order.
  const std::vector<Layer>& layers() const;
  int size() const { return static_cast<int>(layers().size()); }
  // Indexes into layers() of the weighted layers, in forward order.
  const std::vector<int>& weighted_layers() const;
  // The description of the whole model (nested, as stored in a history).
  const pb::ModelSpec& spec() const;
  // The weight of weighted layer `index` (the user's parameter, shared);
  // an undefined tensor for other layers.
  at::Tensor Weight(int index) const;
  // The module of layer `index` (shared with the user's model), e.g. to
  // switch its mode; index must be in [0, size()).
  torch::nn::Module& module(int index) const;
  // Index of the layer with this name; NotFound naming it otherwise.
  absl::StatusOr<int> IndexOf(absl::string_view name) const;

  // Runs layers [0, end) on `x` and returns the last one's output (end ==
  // size(): the model's output; this is truncation at layer end - 1). The
  // outputs of the layers in `taps` (each in [0, end)) go to `*tapped`, in
  // the order of `taps`. Errors: indexes out of range, torch errors (shape
  // mismatch) naming the layer.
  //
  // Without grad (mining, slicing, validation losses) on the CPU, 4-D
  // float activations run in channels-last memory when
  // ChannelsLastInference() is on: LibTorch 1.13's CPU max pooling is
  // about 9x faster there, a forward of the example CNN about 2x
  // (bench/channels_last_probe.py), and its outputs were bit-identical.
  // The returned tensor and the taps are contiguous as usual. Other
  // forwards (tuning's, with grad) run a plain torch::nn::MaxPool2d with a
  // 2x2 kernel and stride 2 through MaxPool2x2 (common/max_pool.h): the
  // same values and gradients, bit for bit, several times faster; with
  // grad, a plain torch::nn::BatchNorm2d in eval mode runs through
  // BatchNormEval (common/batch_norm_eval.h), whose backward skips the
  // weight and bias reductions unless their gradients are wanted.
  absl::StatusOr<at::Tensor> Forward(
      const at::Tensor& x, int end, const std::vector<int>& taps = {},
      std::vector<at::Tensor>* tapped = nullptr) const;

 private:
  struct Impl;
  explicit ModelView(std::shared_ptr<const Impl> impl)
      : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Whether ModelView::Forward runs no-grad CPU forwards in channels-last
// memory (above). On by default; the environment variable
// POSTTRAIN_CHANNELS_LAST=0 turns it off for the process (to compare).
bool ChannelsLastInference();
void SetChannelsLastInference(bool on);
// Whether ModelView::Forward runs MaxPool2x2 (common/max_pool.h) for a
// plain 2x2 MaxPool2d outside the channels-last path (default on;
// POSTTRAIN_FAST_MAX_POOL=0 turns it off, to compare).
bool FastMaxPool();
void SetFastMaxPool(bool on);
// Whether ModelView::Forward runs BatchNormEval (common/batch_norm_eval.h)
// for an eval-mode BatchNorm2d in grad mode (default on;
// POSTTRAIN_FAST_BATCH_NORM=0 turns it off, to compare).
bool FastBatchNorm();
void SetFastBatchNorm(bool on);

}  // namespace posttrain

#endif  // POSTTRAIN_COMMON_MODEL_VIEW_H_

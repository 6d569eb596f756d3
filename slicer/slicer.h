// Slicer: NNSlicer's forward and backward analysis (ALGORITHMS.md §1.2-1.4;
// Zhang et al., FSE 2020; paper §3.1.1), written as two matrix products per
// weighted layer, and the selection of key synapses and key neurons.
//
// For every input σ of a criterion, Δy_n(σ) = y_n(σ) - ȳ_n(D) at every
// profile point; the backward walk seeds CONTRIB = +1 at the criterion's
// output neuron and, per weighted layer with s_out = sign(CONTRIB_out) ⊙
// sign(Δy_out) and s_in = sign(Δy_in):
//   COUNT     += sign(W) ⊙ (s_outᵀ · s_in)
//   CONTRIB_in = s_in ⊙ (s_out · sign(W))
// Conv2d synapses use w_hn = Σ_{kh,kw} W[n,h] (groups respected); a Flatten
// between a Conv2d and a Linear sums CONTRIB of a channel's elements and
// averages their Δy.
//
// Example:
//   std::vector<at::Tensor> counts;
//   PT_RETURN_IF_ERROR(AccumulateCounts(view, profile, images_of_class_3,
//                                       /*target=*/3, &counts));
//   PT_ASSIGN_OR_RETURN(Slice slice, SelectKeySynapses(view, counts, {}));
//
// Thread safety: free functions; the model must not train meanwhile.
#ifndef POSTTRAIN_SLICER_SLICER_H_
#define POSTTRAIN_SLICER_SLICER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_view.h"
#include "slicer/profile.h"

namespace posttrain {

struct SliceOptions {
  // Percentage of synapses kept as key synapses, in (0, 100].
  // ALGORITHMS.md defaults: 95 (Dare), 80 (FMT).
  double q = 95.0;
  // false (default): the top q% of each weight tensor. true: the top q% of
  // all synapses of the model ranked together (ties: earlier layer, then
  // lower index). A Conv2d synapse (a kernel slice) counts once.
  bool global_ranking = false;
  // false (default): Eq. 6 per input, Δy(σ) = y(σ) - ȳ(D), counts summed
  // over the criterion's inputs. true: Eq. 6 read literally, one Δy =
  // ȳ(D'_c) - ȳ(D) per criterion from the profile's criterion means (the
  // inputs are not looked at; counts are -1, 0 or +1). ALGORITHMS.md §1.2.
  bool aggregated = false;
  // Inputs per forward in SliceCriteria.
  int64_t batch_size = 256;
};

// The slice of one weighted layer.
struct LayerSlice {
  std::string layer;        // name of the weighted layer
  at::Tensor counts;        // int64 [n_out, n_in]: COUNT per synapse
  at::Tensor synapse_mask;  // bool, the weight's shape: key synapses
  at::Tensor neuron_mask;   // bool [n_out]: outputs with a key synapse
};

struct Slice {
  std::vector<LayerSlice> layers;  // the weighted layers, in forward order
};

// Serialization (slicer/profile.proto). FromProto validates every size and
// names the layer at fault.
pb::SliceProto SliceToProto(const Slice& slice, int criterion, double q);
absl::StatusOr<Slice> SliceFromProto(const pb::SliceProto& proto);

// COUNTs of several criteria: counts[c] holds one int64 [n_out, n_in] per
// weighted layer (created on first use), inputs[c] the inputs counted.
struct CriterionCounts {
  std::vector<std::vector<at::Tensor>> counts;
  std::vector<int64_t> inputs;
};

// Adds the COUNTs of a batch that mixes criteria: sample i belongs to
// criterion criteria[i] (int64 [B]; -1: skipped), whose output neuron is
// outputs[criteria[i]]. One forward and one backward walk serve all the
// criteria of the batch. `*counts` is sized to outputs.size() when empty.
absl::Status AccumulateCounts(const ModelView& view, const Profile& profile,
                              const at::Tensor& inputs,
                              const at::Tensor& criteria,
                              const std::vector<int64_t>& outputs,
                              CriterionCounts* counts);

// The counts of the `aggregated` option: one Δy per criterion from the
// profile's criterion means. Error: a criterion without profiled samples.
absl::StatusOr<CriterionCounts> AggregatedCounts(
    const ModelView& view, const Profile& profile,
    const std::vector<int64_t>& outputs);

// Slices every criterion c (output neuron outputs[c]) in one pass over
// `inputs` (criterion ids in `criteria`, int64 [N]), in batches of
// options.batch_size: counts, then key synapses. Errors: a criterion
// without inputs (named), and those of the functions above.
absl::StatusOr<std::vector<Slice>> SliceCriteria(
    const ModelView& view, const Profile& profile, const at::Tensor& inputs,
    const at::Tensor& criteria, const std::vector<int64_t>& outputs,
    const SliceOptions& options);

// Adds the COUNTs of the inputs `inputs` (one criterion, target output
// neuron `target`) to `*counts` (one int64 [n_out, n_in] per weighted layer;
// created when empty). Errors: no inputs, target out of range, NaN
// activations, layouts the analysis does not cover (naming the layer).
absl::Status AccumulateCounts(const ModelView& view, const Profile& profile,
                              const at::Tensor& inputs, int64_t target,
                              std::vector<at::Tensor>* counts);

// Per weight tensor (or over the whole model with global_ranking), the
// ceil(q% of its synapses) with the largest COUNT (ties to the lower index)
// are key synapses; a grouped Conv2d's synapses are those within a group.
// Errors: q outside (0, 100], counts that do not match the model.
absl::StatusOr<Slice> SelectKeySynapses(const ModelView& view,
                                        const std::vector<at::Tensor>& counts,
                                        const SliceOptions& options);

// |A ∩ B| / |A ∪ B| over the key synapses (weight elements) of two lists of
// slices of one model, taken together (1 when both are empty).
absl::StatusOr<double> KeySynapseJaccard(const std::vector<Slice>& a,
                                         const std::vector<Slice>& b);
// The same over the excluded synapses (those not key: the 1 - q% that
// slicing removes). At q = 95 two random masks agree at about 0.905 on
// the key synapses but at about 0.026 on the excluded ones, so this is
// the figure that chance does not inflate.
absl::StatusOr<double> ExcludedSynapseJaccard(const std::vector<Slice>& a,
                                              const std::vector<Slice>& b);

}  // namespace posttrain

#endif  // POSTTRAIN_SLICER_SLICER_H_

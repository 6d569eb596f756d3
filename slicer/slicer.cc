#include "slicer/slicer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

struct WeightedLayer {
  int64_t n_out = 0, n_in = 0, groups = 1;
  bool conv = false;
  at::Tensor weight;
};

// sign(w_hn) as a dense float32 [n_out, n_in]; Conv2d sums each kernel (in
// float64, so the sign is that of the exact sum).
at::Tensor SignMatrix(const WeightedLayer& w) {
  if (!w.conv) return w.weight.sign().to(torch::kFloat);
  at::Tensor k = w.weight.to(torch::kDouble).sum({2, 3});  // [out, in/g]
  if (w.groups == 1) return k.sign().to(torch::kFloat);
  at::Tensor dense = torch::zeros({w.n_out, w.n_in}, torch::kFloat);
  const int64_t out_g = w.n_out / w.groups, in_g = w.n_in / w.groups;
  for (int64_t g = 0; g < w.groups; ++g) {
    dense.narrow(0, g * out_g, out_g)
        .narrow(1, g * in_g, in_g)
        .copy_(k.narrow(0, g * out_g, out_g).sign());
  }
  return dense;
}

// Values of a point seen as `n` neurons: as they are, or, for the elements
// of a flattened [n, P] tensor, reduced per channel by `reduce`.
absl::StatusOr<at::Tensor> AsNeurons(const at::Tensor& v, int64_t n, bool mean,
                                     const std::string& layer) {
  if (v.size(1) == n) return v;
  if (v.size(1) % n != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer '", layer, "': ", v.size(1),
                     " values cannot map to ", n, " neurons"));
  }
  at::Tensor r = v.reshape({v.size(0), n, v.size(1) / n});
  return mean ? r.mean(2) : r.sum(2);
}

// The backward walk of Eq. 7 for a batch whose Δy at every point is given
// (`delta`, [B, features] per point), seeded at output neuron targets[i] for
// sample i, adding each sample's counts to criterion crit[i].
absl::Status CountWalk(const ModelView& view,
                       const std::vector<at::Tensor>& delta,
                       const at::Tensor& targets, const at::Tensor& crit,
                       size_t num_criteria, CriterionCounts* counts) {
  const std::vector<int>& weighted = view.weighted_layers();
  if (counts->counts.empty()) {
    counts->counts.resize(num_criteria);
    counts->inputs.assign(num_criteria, 0);
  }
  if (counts->counts.size() != num_criteria) {
    return absl::InvalidArgumentError(
        absl::StrCat("counts hold ", counts->counts.size(),
                     " criteria, the request has ", num_criteria));
  }
  absl::Status status;
  PT_RETURN_IF_ERROR(CallTorch("slicing", [&] {
    torch::NoGradGuard no_grad;
    const int64_t batch = targets.size(0);
    const int64_t n_logits = delta.back().size(1);
    // The criteria present in the batch, and which rows are theirs.
    std::vector<std::pair<int64_t, at::Tensor>> groups;
    {
      at::Tensor ids = std::get<0>(at::_unique(crit));
      const int64_t* id = ids.data_ptr<int64_t>();
      for (int64_t i = 0; i < ids.numel(); ++i) {
        if (id[i] < 0) continue;
        at::Tensor rows = crit.eq(id[i]).nonzero().reshape({-1});
        counts->inputs[id[i]] += rows.numel();
        groups.emplace_back(id[i], rows);
      }
    }
    // CONTRIB of the output point: +1 at each sample's target.
    // The products below are of -1/0/+1 values; float32 holds their sums
    // (at most max(B, n_out · positions) in magnitude) exactly below 2^24,
    // and its matrix products are twice as fast as float64's.
    at::Tensor contrib = torch::zeros({batch, n_logits}, torch::kFloat);
    contrib.scatter_(1, targets.reshape({-1, 1}), 1.0);
    for (int k = static_cast<int>(weighted.size()) - 1; k >= 0; --k) {
      const ModelView::Layer& l = view.layers()[weighted[k]];
      WeightedLayer w;
      w.weight = view.Weight(weighted[k]).detach().cpu();
      if (l.spec.kind() == pb::LayerSpec::LINEAR) {
        w.n_out = l.spec.out_features();
        w.n_in = l.spec.in_features();
      } else {
        w.conv = true;
        w.n_out = l.spec.out_channels();
        w.n_in = l.spec.in_channels();
        w.groups = l.spec.groups();
      }
      auto dy_out = AsNeurons(delta[k + 1], w.n_out, /*mean=*/true, l.name);
      auto c_out = AsNeurons(contrib, w.n_out, /*mean=*/false, l.name);
      if (!dy_out.ok() || !c_out.ok()) {
        status = dy_out.ok() ? c_out.status() : dy_out.status();
        return;
      }
      if (delta[k].size(1) != w.n_in) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "layer '", l.name, "': its input has ", delta[k].size(1),
            " neurons, the layer expects ", w.n_in));
        return;
      }
      const at::Tensor s_out =
          (c_out->sign() * dy_out->sign()).to(torch::kFloat);     // [B, out]
      const at::Tensor s_in = delta[k].sign().to(torch::kFloat);  // [B, in]
      const at::Tensor sign_w = SignMatrix(w);                    // [out, in]
      for (const auto& [c, rows] : groups) {
        const bool all = rows.numel() == batch;
        const at::Tensor so = all ? s_out : s_out.index_select(0, rows);
        const at::Tensor si = all ? s_in : s_in.index_select(0, rows);
        at::Tensor add = (sign_w * so.t().mm(si)).round().to(torch::kLong);
        std::vector<at::Tensor>& layers = counts->counts[c];
        if (layers.empty()) layers.resize(weighted.size());
        if (!layers[k].defined()) {
          layers[k] = torch::zeros({w.n_out, w.n_in}, torch::kLong);
        }
        layers[k] += add;
      }
      if (k > 0) contrib = s_in * s_out.mm(sign_w);  // CONTRIB of the input
    }
  }));
  return status;
}

absl::Status CheckOutputs(const Profile& profile,
                          const std::vector<int64_t>& outputs) {
  if (outputs.empty()) return absl::InvalidArgumentError("no criteria");
  const int64_t n_logits = profile.point(profile.num_points() - 1).features();
  for (size_t c = 0; c < outputs.size(); ++c) {
    if (outputs[c] < 0 || outputs[c] >= n_logits) {
      return absl::InvalidArgumentError(
          absl::StrCat("criterion ", c, ": target output neuron ", outputs[c],
                       " outside [0, ", n_logits, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckModel(const ModelView& view, const Profile& profile) {
  const std::vector<int>& weighted = view.weighted_layers();
  if (weighted.empty()) return absl::InvalidArgumentError("no weighted layers");
  if (profile.num_points() != static_cast<int>(weighted.size()) + 1) {
    return absl::InvalidArgumentError("the profile is not of this model");
  }
  return absl::OkStatus();
}

}  // namespace

static absl::Status AccumulateMixedImpl(const ModelView& view,
                                        const Profile& profile,
                                        const at::Tensor& inputs,
                                        const at::Tensor& criteria,
                                        const std::vector<int64_t>& outputs,
                                        CriterionCounts* counts) {
  PT_RETURN_IF_ERROR(CheckModel(view, profile));
  PT_RETURN_IF_ERROR(CheckOutputs(profile, outputs));
  if (!inputs.defined() || inputs.dim() == 0 || inputs.size(0) == 0) {
    return absl::InvalidArgumentError(
        "the criterion has no inputs to slice with");
  }
  if (!criteria.defined() || criteria.dim() != 1) {
    return absl::InvalidArgumentError(
        "criteria must be a 1-D int64 tensor, one id per input");
  }
  at::Tensor crit;
  PT_RETURN_IF_ERROR(CallTorch("reading criteria", [&] {
    crit = criteria.to(torch::kCPU, torch::kLong).reshape({-1});
  }));
  if (crit.size(0) != inputs.size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        inputs.size(0), " inputs but ", crit.size(0), " criterion ids"));
  }
  const int64_t num = static_cast<int64_t>(outputs.size());
  if (crit.min().item<int64_t>() < -1 || crit.max().item<int64_t>() >= num) {
    return absl::InvalidArgumentError(
        absl::StrCat("criterion ids must be in [-1, ", num, ")"));
  }
  at::Tensor on_device;  // the inputs on the model's device
  PT_RETURN_IF_ERROR(CallTorch("moving inputs to the model's device", [&] {
    on_device = inputs.to(view.Weight(view.weighted_layers()[0]).device());
  }));
  PT_ASSIGN_OR_RETURN(std::vector<at::Tensor> values,
                      profile.NeuronValues(view, on_device));
  std::vector<at::Tensor> delta;
  for (int p = 0; p < profile.num_points(); ++p) {
    PT_ASSIGN_OR_RETURN(at::Tensor mean, profile.Mean(p));
    const std::string& layer = profile.point(p).layer();
    if (values[p].dim() != 2 || values[p].size(1) != mean.numel()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the profile is not of this model: its point '", layer,
                       "' has ", mean.numel(), " neurons, the model's has ",
                       values[p].dim() == 2 ? values[p].size(1) : -1));
    }
    if (!torch::isfinite(values[p]).all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "slicing: NaN or infinite activations ",
          layer == "output"
              ? std::string("at the model's output")
              : absl::StrCat("at the input of layer '", layer, "'")));
    }
    delta.push_back(values[p] - mean);
  }
  at::Tensor out = torch::tensor(outputs, torch::kLong);
  // Skipped samples (-1) get any valid target; their rows are never counted.
  at::Tensor targets = out.index_select(0, crit.clamp_min(0));
  return CountWalk(view, delta, targets, crit, outputs.size(), counts);
}

absl::Status AccumulateCounts(const ModelView& view, const Profile& profile,
                              const at::Tensor& inputs, int64_t target,
                              std::vector<at::Tensor>* counts) {
  if (!inputs.defined() || inputs.dim() == 0 || inputs.size(0) == 0) {
    return absl::InvalidArgumentError(
        "the criterion has no inputs to slice with");
  }
  CriterionCounts all;
  all.counts.assign(1, *counts);
  all.inputs.assign(1, 0);
  PT_RETURN_IF_ERROR(AccumulateCounts(
      view, profile, inputs, torch::zeros({inputs.size(0)}, torch::kLong),
      {target}, &all));
  *counts = std::move(all.counts[0]);
  return absl::OkStatus();
}

static absl::StatusOr<CriterionCounts> AggregatedCountsImpl(
    const ModelView& view, const Profile& profile,
    const std::vector<int64_t>& outputs) {
  PT_RETURN_IF_ERROR(CheckModel(view, profile));
  PT_RETURN_IF_ERROR(CheckOutputs(profile, outputs));
  const int64_t num = static_cast<int64_t>(outputs.size());
  if (num != profile.num_criteria()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the profile has ", profile.num_criteria(),
                     " criteria, the request ", num));
  }
  std::vector<at::Tensor> delta;
  for (int p = 0; p < profile.num_points(); ++p) {
    PT_ASSIGN_OR_RETURN(at::Tensor mean, profile.Mean(p));
    std::vector<at::Tensor> rows;
    for (int c = 0; c < num; ++c) {
      auto cm = profile.CriterionMean(p, c);
      if (!cm.ok()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "aggregated slicing: criterion ", c, " has no profiled samples"));
      }
      rows.push_back(*cm - mean);
    }
    delta.push_back(torch::stack(rows));
  }
  CriterionCounts counts;
  PT_RETURN_IF_ERROR(CountWalk(view, delta,
                               torch::tensor(outputs, torch::kLong),
                               torch::arange(num, torch::kLong), num, &counts));
  return counts;
}

static absl::StatusOr<std::vector<Slice>> SliceCriteriaImpl(
    const ModelView& view, const Profile& profile, const at::Tensor& inputs,
    const at::Tensor& criteria, const std::vector<int64_t>& outputs,
    const SliceOptions& options) {
  if (!(options.q > 0.0 && options.q <= 100.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("q must be in (0, 100], got ", options.q));
  }
  if (options.batch_size <= 0) {
    return absl::InvalidArgumentError("batch_size must be positive");
  }
  CriterionCounts counts;
  if (options.aggregated) {
    PT_ASSIGN_OR_RETURN(counts, AggregatedCounts(view, profile, outputs));
  } else {
    if (!inputs.defined() || inputs.dim() == 0 || inputs.size(0) == 0) {
      return absl::InvalidArgumentError("no inputs to slice with");
    }
    if (!criteria.defined() || criteria.dim() != 1 ||
        criteria.size(0) != inputs.size(0)) {
      return absl::InvalidArgumentError(
          "one criterion id per input needed (a 1-D tensor)");
    }
    const int64_t n = inputs.size(0);
    for (int64_t b = 0; b < n; b += options.batch_size) {
      const int64_t len = std::min(options.batch_size, n - b);
      PT_RETURN_IF_ERROR(
          AccumulateCounts(view, profile, inputs.narrow(0, b, len),
                           criteria.narrow(0, b, len), outputs, &counts));
    }
  }
  std::vector<Slice> slices;
  for (size_t c = 0; c < outputs.size(); ++c) {
    if (counts.counts.size() <= c || counts.counts[c].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("criterion ", c, " has no inputs to slice with"));
    }
    PT_ASSIGN_OR_RETURN(Slice s,
                        SelectKeySynapses(view, counts.counts[c], options));
    slices.push_back(std::move(s));
  }
  return slices;
}

static absl::StatusOr<Slice> SelectKeySynapsesImpl(
    const ModelView& view, const std::vector<at::Tensor>& counts,
    const SliceOptions& options) {
  if (!(options.q > 0.0 && options.q <= 100.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("q must be in (0, 100], got ", options.q));
  }
  const std::vector<int>& weighted = view.weighted_layers();
  if (counts.size() != weighted.size()) {
    return absl::InvalidArgumentError("counts do not match the model");
  }
  for (size_t k = 0; k < weighted.size(); ++k) {
    const ModelView::Layer& l = view.layers()[weighted[k]];
    const at::Tensor weight = view.Weight(weighted[k]);
    const int64_t in = l.spec.kind() == pb::LayerSpec::LINEAR
                           ? l.spec.in_features()
                           : l.spec.in_channels();
    if (!counts[k].defined() || counts[k].dim() != 2 ||
        counts[k].size(0) != weight.size(0) || counts[k].size(1) != in) {
      return absl::InvalidArgumentError(
          absl::StrCat("counts of layer '", l.name, "' do not match it"));
    }
  }
  // Keeps the ceil(q% of n) largest of `c` (flat), ties to the lower index.
  // Keeps the ceil(q% of the real synapses) with the largest count (flat),
  // ties to the lower index. `valid` marks the real synapses: all of them,
  // except across the groups of a grouped Conv2d, whose dense count matrix
  // holds entries for synapses that do not exist.
  auto top = [&](const at::Tensor& c, const at::Tensor& valid) {
    const int64_t n = c.numel();
    const int64_t real = valid.sum().item<int64_t>();
    const int64_t keep = std::min<int64_t>(
        real, static_cast<int64_t>(std::ceil(options.q / 100.0 * real - 1e-9)));
    at::Tensor ranked = torch::where(
        valid, c, torch::full_like(c, std::numeric_limits<int64_t>::min()));
    at::Tensor order = std::get<1>(ranked.sort(
        /*stable=*/true, /*dim=*/0, /*descending=*/true));
    at::Tensor flat = torch::zeros({n}, torch::kBool);
    flat.index_fill_(0, order.narrow(0, 0, keep), true);
    return flat;
  };
  auto valid_of = [&](size_t k) {
    const ModelView::Layer& l = view.layers()[weighted[k]];
    const at::Tensor& c = counts[k];
    if (l.spec.kind() != pb::LayerSpec::CONV2D || l.spec.groups() <= 1) {
      return torch::ones({c.numel()}, torch::kBool);
    }
    const int64_t groups = l.spec.groups();
    const int64_t out_g = c.size(0) / groups, in_g = c.size(1) / groups;
    at::Tensor v = torch::zeros(c.sizes(), torch::kBool);
    for (int64_t g = 0; g < groups; ++g) {
      v.narrow(0, g * out_g, out_g).narrow(1, g * in_g, in_g).fill_(true);
    }
    return v.reshape({-1});
  };
  Slice slice;
  absl::Status status;
  PT_RETURN_IF_ERROR(CallTorch("selecting key synapses", [&] {
    std::vector<at::Tensor> masks;  // [out, in] per layer
    if (options.global_ranking) {
      std::vector<at::Tensor> flat, valid;
      for (size_t k = 0; k < counts.size(); ++k) {
        flat.push_back(counts[k].reshape({-1}));
        valid.push_back(valid_of(k));
      }
      at::Tensor all = top(torch::cat(flat), torch::cat(valid));
      int64_t offset = 0;
      for (const at::Tensor& c : counts) {
        masks.push_back(all.narrow(0, offset, c.numel()).reshape(c.sizes()));
        offset += c.numel();
      }
    } else {
      for (size_t k = 0; k < counts.size(); ++k) {
        masks.push_back(top(counts[k].reshape({-1}), valid_of(k))
                            .reshape(counts[k].sizes()));
      }
    }
    for (size_t k = 0; k < weighted.size(); ++k) {
      const ModelView::Layer& l = view.layers()[weighted[k]];
      const at::Tensor weight = view.Weight(weighted[k]);
      const at::Tensor& c = counts[k];
      const at::Tensor& mask = masks[k];
      LayerSlice ls;
      ls.layer = l.name;
      ls.counts = c;
      ls.neuron_mask = mask.any(1);
      if (weight.dim() == 2) {
        ls.synapse_mask = mask;
      } else {
        const int64_t out = weight.size(0), in_g = weight.size(1);
        const int64_t groups = l.spec.groups();
        const int64_t out_g = out / groups;
        at::Tensor m = torch::empty({out, in_g}, torch::kBool);
        for (int64_t g = 0; g < groups; ++g) {
          m.narrow(0, g * out_g, out_g)
              .copy_(
                  mask.narrow(0, g * out_g, out_g).narrow(1, g * in_g, in_g));
        }
        ls.synapse_mask =
            m.unsqueeze(2).unsqueeze(3).expand(weight.sizes()).clone();
      }
      slice.layers.push_back(std::move(ls));
    }
  }));
  PT_RETURN_IF_ERROR(status);
  return slice;
}

}  // namespace posttrain

namespace posttrain {

namespace {

absl::StatusOr<double> SynapseJaccard(const std::vector<Slice>& a,
                                      const std::vector<Slice>& b,
                                      bool excluded) {
  if (a.size() != b.size()) {
    return absl::InvalidArgumentError("slice lists differ in length");
  }
  int64_t both = 0, either = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].layers.size() != b[i].layers.size()) {
      return absl::InvalidArgumentError("slices of different models");
    }
    for (size_t k = 0; k < a[i].layers.size(); ++k) {
      at::Tensor x = a[i].layers[k].synapse_mask;
      at::Tensor y = b[i].layers[k].synapse_mask;
      if (!x.sizes().equals(y.sizes())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "slices of layer '", a[i].layers[k].layer, "' differ in shape"));
      }
      if (excluded) {
        x = x.logical_not();
        y = y.logical_not();
      }
      both += (x & y).sum().item<int64_t>();
      either += (x | y).sum().item<int64_t>();
    }
  }
  return either == 0 ? 1.0 : static_cast<double>(both) / either;
}

}  // namespace

absl::StatusOr<double> KeySynapseJaccard(const std::vector<Slice>& a,
                                         const std::vector<Slice>& b) {
  return SynapseJaccard(a, b, /*excluded=*/false);
}

absl::StatusOr<double> ExcludedSynapseJaccard(const std::vector<Slice>& a,
                                              const std::vector<Slice>& b) {
  return SynapseJaccard(a, b, /*excluded=*/true);
}

pb::SliceProto SliceToProto(const Slice& slice, int criterion, double q) {
  pb::SliceProto out;
  out.set_version(1);
  out.set_criterion(criterion);
  out.set_q(q);
  for (const LayerSlice& l : slice.layers) {
    pb::LayerSliceProto* p = out.add_layers();
    p->set_layer(l.layer);
    for (int64_t d : l.counts.sizes()) p->add_counts_shape(d);
    at::Tensor c = l.counts.contiguous();
    p->mutable_counts()->Add(c.data_ptr<int64_t>(),
                             c.data_ptr<int64_t>() + c.numel());
    for (int64_t d : l.synapse_mask.sizes()) p->add_weight_shape(d);
    at::Tensor m = l.synapse_mask.to(torch::kUInt8).contiguous();
    p->set_synapse_mask(reinterpret_cast<const char*>(m.data_ptr<uint8_t>()),
                        m.numel());
    at::Tensor n = l.neuron_mask.to(torch::kUInt8).contiguous();
    p->set_neuron_mask(reinterpret_cast<const char*>(n.data_ptr<uint8_t>()),
                       n.numel());
  }
  return out;
}

absl::StatusOr<Slice> SliceFromProto(const pb::SliceProto& proto) {
  if (proto.version() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("slice version ", proto.version(), " is not supported"));
  }
  Slice slice;
  for (const pb::LayerSliceProto& p : proto.layers()) {
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("slice of layer '", p.layer(), "': ", what));
    };
    // Each dimension is at most the stored element count, so products of
    // two fit in int64; the weight's is checked factor by factor.
    if (p.counts_shape_size() != 2 || p.counts_shape(0) <= 0 ||
        p.counts_shape(1) <= 0 || p.counts_shape(0) > p.counts_size() ||
        p.counts_shape(1) > p.counts_size() ||
        p.counts_size() != p.counts_shape(0) * p.counts_shape(1)) {
      return bad("counts do not match their shape");
    }
    const int64_t mask_bytes = static_cast<int64_t>(p.synapse_mask().size());
    int64_t weight_numel = 1;
    for (int64_t d : p.weight_shape()) {
      if (d <= 0 || d > mask_bytes || weight_numel > mask_bytes / d) {
        return bad("invalid weight shape");
      }
      weight_numel *= d;
    }
    if (p.weight_shape_size() < 2 || p.weight_shape(0) != p.counts_shape(0) ||
        static_cast<int64_t>(p.synapse_mask().size()) != weight_numel ||
        static_cast<int64_t>(p.neuron_mask().size()) != p.counts_shape(0)) {
      return bad("masks do not match the shapes");
    }
    LayerSlice l;
    l.layer = p.layer();
    l.counts =
        torch::from_blob(const_cast<int64_t*>(p.counts().data()),
                         {p.counts_shape(0), p.counts_shape(1)}, torch::kLong)
            .clone();
    std::vector<int64_t> shape(p.weight_shape().begin(),
                               p.weight_shape().end());
    l.synapse_mask =
        torch::from_blob(const_cast<char*>(p.synapse_mask().data()), shape,
                         torch::kUInt8)
            .ne(0);
    l.neuron_mask = torch::from_blob(const_cast<char*>(p.neuron_mask().data()),
                                     {p.counts_shape(0)}, torch::kUInt8)
                        .ne(0);
    slice.layers.push_back(std::move(l));
  }
  return slice;
}

// The public entry points: any exception becomes a status.
absl::Status AccumulateCounts(const ModelView& view, const Profile& profile,
                              const at::Tensor& inputs,
                              const at::Tensor& criteria,
                              const std::vector<int64_t>& outputs,
                              CriterionCounts* counts) {
  try {
    return AccumulateMixedImpl(view, profile, inputs, criteria, outputs,
                               counts);
  } catch (...) {
    return StatusFromCurrentException("slicing");
  }
}

absl::StatusOr<CriterionCounts> AggregatedCounts(
    const ModelView& view, const Profile& profile,
    const std::vector<int64_t>& outputs) {
  try {
    return AggregatedCountsImpl(view, profile, outputs);
  } catch (...) {
    return StatusFromCurrentException("aggregated slicing");
  }
}

absl::StatusOr<std::vector<Slice>> SliceCriteria(
    const ModelView& view, const Profile& profile, const at::Tensor& inputs,
    const at::Tensor& criteria, const std::vector<int64_t>& outputs,
    const SliceOptions& options) {
  try {
    return SliceCriteriaImpl(view, profile, inputs, criteria, outputs, options);
  } catch (...) {
    return StatusFromCurrentException("slicing");
  }
}

absl::StatusOr<Slice> SelectKeySynapses(const ModelView& view,
                                        const std::vector<at::Tensor>& counts,
                                        const SliceOptions& options) {
  try {
    return SelectKeySynapsesImpl(view, counts, options);
  } catch (...) {
    return StatusFromCurrentException("selecting key synapses");
  }
}

}  // namespace posttrain

#include "slicer/slicer.h"

#include <torch/torch.h>

#include <cmath>

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

// sign(w_hn) as a dense float64 [n_out, n_in]; Conv2d sums each kernel.
at::Tensor SignMatrix(const WeightedLayer& w) {
  if (!w.conv) return w.weight.to(torch::kDouble).sign();
  at::Tensor k = w.weight.to(torch::kDouble).sum({2, 3});  // [out, in/g]
  if (w.groups == 1) return k.sign();
  at::Tensor dense = torch::zeros({w.n_out, w.n_in}, torch::kDouble);
  const int64_t out_g = w.n_out / w.groups, in_g = w.n_in / w.groups;
  for (int64_t g = 0; g < w.groups; ++g) {
    dense.narrow(0, g * out_g, out_g)
        .narrow(1, g * in_g, in_g)
        .copy_(k.narrow(0, g * out_g, out_g));
  }
  return dense.sign();
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

}  // namespace

absl::Status AccumulateCounts(const ModelView& view, const Profile& profile,
                              const at::Tensor& inputs, int64_t target,
                              std::vector<at::Tensor>* counts) {
  const std::vector<int>& weighted = view.weighted_layers();
  if (weighted.empty()) return absl::InvalidArgumentError("no weighted layers");
  if (!inputs.defined() || inputs.dim() == 0 || inputs.size(0) == 0) {
    return absl::InvalidArgumentError(
        "the criterion has no inputs to slice with");
  }
  if (profile.num_points() != static_cast<int>(weighted.size()) + 1) {
    return absl::InvalidArgumentError("the profile is not of this model");
  }
  PT_ASSIGN_OR_RETURN(std::vector<at::Tensor> values,
                      profile.NeuronValues(view, inputs));
  std::vector<at::Tensor> delta;
  for (int p = 0; p < profile.num_points(); ++p) {
    PT_ASSIGN_OR_RETURN(at::Tensor mean, profile.Mean(p));
    delta.push_back(values[p] - mean);
  }
  const int64_t n_logits = delta.back().size(1);
  if (target < 0 || target >= n_logits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "target output neuron ", target, " outside [0, ", n_logits, ")"));
  }
  absl::Status status;
  PT_RETURN_IF_ERROR(CallTorch("slicing", [&] {
    torch::NoGradGuard no_grad;
    const int64_t batch = inputs.size(0);
    if (counts->empty()) counts->resize(weighted.size());
    // CONTRIB of the output point: +1 at the target.
    at::Tensor contrib = torch::zeros({batch, n_logits}, torch::kDouble);
    contrib.select(1, target).fill_(1.0);
    for (int k = static_cast<int>(weighted.size()) - 1; k >= 0; --k) {
      const ModelView::Layer& l = view.layers()[weighted[k]];
      WeightedLayer w;
      w.weight = view.Weight(weighted[k]).detach();
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
      const at::Tensor s_out = c_out->sign() * dy_out->sign();  // [B, out]
      const at::Tensor s_in = delta[k].sign();                  // [B, in]
      const at::Tensor sign_w = SignMatrix(w);                  // [out, in]
      at::Tensor add = (sign_w * s_out.t().mm(s_in)).round().to(torch::kLong);
      at::Tensor& c = (*counts)[k];
      if (!c.defined()) c = torch::zeros({w.n_out, w.n_in}, torch::kLong);
      c += add;
      contrib = s_in * s_out.mm(sign_w);  // CONTRIB of this layer's input
    }
  }));
  return status;
}

absl::StatusOr<Slice> SelectKeySynapses(const ModelView& view,
                                        const std::vector<at::Tensor>& counts,
                                        const SliceOptions& options) {
  if (!(options.q > 0.0 && options.q <= 100.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("q must be in (0, 100], got ", options.q));
  }
  const std::vector<int>& weighted = view.weighted_layers();
  if (counts.size() != weighted.size()) {
    return absl::InvalidArgumentError("counts do not match the model");
  }
  Slice slice;
  absl::Status status;
  PT_RETURN_IF_ERROR(CallTorch("selecting key synapses", [&] {
    for (size_t k = 0; k < weighted.size(); ++k) {
      const ModelView::Layer& l = view.layers()[weighted[k]];
      const at::Tensor weight = view.Weight(weighted[k]);
      const at::Tensor& c = counts[k];
      const int64_t n = c.numel();
      const int64_t keep = std::min<int64_t>(
          n, static_cast<int64_t>(std::ceil(options.q / 100.0 * n - 1e-9)));
      // Stable descending sort: among equal counts the lower index first.
      at::Tensor order = std::get<1>(c.reshape({-1}).sort(
          /*stable=*/true, /*dim=*/0, /*descending=*/true));
      at::Tensor flat = torch::zeros({n}, torch::kBool);
      flat.index_fill_(0, order.narrow(0, 0, keep), true);
      at::Tensor mask = flat.reshape(c.sizes());  // [out, in]
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
    if (p.counts_shape_size() != 2 || p.counts_shape(0) <= 0 ||
        p.counts_shape(1) <= 0 ||
        p.counts_size() != p.counts_shape(0) * p.counts_shape(1)) {
      return bad("counts do not match their shape");
    }
    int64_t weight_numel = 1;
    for (int64_t d : p.weight_shape()) {
      if (d <= 0 || d > (int64_t{1} << 32)) return bad("invalid weight shape");
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

}  // namespace posttrain

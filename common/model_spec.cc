#include "common/model_spec.h"

#include <google/protobuf/util/message_differencer.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/version.h>

#include <initializer_list>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/sequential_block.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

namespace nn = torch::nn;
using pb::LayerSpec;

// LibTorch 1.13 (Debian) has its own c10::variant; 2.x uses std::variant.
template <typename T, typename V>
const T* VariantGet(const V& v) {
#if TORCH_VERSION_MAJOR >= 2
  return std::get_if<T>(&v);
#else
  return c10::get_if<T>(&v);
#endif
}

template <size_t D>
void SetPair(const torch::ExpandingArray<D>& a,
             google::protobuf::RepeatedField<int64_t>* out) {
  out->Clear();
  for (size_t i = 0; i < D; ++i) out->Add((*a)[i]);
}

template <typename Options>
void DescribeBatchNorm(const Options& o, LayerSpec::Kind kind, LayerSpec* l) {
  l->set_kind(kind);
  l->set_num_features(o.num_features());
  l->set_eps(o.eps());
  l->set_cumulative_average(!o.momentum().has_value());
  l->set_momentum(o.momentum().value_or(0.0));
  l->set_affine(o.affine());
  l->set_track_running_stats(o.track_running_stats());
}

std::string PathOf(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : absl::StrCat(prefix, ".", name);
}

absl::Status DescribeInto(const nn::SequentialImpl& seq,
                          const std::string& prefix,
                          google::protobuf::RepeatedPtrField<LayerSpec>* out) {
  for (const auto& item : seq.named_children()) {
    const std::string path = PathOf(prefix, item.key());
    const nn::Module* m = item.value().get();
    LayerSpec* l = out->Add();
    l->set_name(path);
    if (auto* s = dynamic_cast<const nn::SequentialImpl*>(m)) {
      l->set_kind(LayerSpec::SEQUENTIAL);
      PT_RETURN_IF_ERROR(DescribeInto(*s, path, l->mutable_children()));
    } else if (auto* lin = dynamic_cast<const nn::LinearImpl*>(m)) {
      l->set_kind(LayerSpec::LINEAR);
      l->set_in_features(lin->options.in_features());
      l->set_out_features(lin->options.out_features());
      l->set_bias(lin->options.bias());
    } else if (auto* conv = dynamic_cast<const nn::Conv2dImpl*>(m)) {
      const auto& o = conv->options;
      if (!VariantGet<torch::enumtype::kZeros>(o.padding_mode())) {
        return absl::InvalidArgumentError(
            absl::StrCat("layer '", path,
                         "' (Conv2d): only padding_mode=zeros is supported"));
      }
      l->set_kind(LayerSpec::CONV2D);
      l->set_in_channels(o.in_channels());
      l->set_out_channels(o.out_channels());
      l->set_groups(o.groups());
      l->set_bias(o.bias());
      SetPair<2>(o.kernel_size(), l->mutable_kernel_size());
      SetPair<2>(o.stride(), l->mutable_stride());
      SetPair<2>(o.dilation(), l->mutable_dilation());
      if (auto* pad = VariantGet<torch::ExpandingArray<2>>(o.padding())) {
        SetPair<2>(*pad, l->mutable_padding());
      } else if (VariantGet<torch::enumtype::kSame>(o.padding())) {
        l->set_padding_same(true);
      } else {  // kValid
        l->add_padding(0);
        l->add_padding(0);
      }
    } else if (auto* bn1 = dynamic_cast<const nn::BatchNorm1dImpl*>(m)) {
      DescribeBatchNorm(bn1->options, LayerSpec::BATCH_NORM1D, l);
    } else if (auto* bn2 = dynamic_cast<const nn::BatchNorm2dImpl*>(m)) {
      DescribeBatchNorm(bn2->options, LayerSpec::BATCH_NORM2D, l);
    } else if (dynamic_cast<const nn::ReLUImpl*>(m)) {
      l->set_kind(LayerSpec::RELU);
    } else if (auto* lr = dynamic_cast<const nn::LeakyReLUImpl*>(m)) {
      l->set_kind(LayerSpec::LEAKY_RELU);
      l->set_negative_slope(lr->options.negative_slope());
    } else if (dynamic_cast<const nn::SigmoidImpl*>(m)) {
      l->set_kind(LayerSpec::SIGMOID);
    } else if (dynamic_cast<const nn::TanhImpl*>(m)) {
      l->set_kind(LayerSpec::TANH);
    } else if (auto* g = dynamic_cast<const nn::GELUImpl*>(m)) {
      l->set_kind(LayerSpec::GELU);
      l->set_approximate(g->options.approximate());
    } else if (auto* mp = dynamic_cast<const nn::MaxPool2dImpl*>(m)) {
      const auto& o = mp->options;
      l->set_kind(LayerSpec::MAX_POOL2D);
      SetPair<2>(o.kernel_size(), l->mutable_kernel_size());
      SetPair<2>(o.stride(), l->mutable_stride());
      SetPair<2>(o.padding(), l->mutable_padding());
      SetPair<2>(o.dilation(), l->mutable_dilation());
      l->set_ceil_mode(o.ceil_mode());
    } else if (auto* ap = dynamic_cast<const nn::AvgPool2dImpl*>(m)) {
      const auto& o = ap->options;
      if (o.divisor_override().has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat("layer '", path,
                         "' (AvgPool2d): divisor_override is not supported"));
      }
      l->set_kind(LayerSpec::AVG_POOL2D);
      SetPair<2>(o.kernel_size(), l->mutable_kernel_size());
      SetPair<2>(o.stride(), l->mutable_stride());
      SetPair<2>(o.padding(), l->mutable_padding());
      l->set_ceil_mode(o.ceil_mode());
      l->set_count_include_pad(o.count_include_pad());
    } else if (auto* aap = dynamic_cast<const nn::AdaptiveAvgPool2dImpl*>(m)) {
      l->set_kind(LayerSpec::ADAPTIVE_AVG_POOL2D);
      const auto& size = aap->options.output_size();
      for (size_t i = 0; i < 2; ++i) {
        if (!(*size)[i].has_value()) {
          return absl::InvalidArgumentError(
              absl::StrCat("layer '", path,
                           "' (AdaptiveAvgPool2d): output_size with None "
                           "is not supported"));
        }
        l->add_output_size(*(*size)[i]);
      }
    } else if (auto* f = dynamic_cast<const nn::FlattenImpl*>(m)) {
      l->set_kind(LayerSpec::FLATTEN);
      l->set_start_dim(f->options.start_dim());
      l->set_end_dim(f->options.end_dim());
    } else if (auto* d = dynamic_cast<const nn::DropoutImpl*>(m)) {
      l->set_kind(LayerSpec::DROPOUT);
      l->set_p(d->options.p());
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("layer '", path, "' has unsupported type ", m->name(),
                       "; supported: Linear, Conv2d, BatchNorm1d/2d, ReLU, "
                       "LeakyReLU, Sigmoid, Tanh, GELU, MaxPool2d, AvgPool2d, "
                       "AdaptiveAvgPool2d, Flatten, Dropout, Sequential"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPair(const LayerSpec& l,
                       const google::protobuf::RepeatedField<int64_t>& v,
                       const char* field, int64_t min_value) {
  if (v.size() != 2 || v[0] < min_value || v[1] < min_value) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer '", l.name(), "': ", field, " needs two values >= ", min_value,
        ", got [", absl::StrJoin(v, ","), "]"));
  }
  return absl::OkStatus();
}

torch::ExpandingArray<2> Pair(
    const google::protobuf::RepeatedField<int64_t>& v) {
  return torch::ExpandingArray<2>({v[0], v[1]});
}

absl::Status Positive(const LayerSpec& l, int64_t v, const char* field) {
  if (v <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer '", l.name(), "': ", field, " must be positive, got ", v));
  }
  return absl::OkStatus();
}

absl::Status BuildInto(
    const google::protobuf::RepeatedPtrField<LayerSpec>& layers,
    nn::SequentialImpl* seq, int depth) {
  if (depth > 32) {
    return absl::InvalidArgumentError("model spec nests Sequentials too deep");
  }
  for (const LayerSpec& l : layers) {
    const std::string& path = l.name();
    const size_t dot = path.rfind('.');
    const std::string local =
        dot == std::string::npos ? path : path.substr(dot + 1);
    if (local.empty()) {
      return absl::InvalidArgumentError(
          "model spec has a layer without a name");
    }
    switch (l.kind()) {
      case LayerSpec::SEQUENTIAL: {
        SequentialBlock child;
        PT_RETURN_IF_ERROR(BuildInto(l.children(), child.get(), depth + 1));
        seq->push_back(std::string(local), child);
        break;
      }
      case LayerSpec::LINEAR:
        PT_RETURN_IF_ERROR(Positive(l, l.in_features(), "in_features"));
        PT_RETURN_IF_ERROR(Positive(l, l.out_features(), "out_features"));
        seq->push_back(
            std::string(local),
            nn::Linear(nn::LinearOptions(l.in_features(), l.out_features())
                           .bias(l.bias())));
        break;
      case LayerSpec::CONV2D: {
        PT_RETURN_IF_ERROR(Positive(l, l.in_channels(), "in_channels"));
        PT_RETURN_IF_ERROR(Positive(l, l.out_channels(), "out_channels"));
        PT_RETURN_IF_ERROR(Positive(l, l.groups(), "groups"));
        PT_RETURN_IF_ERROR(CheckPair(l, l.kernel_size(), "kernel_size", 1));
        PT_RETURN_IF_ERROR(CheckPair(l, l.stride(), "stride", 1));
        PT_RETURN_IF_ERROR(CheckPair(l, l.dilation(), "dilation", 1));
        if (l.in_channels() % l.groups() != 0 ||
            l.out_channels() % l.groups() != 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "layer '", path, "': channels not divisible by groups"));
        }
        auto o = nn::Conv2dOptions(l.in_channels(), l.out_channels(),
                                   Pair(l.kernel_size()))
                     .stride(Pair(l.stride()))
                     .dilation(Pair(l.dilation()))
                     .groups(l.groups())
                     .bias(l.bias());
        if (l.padding_same()) {
          o.padding(torch::kSame);
        } else {
          PT_RETURN_IF_ERROR(CheckPair(l, l.padding(), "padding", 0));
          o.padding(Pair(l.padding()));
        }
        seq->push_back(std::string(local), nn::Conv2d(o));
        break;
      }
      case LayerSpec::BATCH_NORM1D:
      case LayerSpec::BATCH_NORM2D: {
        PT_RETURN_IF_ERROR(Positive(l, l.num_features(), "num_features"));
        c10::optional<double> momentum;
        if (!l.cumulative_average()) momentum = l.momentum();
        // BatchNorm1dOptions and BatchNorm2dOptions are one type.
        const auto o = nn::BatchNormOptions(l.num_features())
                           .eps(l.eps())
                           .momentum(momentum)
                           .affine(l.affine())
                           .track_running_stats(l.track_running_stats());
        if (l.kind() == LayerSpec::BATCH_NORM1D) {
          seq->push_back(std::string(local), nn::BatchNorm1d(o));
        } else {
          seq->push_back(std::string(local), nn::BatchNorm2d(o));
        }
        break;
      }
      case LayerSpec::RELU:
        seq->push_back(std::string(local), nn::ReLU());
        break;
      case LayerSpec::LEAKY_RELU:
        seq->push_back(std::string(local),
                       nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(
                           l.negative_slope())));
        break;
      case LayerSpec::SIGMOID:
        seq->push_back(std::string(local), nn::Sigmoid());
        break;
      case LayerSpec::TANH:
        seq->push_back(std::string(local), nn::Tanh());
        break;
      case LayerSpec::GELU:
        if (l.approximate() != "none" && l.approximate() != "tanh") {
          return absl::InvalidArgumentError(absl::StrCat(
              "layer '", path, "': GELU approximate must be none or tanh"));
        }
        seq->push_back(
            std::string(local),
            nn::GELU(nn::GELUOptions().approximate(l.approximate())));
        break;
      case LayerSpec::MAX_POOL2D:
        PT_RETURN_IF_ERROR(CheckPair(l, l.kernel_size(), "kernel_size", 1));
        PT_RETURN_IF_ERROR(CheckPair(l, l.stride(), "stride", 1));
        PT_RETURN_IF_ERROR(CheckPair(l, l.padding(), "padding", 0));
        PT_RETURN_IF_ERROR(CheckPair(l, l.dilation(), "dilation", 1));
        seq->push_back(std::string(local),
                       nn::MaxPool2d(nn::MaxPool2dOptions(Pair(l.kernel_size()))
                                         .stride(Pair(l.stride()))
                                         .padding(Pair(l.padding()))
                                         .dilation(Pair(l.dilation()))
                                         .ceil_mode(l.ceil_mode())));
        break;
      case LayerSpec::AVG_POOL2D:
        PT_RETURN_IF_ERROR(CheckPair(l, l.kernel_size(), "kernel_size", 1));
        PT_RETURN_IF_ERROR(CheckPair(l, l.stride(), "stride", 1));
        PT_RETURN_IF_ERROR(CheckPair(l, l.padding(), "padding", 0));
        seq->push_back(
            std::string(local),
            nn::AvgPool2d(nn::AvgPool2dOptions(Pair(l.kernel_size()))
                              .stride(Pair(l.stride()))
                              .padding(Pair(l.padding()))
                              .ceil_mode(l.ceil_mode())
                              .count_include_pad(l.count_include_pad())));
        break;
      case LayerSpec::ADAPTIVE_AVG_POOL2D:
        PT_RETURN_IF_ERROR(CheckPair(l, l.output_size(), "output_size", 1));
        seq->push_back(std::string(local),
                       nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(
                           {l.output_size(0), l.output_size(1)})));
        break;
      case LayerSpec::FLATTEN:
        seq->push_back(std::string(local),
                       nn::Flatten(nn::FlattenOptions()
                                       .start_dim(l.start_dim())
                                       .end_dim(l.end_dim())));
        break;
      case LayerSpec::DROPOUT:
        if (!(l.p() >= 0.0 && l.p() <= 1.0)) {
          return absl::InvalidArgumentError(
              absl::StrCat("layer '", path, "': dropout p must be in [0, 1]"));
        }
        seq->push_back(std::string(local),
                       nn::Dropout(nn::DropoutOptions(l.p())));
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("layer '", path, "' has unknown kind ",
                         static_cast<int>(l.kind())));
    }
  }
  return absl::OkStatus();
}

// Adds a * b * ... to *total, failing once the total passes `max`. Every
// factor is checked positive by BuildInto; here a non-positive one counts 0.
absl::Status AddElements(const LayerSpec& l, std::initializer_list<int64_t> f,
                         int64_t max, int64_t* total) {
  int64_t n = 1;
  for (int64_t v : f) {
    if (v <= 0) return absl::OkStatus();
    if (__builtin_mul_overflow(n, v, &n) || n > max) n = max + 1;
  }
  if (__builtin_add_overflow(*total, n, total) || *total > max) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer '", l.name(), "' (", LayerSummary(l), ") takes the model past ",
        max, " parameter and buffer elements; the spec is not trusted"));
  }
  return absl::OkStatus();
}

absl::Status CountInto(
    const google::protobuf::RepeatedPtrField<LayerSpec>& layers, int depth,
    int64_t max, int64_t* total) {
  if (depth > 32) {
    return absl::InvalidArgumentError("model spec nests Sequentials too deep");
  }
  for (const LayerSpec& l : layers) {
    switch (l.kind()) {
      case LayerSpec::SEQUENTIAL:
        PT_RETURN_IF_ERROR(CountInto(l.children(), depth + 1, max, total));
        break;
      case LayerSpec::LINEAR:
        PT_RETURN_IF_ERROR(
            AddElements(l, {l.in_features(), l.out_features()}, max, total));
        if (l.bias()) {
          PT_RETURN_IF_ERROR(AddElements(l, {l.out_features()}, max, total));
        }
        break;
      case LayerSpec::CONV2D: {
        const int64_t k0 = l.kernel_size_size() == 2 ? l.kernel_size(0) : 1;
        const int64_t k1 = l.kernel_size_size() == 2 ? l.kernel_size(1) : 1;
        const int64_t per_group =
            l.groups() > 0 ? l.in_channels() / l.groups() : l.in_channels();
        PT_RETURN_IF_ERROR(
            AddElements(l, {l.out_channels(), per_group, k0, k1}, max, total));
        if (l.bias()) {
          PT_RETURN_IF_ERROR(AddElements(l, {l.out_channels()}, max, total));
        }
        break;
      }
      case LayerSpec::BATCH_NORM1D:
      case LayerSpec::BATCH_NORM2D:
        // weight, bias, running mean and variance, num_batches_tracked.
        PT_RETURN_IF_ERROR(AddElements(l, {4, l.num_features()}, max, total));
        PT_RETURN_IF_ERROR(AddElements(l, {1}, max, total));
        break;
      default:
        break;
    }
  }
  return absl::OkStatus();
}

void Flatten(const google::protobuf::RepeatedPtrField<LayerSpec>& layers,
             std::vector<const LayerSpec*>* out) {
  for (const LayerSpec& l : layers) {
    out->push_back(&l);
    if (l.kind() == LayerSpec::SEQUENTIAL) Flatten(l.children(), out);
  }
}

}  // namespace

absl::StatusOr<pb::ModelSpec> DescribeSequential(
    const torch::nn::SequentialImpl& model) {
  pb::ModelSpec spec;
  spec.set_version(kModelSpecVersion);
  PT_RETURN_IF_ERROR(DescribeInto(model, "", spec.mutable_layers()));
  return spec;
}

absl::StatusOr<pb::ModelSpec> DescribeSequential(
    const torch::nn::Sequential& model) {
  if (model.is_empty()) {
    return absl::InvalidArgumentError("model is an empty Sequential holder");
  }
  return DescribeSequential(*model);
}

absl::StatusOr<int64_t> DeclaredElements(const pb::ModelSpec& spec,
                                         int64_t max_elements) {
  int64_t total = 0;
  PT_RETURN_IF_ERROR(CountInto(spec.layers(), 0, max_elements, &total));
  return total;
}

absl::StatusOr<torch::nn::Sequential> BuildSequential(const pb::ModelSpec& spec,
                                                      int64_t max_elements) {
  if (spec.version() != kModelSpecVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("model spec version ", spec.version(),
                     " is not supported (expected ", kModelSpecVersion, ")"));
  }
  PT_RETURN_IF_ERROR(DeclaredElements(spec, max_elements).status());
  nn::Sequential seq;
  absl::Status built;
  absl::Status torch_status = CallTorch("building model from spec", [&] {
    built = BuildInto(spec.layers(), seq.get(), 0);
  });
  PT_RETURN_IF_ERROR(torch_status);
  PT_RETURN_IF_ERROR(built);
  // What was built must describe back to the spec: a field the layer's kind
  // does not use (a kernel_size on a BatchNorm) is a malformed spec, not a
  // different architecture found later.
  PT_ASSIGN_OR_RETURN(pb::ModelSpec described, DescribeSequential(seq));
  const absl::Status same = CheckSameArchitecture(spec, described);
  if (!same.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model spec does not describe what it builds: ", same.message()));
  }
  return seq;
}

std::string LayerSummary(const pb::LayerSpec& l) {
  auto pair = [](const google::protobuf::RepeatedField<int64_t>& v) {
    return absl::StrJoin(v, "x");
  };
  switch (l.kind()) {
    case LayerSpec::SEQUENTIAL:
      return absl::StrCat("Sequential(", l.children_size(), " layers)");
    case LayerSpec::LINEAR:
      return absl::StrCat("Linear(", l.in_features(), ", ", l.out_features(),
                          l.bias() ? "" : ", bias=false", ")");
    case LayerSpec::CONV2D:
      return absl::StrCat(
          "Conv2d(", l.in_channels(), ", ", l.out_channels(),
          ", k=", pair(l.kernel_size()), ", s=", pair(l.stride()),
          ", p=", l.padding_same() ? "same" : pair(l.padding()),
          l.groups() != 1 ? absl::StrCat(", g=", l.groups()) : "",
          l.bias() ? "" : ", bias=false", ")");
    case LayerSpec::BATCH_NORM1D:
      return absl::StrCat("BatchNorm1d(", l.num_features(), ")");
    case LayerSpec::BATCH_NORM2D:
      return absl::StrCat("BatchNorm2d(", l.num_features(), ")");
    case LayerSpec::RELU:
      return "ReLU";
    case LayerSpec::LEAKY_RELU:
      return absl::StrCat("LeakyReLU(", l.negative_slope(), ")");
    case LayerSpec::SIGMOID:
      return "Sigmoid";
    case LayerSpec::TANH:
      return "Tanh";
    case LayerSpec::GELU:
      return absl::StrCat("GELU(", l.approximate(), ")");
    case LayerSpec::MAX_POOL2D:
      return absl::StrCat("MaxPool2d(k=", pair(l.kernel_size()),
                          ", s=", pair(l.stride()), ")");
    case LayerSpec::AVG_POOL2D:
      return absl::StrCat("AvgPool2d(k=", pair(l.kernel_size()),
                          ", s=", pair(l.stride()), ")");
    case LayerSpec::ADAPTIVE_AVG_POOL2D:
      return absl::StrCat("AdaptiveAvgPool2d(", pair(l.output_size()), ")");
    case LayerSpec::FLATTEN:
      return absl::StrCat("Flatten(", l.start_dim(), ", ", l.end_dim(), ")");
    case LayerSpec::DROPOUT:
      return absl::StrCat("Dropout(", l.p(), ")");
    default:
      return absl::StrCat("Unknown(kind=", static_cast<int>(l.kind()), ")");
  }
}

absl::Status CheckSameArchitecture(const pb::ModelSpec& expected,
                                   const pb::ModelSpec& actual) {
  std::vector<const LayerSpec*> a, b;
  Flatten(expected.layers(), &a);
  Flatten(actual.layers(), &b);
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    LayerSpec la = *a[i], lb = *b[i];
    la.clear_children();
    lb.clear_children();
    google::protobuf::util::MessageDifferencer differ;
    std::string diff;
    differ.ReportDifferencesToString(&diff);
    if (!differ.Compare(la, lb)) {
      // The first differing field, e.g. "modified: out_channels: 8 -> 16".
      const std::string first = diff.substr(0, diff.find('\n'));
      return absl::FailedPreconditionError(absl::StrCat(
          "layer '", a[i]->name(), "' differs: expected ", LayerSummary(*a[i]),
          " at '", a[i]->name(), "', model has ", LayerSummary(*b[i]), " at '",
          b[i]->name(), "' (", first, ")"));
    }
  }
  if (a.size() != b.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("expected ", a.size(), " layers, model has ", b.size()));
  }
  return absl::OkStatus();
}

}  // namespace posttrain

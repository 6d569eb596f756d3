#include "tools/export.h"

#include <ATen/ops/empty.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/nn/modules/container/sequential.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/model_spec.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "history/env.h"

namespace posttrain {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;
using pb::LayerSpec;

// Integers above 2^53 do not survive the JSON parser's doubles.
constexpr double kMaxExactInteger = 9007199254740992.0;
// Largest file ReadSafetensors reads.
constexpr uint64_t kMaxSafetensorsFile = uint64_t{16} << 30;
constexpr char kSpecKey[] = "posttrain.model_spec";

constexpr bool kLittleEndian =
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;  // the format's byte order

struct Dtype {
  const char* name;
  uint64_t size;
  c10::ScalarType type;
};
constexpr Dtype kDtypes[] = {
    {"F64", 8, c10::ScalarType::Double}, {"F32", 4, c10::ScalarType::Float},
    {"F16", 2, c10::ScalarType::Half},   {"BF16", 2, c10::ScalarType::BFloat16},
    {"I64", 8, c10::ScalarType::Long},   {"I32", 4, c10::ScalarType::Int},
    {"I16", 2, c10::ScalarType::Short},  {"I8", 1, c10::ScalarType::Char},
    {"U8", 1, c10::ScalarType::Byte},    {"BOOL", 1, c10::ScalarType::Bool},
};

const Dtype* FindDtype(absl::string_view name) {
  for (const Dtype& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const Dtype* FindDtype(c10::ScalarType type) {
  for (const Dtype& d : kDtypes) {
    if (type == d.type) return &d;
  }
  return nullptr;
}

template <typename... Args>
absl::Status Invalid(absl::string_view file, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", args...));
}

// The first line of a protobuf JSON error (the rest echoes the input).
std::string FirstLine(absl::string_view message) {
  return std::string(message.substr(0, message.find('\n')));
}

const char* KindName(const Value& v) {
  switch (v.kind_case()) {
    case Value::kNullValue:
      return "null";
    case Value::kNumberValue:
      return "a number";
    case Value::kStringValue:
      return "a string";
    case Value::kBoolValue:
      return "a boolean";
    case Value::kStructValue:
      return "an object";
    case Value::kListValue:
      return "a list";
    default:
      return "empty";
  }
}

// A JSON number that is a non-negative integer below 2^53.
bool ToIndex(const Value& v, uint64_t* out) {
  if (v.kind_case() != Value::kNumberValue) return false;
  const double d = v.number_value();
  if (!(d >= 0.0 && d < kMaxExactInteger) || d != std::floor(d)) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

std::string Describe(const Value& v) {
  if (v.kind_case() == Value::kNumberValue) {
    return absl::StrCat(v.number_value());
  }
  return KindName(v);
}

absl::Status ParseEntry(absl::string_view file, const std::string& name,
                        const Value& value, uint64_t data_size,
                        SafetensorsEntry* out) {
  const std::string where = absl::StrCat("tensor '", name, "'");
  if (name.empty()) return Invalid(file, "a tensor has an empty name");
  if (value.kind_case() != Value::kStructValue) {
    return Invalid(file, where, ": entry is ", KindName(value),
                   ", not an object");
  }
  const auto& fields = value.struct_value().fields();
  for (const auto& [key, unused] : fields) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return Invalid(file, where, ": unknown key '", key, "'");
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (fields.find(key) == fields.end()) {
      return Invalid(file, where, ": missing '", key, "'");
    }
  }
  out->name = name;

  const Value& dtype = fields.at("dtype");
  if (dtype.kind_case() != Value::kStringValue) {
    return Invalid(file, where, ": dtype is ", KindName(dtype),
                   ", not a string");
  }
  const Dtype* d = FindDtype(dtype.string_value());
  if (d == nullptr) {
    return Invalid(file, where, ": unknown dtype '", dtype.string_value(),
                   "' (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, "
                   "BOOL)");
  }
  out->dtype = d->name;

  const Value& shape = fields.at("shape");
  if (shape.kind_case() != Value::kListValue) {
    return Invalid(file, where, ": shape is ", KindName(shape), ", not a list");
  }
  uint64_t numel = 1;
  bool overflow = false;
  for (int i = 0; i < shape.list_value().values_size(); ++i) {
    const Value& dim = shape.list_value().values(i);
    uint64_t n = 0;
    if (!ToIndex(dim, &n)) {
      return Invalid(file, where, ": shape[", i, "] is ", Describe(dim),
                     ", not a non-negative integer");
    }
    out->shape.push_back(static_cast<int64_t>(n));
    overflow |= __builtin_mul_overflow(numel, n, &numel);
  }
  uint64_t nbytes = 0;
  overflow |= __builtin_mul_overflow(numel, d->size, &nbytes);
  const std::string shape_text =
      absl::StrCat("[", absl::StrJoin(out->shape, ", "), "]");
  if (overflow) {
    return Invalid(file, where, ": shape ", shape_text, " of ", d->name,
                   " overflows 64 bits of bytes");
  }

  const Value& offsets = fields.at("data_offsets");
  if (offsets.kind_case() != Value::kListValue ||
      offsets.list_value().values_size() != 2) {
    return Invalid(file, where, ": data_offsets is not a list of two values");
  }
  for (int i = 0; i < 2; ++i) {
    const Value& v = offsets.list_value().values(i);
    if (!ToIndex(v, i == 0 ? &out->begin : &out->end)) {
      return Invalid(file, where, ": data_offsets[", i, "] is ", Describe(v),
                     ", not a non-negative integer");
    }
  }
  if (out->end < out->begin) {
    return Invalid(file, where, ": data_offsets [", out->begin, ", ", out->end,
                   "] end before they begin");
  }
  if (out->end - out->begin != nbytes) {
    return Invalid(file, where, ": data_offsets [", out->begin, ", ", out->end,
                   "] hold ", out->end - out->begin, " bytes, but shape ",
                   shape_text, " of ", d->name, " needs ", nbytes);
  }
  if (out->end > data_size) {
    return Invalid(file, where, ": data_offsets [", out->begin, ", ", out->end,
                   "] end past the data section of ", data_size, " bytes");
  }
  return absl::OkStatus();
}

// JSON text of `s`: quoted, with '"', '\' and control characters escaped.
std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

// The spec as protobuf JSON with the .proto field names ("in_features");
// fields at their proto3 default (0, false, "", []) are left out.
absl::StatusOr<std::string> SpecToJson(const pb::ModelSpec& spec,
                                       absl::string_view path) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  const auto printed =
      google::protobuf::util::MessageToJsonString(spec, &json, options);
  if (!printed.ok()) {
    return absl::InternalError(absl::StrCat(
        path, ": model spec to JSON: ", std::string(printed.message())));
  }
  return json;
}

std::string FileSummary(absl::string_view name, const SafetensorsEntry& e) {
  return absl::StrCat("tensor '", name, "' (data bytes [", e.begin, ", ", e.end,
                      "))");
}

// ---- TorchScript ----------------------------------------------------------

// The state-dict prefix of `layer` inside the Sequential at `prefix`. The
// spec's names are dotted paths from the root (DescribeSequential); a name
// without the parent's prefix is taken as the child's own name.
std::string LayerPath(const std::string& prefix, const std::string& name) {
  if (prefix.empty() || absl::StartsWith(name, prefix + ".")) return name;
  return absl::StrCat(prefix, ".", name);
}

// "l" + the state name with '.' replaced by '_': "0.weight" -> "l0_weight".
std::string AttributeName(absl::string_view state_name) {
  return absl::StrCat("l", absl::StrReplaceAll(state_name, {{".", "_"}}));
}

bool IsIdentifierTail(absl::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
  });
}

// A TorchScript float literal; non-finite values are refused.
absl::StatusOr<std::string> FloatLiteral(double v, const std::string& path,
                                         const char* field) {
  if (!std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer '", path, "': ", field, " ", v, " cannot be exported"));
  }
  std::string s = absl::StrFormat("%.17g", v);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string IntList(const google::protobuf::RepeatedField<int64_t>& v) {
  return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
}

absl::Status NeedPair(const std::string& path,
                      const google::protobuf::RepeatedField<int64_t>& v,
                      const char* field) {
  if (v.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer '", path, "': ", field, " needs two values, got ", v.size()));
  }
  return absl::OkStatus();
}

const char* Bool(bool b) { return b ? "True" : "False"; }

// Generates the body of forward() from the spec and records which state
// tensors it reads, and whether each is a parameter or a buffer.
class ScriptWriter {
 public:
  explicit ScriptWriter(const std::set<std::string>& state_names)
      : state_names_(state_names) {}

  absl::Status Layers(
      const google::protobuf::RepeatedPtrField<LayerSpec>& layers,
      const std::string& prefix, int depth) {
    if (depth > 32) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer '", prefix, "': Sequentials nest too deep"));
    }
    for (const LayerSpec& l : layers) {
      PT_RETURN_IF_ERROR(Layer(l, LayerPath(prefix, l.name()), depth));
    }
    return absl::OkStatus();
  }

  std::string Source() const {
    return absl::StrCat("def forward(self, x: Tensor) -> Tensor:\n", body_,
                        "    return x\n");
  }

  // State name -> true for a parameter, false for a buffer.
  const std::map<std::string, bool>& used() const { return used_; }

 private:
  // "self.l0_weight" for "<path>.<leaf>", recorded as used.
  absl::StatusOr<std::string> Ref(const std::string& path, const char* leaf,
                                  bool parameter) {
    const std::string name = absl::StrCat(path, ".", leaf);
    if (state_names_.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer '", path, "': the state has no tensor '", name, "'"));
    }
    used_[name] = parameter;
    return absl::StrCat("self.", AttributeName(name));
  }

  absl::StatusOr<std::string> Optional(const std::string& path,
                                       const char* leaf, bool present,
                                       bool parameter) {
    if (!present) return std::string("None");
    return Ref(path, leaf, parameter);
  }

  void Line(absl::string_view code) {
    absl::StrAppend(&body_, "    ", code, "\n");
  }

  absl::Status Layer(const LayerSpec& l, const std::string& path, int depth) {
    if (path.empty() ||
        !IsIdentifierTail(absl::StrReplaceAll(path, {{".", "_"}}))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer '", path,
          "': name must be non-empty letters, digits, '_' and '.'"));
    }
    Line(absl::StrCat("# ", path, ": ", LayerSummary(l)));
    switch (l.kind()) {
      case LayerSpec::SEQUENTIAL:
        return Layers(l.children(), path, depth + 1);
      case LayerSpec::LINEAR: {
        PT_ASSIGN_OR_RETURN(std::string w, Ref(path, "weight", true));
        PT_ASSIGN_OR_RETURN(std::string b,
                            Optional(path, "bias", l.bias(), true));
        Line(absl::StrCat("x = torch.linear(x, ", w, ", ", b, ")"));
        return absl::OkStatus();
      }
      case LayerSpec::CONV2D: {
        PT_RETURN_IF_ERROR(NeedPair(path, l.stride(), "stride"));
        PT_RETURN_IF_ERROR(NeedPair(path, l.dilation(), "dilation"));
        if (!l.padding_same()) {
          PT_RETURN_IF_ERROR(NeedPair(path, l.padding(), "padding"));
        }
        PT_ASSIGN_OR_RETURN(std::string w, Ref(path, "weight", true));
        PT_ASSIGN_OR_RETURN(std::string b,
                            Optional(path, "bias", l.bias(), true));
        Line(absl::StrCat("x = torch.conv2d(x, ", w, ", ", b, ", ",
                          IntList(l.stride()), ", ",
                          l.padding_same() ? "\"same\"" : IntList(l.padding()),
                          ", ", IntList(l.dilation()), ", ", l.groups(), ")"));
        return absl::OkStatus();
      }
      case LayerSpec::BATCH_NORM1D:
      case LayerSpec::BATCH_NORM2D: {
        const bool two_d = l.kind() == LayerSpec::BATCH_NORM2D;
        const bool stats = l.track_running_stats();
        PT_ASSIGN_OR_RETURN(std::string w,
                            Optional(path, "weight", l.affine(), true));
        PT_ASSIGN_OR_RETURN(std::string b,
                            Optional(path, "bias", l.affine(), true));
        PT_ASSIGN_OR_RETURN(std::string mean,
                            Optional(path, "running_mean", stats, false));
        PT_ASSIGN_OR_RETURN(std::string var,
                            Optional(path, "running_var", stats, false));
        if (stats) {  // unused in eval mode, kept for the state dict
          PT_RETURN_IF_ERROR(Ref(path, "num_batches_tracked", false).status());
        }
        PT_ASSIGN_OR_RETURN(std::string eps,
                            FloatLiteral(l.eps(), path, "eps"));
        PT_ASSIGN_OR_RETURN(
            std::string momentum,
            FloatLiteral(l.cumulative_average() ? 0.0 : l.momentum(), path,
                         "momentum"));
        // As BatchNorm{1,2}d::_check_input_dim.
        Line(absl::StrCat(
            "assert ", two_d ? "x.dim() == 4" : "x.dim() == 2 or x.dim() == 3",
            ", \"layer ", path, " (", LayerSummary(l), "): expected ",
            two_d ? "4D" : "2D or 3D", " input\""));
        // Eval mode: the running statistics when tracked, else the batch's.
        Line(absl::StrCat("x = torch.batch_norm(x, ", w, ", ", b, ", ", mean,
                          ", ", var, ", ", Bool(!stats), ", ", momentum, ", ",
                          eps, ", True)"));
        return absl::OkStatus();
      }
      case LayerSpec::RELU:
        Line("x = torch.relu(x)");
        return absl::OkStatus();
      case LayerSpec::LEAKY_RELU: {
        PT_ASSIGN_OR_RETURN(
            std::string slope,
            FloatLiteral(l.negative_slope(), path, "negative_slope"));
        Line(absl::StrCat("x = torch.leaky_relu(x, ", slope, ")"));
        return absl::OkStatus();
      }
      case LayerSpec::SIGMOID:
        Line("x = torch.sigmoid(x)");
        return absl::OkStatus();
      case LayerSpec::TANH:
        Line("x = torch.tanh(x)");
        return absl::OkStatus();
      case LayerSpec::GELU:
        if (l.approximate() != "none" && l.approximate() != "tanh") {
          return absl::InvalidArgumentError(absl::StrCat(
              "layer '", path, "': GELU approximate must be none or tanh"));
        }
        Line(absl::StrCat("x = torch.gelu(x, approximate=\"", l.approximate(),
                          "\")"));
        return absl::OkStatus();
      case LayerSpec::MAX_POOL2D:
        PT_RETURN_IF_ERROR(NeedPair(path, l.kernel_size(), "kernel_size"));
        PT_RETURN_IF_ERROR(NeedPair(path, l.stride(), "stride"));
        PT_RETURN_IF_ERROR(NeedPair(path, l.padding(), "padding"));
        PT_RETURN_IF_ERROR(NeedPair(path, l.dilation(), "dilation"));
        Line(absl::StrCat("x = torch.max_pool2d(x, ", IntList(l.kernel_size()),
                          ", ", IntList(l.stride()), ", ", IntList(l.padding()),
                          ", ", IntList(l.dilation()), ", ",
                          Bool(l.ceil_mode()), ")"));
        return absl::OkStatus();
      case LayerSpec::AVG_POOL2D:
        PT_RETURN_IF_ERROR(NeedPair(path, l.kernel_size(), "kernel_size"));
        PT_RETURN_IF_ERROR(NeedPair(path, l.stride(), "stride"));
        PT_RETURN_IF_ERROR(NeedPair(path, l.padding(), "padding"));
        Line(absl::StrCat("x = torch.avg_pool2d(x, ", IntList(l.kernel_size()),
                          ", ", IntList(l.stride()), ", ", IntList(l.padding()),
                          ", ", Bool(l.ceil_mode()), ", ",
                          Bool(l.count_include_pad()), ", None)"));
        return absl::OkStatus();
      case LayerSpec::ADAPTIVE_AVG_POOL2D:
        PT_RETURN_IF_ERROR(NeedPair(path, l.output_size(), "output_size"));
        Line(absl::StrCat("x = torch.adaptive_avg_pool2d(x, ",
                          IntList(l.output_size()), ")"));
        return absl::OkStatus();
      case LayerSpec::FLATTEN:
        Line(absl::StrCat("x = torch.flatten(x, ", l.start_dim(), ", ",
                          l.end_dim(), ")"));
        return absl::OkStatus();
      case LayerSpec::DROPOUT:
        // Identity: the exported module is for inference (eval mode).
        return absl::OkStatus();
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "layer '", path, "' has kind ", static_cast<int>(l.kind()),
            ", which the TorchScript exporter cannot express"));
    }
  }

  const std::set<std::string>& state_names_;
  std::map<std::string, bool> used_;
  std::string body_;
};

}  // namespace

absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::string_view bytes,
                                                 absl::string_view file) {
  if (bytes.size() < 8) {
    return Invalid(file, "truncated: ", bytes.size(),
                   " bytes, but the header length at byte 0 takes 8");
  }
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) {
    n |= uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  }
  if (n > kMaxSafetensorsHeader) {
    return Invalid(file, "header length ", n,
                   " at byte 0 is over the limit of ", kMaxSafetensorsHeader,
                   " bytes");
  }
  if (n > bytes.size() - 8) {
    return Invalid(file, "header length ", n,
                   " at byte 0 goes past the end of the file (", bytes.size(),
                   " bytes; the header would end at byte ", 8 + n, ")");
  }
  const absl::string_view header = bytes.substr(8, n);
  const size_t first = header.find_first_not_of(" \t\r\n");
  if (first == absl::string_view::npos || header[first] != '{') {
    return Invalid(file, "header at byte 8 is not a JSON object");
  }
  Struct root;
  const auto parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(header.data(), header.size()), &root);
  if (!parsed.ok()) {
    return Invalid(file, "header at byte 8 (", n, " bytes) is not valid JSON: ",
                   FirstLine(std::string(parsed.message())));
  }

  SafetensorsFile out;
  out.data_offset = 8 + n;
  const uint64_t data_size = bytes.size() - out.data_offset;
  // Sorted names: the first error is the same on every run.
  std::vector<const std::string*> names;
  names.reserve(root.fields().size());
  for (const auto& [name, unused] : root.fields()) names.push_back(&name);
  std::sort(names.begin(), names.end(),
            [](const std::string* a, const std::string* b) { return *a < *b; });
  for (const std::string* name : names) {
    const Value& value = root.fields().at(*name);
    if (*name == "__metadata__") {
      if (value.kind_case() != Value::kStructValue) {
        return Invalid(file, "__metadata__ is ", KindName(value),
                       ", not an object of strings");
      }
      for (const auto& [key, v] : value.struct_value().fields()) {
        if (v.kind_case() != Value::kStringValue) {
          return Invalid(file, "__metadata__ key '", key, "' is ", KindName(v),
                         ", not a string");
        }
        out.metadata[key] = v.string_value();
      }
      continue;
    }
    SafetensorsEntry entry;
    PT_RETURN_IF_ERROR(ParseEntry(file, *name, value, data_size, &entry));
    out.tensors.push_back(std::move(entry));
  }

  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
              return std::tie(a.begin, a.end, a.name) <
                     std::tie(b.begin, b.end, b.name);
            });
  uint64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& e : out.tensors) {
    if (e.begin < covered) {
      return Invalid(file, FileSummary(e.name, e), " overlaps ",
                     FileSummary(previous->name, *previous), " at byte ",
                     out.data_offset + e.begin);
    }
    if (e.begin > covered) {
      return Invalid(file, "gap of ", e.begin - covered, " bytes at byte ",
                     out.data_offset + covered, " (data byte ", covered,
                     ") before tensor '", e.name, "'");
    }
    covered = e.end;
    previous = &e;
  }
  if (covered != data_size) {
    return Invalid(file, data_size - covered, " bytes at byte ",
                   out.data_offset + covered, " (data byte ", covered,
                   ") to the end of the file belong to no tensor");
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path,
                              const pb::ModelSpec& spec,
                              const NamedTensors& state) {
  if (!kLittleEndian) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": safetensors writing needs a little-endian host"));
  }
  PT_ASSIGN_OR_RETURN(const std::string spec_json, SpecToJson(spec, path));

  std::string header =
      absl::StrCat("{\"__metadata__\":{\"format\":\"pt\",",
                   JsonString(kSpecKey), ":", JsonString(spec_json), "}");
  std::vector<at::Tensor> tensors;
  tensors.reserve(state.size());
  std::set<std::string> seen;
  uint64_t offset = 0;
  absl::Status s;
  PT_RETURN_IF_ERROR(CallTorch(absl::StrCat(path, ": preparing tensors"), [&] {
    for (const NamedTensor& t : state) {
      if (t.name.empty() || t.name == "__metadata__" ||
          !seen.insert(t.name).second) {
        s = Invalid(path, "tensor name '", t.name,
                    "' is empty, reserved or repeated");
        return;
      }
      if (!t.tensor.defined()) {
        s = Invalid(path, "tensor '", t.name, "' is undefined");
        return;
      }
      const Dtype* d = FindDtype(t.tensor.scalar_type());
      if (d == nullptr) {
        s = Invalid(path, "tensor '", t.name, "' has dtype ",
                    c10::toString(t.tensor.scalar_type()),
                    ", which safetensors export does not support");
        return;
      }
      at::Tensor cpu = t.tensor.detach().to(at::kCPU).contiguous();
      const uint64_t nbytes = static_cast<uint64_t>(cpu.numel()) * d->size;
      absl::StrAppend(&header, ",", JsonString(t.name), ":{\"dtype\":\"",
                      d->name, "\",\"shape\":[",
                      absl::StrJoin(cpu.sizes(), ","), "],\"data_offsets\":[",
                      offset, ",", offset + nbytes, "]}");
      offset += nbytes;
      tensors.push_back(std::move(cpu));
    }
  }));
  PT_RETURN_IF_ERROR(s);
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');

  std::string bytes;
  bytes.reserve(8 + header.size() + offset);
  for (int i = 0; i < 8; ++i) {
    bytes += static_cast<char>((uint64_t{header.size()} >> (8 * i)) & 0xff);
  }
  bytes += header;
  for (const at::Tensor& t : tensors) {
    bytes.append(static_cast<const char*>(t.data_ptr()),
                 static_cast<size_t>(t.numel()) * t.element_size());
  }
  // Never write what ReadSafetensors would refuse (a name the JSON parser
  // rejects, a header over the limit).
  PT_RETURN_IF_ERROR(ParseSafetensors(bytes, path).status());
  return WriteFileAtomically(Env::Default(), path, {bytes}, true, true);
}

absl::StatusOr<SafetensorsModel> ReadSafetensors(const std::string& path) {
  if (!kLittleEndian) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": safetensors reading needs a little-endian host"));
  }
  Env* env = Env::Default();
  PT_ASSIGN_OR_RETURN(const uint64_t size, env->GetFileSize(path));
  if (size > kMaxSafetensorsFile) {
    return Invalid(path, size, " bytes is over the limit of ",
                   kMaxSafetensorsFile, " bytes");
  }
  PT_ASSIGN_OR_RETURN(const std::string bytes,
                      env->ReadFile(path, kMaxSafetensorsFile));
  PT_ASSIGN_OR_RETURN(const SafetensorsFile file,
                      ParseSafetensors(bytes, path));
  SafetensorsModel model;
  const auto spec = file.metadata.find(kSpecKey);
  if (spec == file.metadata.end()) {
    return Invalid(path, "__metadata__ has no '", kSpecKey,
                   "': not written by posttrain");
  }
  const auto parsed =
      google::protobuf::util::JsonStringToMessage(spec->second, &model.spec);
  if (!parsed.ok()) {
    return Invalid(path, "__metadata__ '", kSpecKey, "' is not a ModelSpec: ",
                   FirstLine(std::string(parsed.message())));
  }
  for (const SafetensorsEntry& e : file.tensors) {
    const Dtype* d = FindDtype(e.dtype);  // known: ParseSafetensors checked
    const char* data = bytes.data() + file.data_offset + e.begin;
    const size_t nbytes = e.end - e.begin;
    if (d->type == c10::ScalarType::Bool) {
      for (size_t i = 0; i < nbytes; ++i) {
        if (static_cast<unsigned char>(data[i]) > 1) {
          return Invalid(path, "tensor '", e.name, "': BOOL byte at ",
                         file.data_offset + e.begin + i, " is not 0 or 1");
        }
      }
    }
    at::Tensor t;
    PT_RETURN_IF_ERROR(
        CallTorch(absl::StrCat(path, ": tensor '", e.name, "'"), [&] {
          t = at::empty(e.shape, at::TensorOptions().dtype(d->type));
          if (nbytes > 0) std::memcpy(t.data_ptr(), data, nbytes);
        }));
    model.state.push_back({e.name, std::move(t)});
  }
  return model;
}

absl::StatusOr<SafetensorsModel> ReadTorchScript(const std::string& path) {
  constexpr char kExtra[] = "posttrain/model_spec.json";
  SafetensorsModel model;
  torch::jit::Module module;
  torch::jit::ExtraFilesMap extra{{kExtra, ""}};
  PT_RETURN_IF_ERROR(CallTorch(absl::StrCat(path, ": torch::jit::load"), [&] {
    module = torch::jit::load(path, c10::nullopt, extra);
  }));
  if (extra[kExtra].empty()) {
    return Invalid(path, "holds no ", kExtra, ": not written by posttrain");
  }
  const auto parsed =
      google::protobuf::util::JsonStringToMessage(extra[kExtra], &model.spec);
  if (!parsed.ok()) {
    return Invalid(path, kExtra, " is not a ModelSpec: ",
                   FirstLine(std::string(parsed.message())));
  }
  // The state names are the rebuilt model's; each tensor is the module's
  // attribute of that name.
  PT_ASSIGN_OR_RETURN(torch::nn::Sequential built, BuildSequential(model.spec));
  PT_ASSIGN_OR_RETURN(NamedTensors names, CopyModuleState(*built));
  for (const NamedTensor& n : names) {
    const std::string attr = AttributeName(n.name);
    if (!module.hasattr(attr)) {
      return Invalid(path, "has no tensor '", attr, "' for '", n.name, "'");
    }
    at::Tensor t;
    PT_RETURN_IF_ERROR(CallTorch(absl::StrCat(path, ": tensor '", attr, "'"),
                                 [&] { t = module.attr(attr).toTensor(); }));
    model.state.push_back({n.name, t.detach().cpu().contiguous()});
  }
  return model;
}

absl::Status WriteTorchScript(const std::string& path,
                              const pb::ModelSpec& spec,
                              const NamedTensors& state) {
  // The spec and state must build the C++ model: its checks (options,
  // names, shapes, dtypes) are the exporter's.
  {
    PT_ASSIGN_OR_RETURN(torch::nn::Sequential model, BuildSequential(spec));
    PT_RETURN_IF_ERROR(Annotate(LoadModuleState(state, *model), path));
  }
  std::set<std::string> names;
  for (const NamedTensor& t : state) names.insert(t.name);
  ScriptWriter writer(names);
  PT_RETURN_IF_ERROR(Annotate(writer.Layers(spec.layers(), "", 0), path));
  std::set<std::string> attributes;
  for (const NamedTensor& t : state) {
    if (writer.used().count(t.name) == 0) {
      return Invalid(path, "tensor '", t.name, "' belongs to no layer");
    }
    if (!attributes.insert(AttributeName(t.name)).second) {
      return Invalid(path, "tensor '", t.name, "': attribute name ",
                     AttributeName(t.name), " is taken");
    }
  }

  PT_ASSIGN_OR_RETURN(const std::string spec_json, SpecToJson(spec, path));
  const std::string source = writer.Source();
  std::string bytes;
  PT_RETURN_IF_ERROR(
      CallTorch(absl::StrCat(path, ": building the TorchScript module"), [&] {
        torch::jit::Module m("posttrain.Model");
        // Module::train() expects the attribute nn.Module has.
        m.register_attribute("training", c10::BoolType::get(), false);
        for (const NamedTensor& t : state) {
          at::Tensor copy = t.tensor.detach().to(
              at::TensorOptions().device(at::kCPU), /*non_blocking=*/false,
              /*copy=*/true, at::MemoryFormat::Contiguous);
          if (writer.used().at(t.name)) {
            if (copy.is_floating_point()) copy.set_requires_grad(true);
            m.register_parameter(AttributeName(t.name), copy,
                                 /*is_buffer=*/false);
          } else {
            m.register_buffer(AttributeName(t.name), copy);
          }
        }
        m.define(source);
        m.eval();
        std::ostringstream out;
        m.save(out, {{"posttrain/model_spec.json", spec_json}});
        bytes = std::move(out).str();
      }));
  return WriteFileAtomically(Env::Default(), path, {bytes}, true, true);
}

}  // namespace posttrain

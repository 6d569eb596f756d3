#include "robustness/dare.h"

#include <torch/torch.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/model_view.h"
#include "common/module_state.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {
namespace {

std::vector<DareVariant> Variants() {
  using Mode = MinerOptions::Mode;
  return {
      {"dare", std::nullopt, std::nullopt, std::nullopt, Mode::kBest},
      {"dare_no_slice", std::nullopt, false, std::nullopt, Mode::kBest},
      {"dare_no_transform", std::nullopt, false, false, Mode::kBest},
      {"dare_last", 0, std::nullopt, std::nullopt, Mode::kBest},
      {"dare_random", std::nullopt, std::nullopt, std::nullopt, Mode::kRandom}};
}

std::string Json(double v) { return absl::StrFormat("%.6g", v); }

int64_t NumClasses(const ModelView& view) {
  return view.weighted_layers().empty()
             ? 0
             : view.Weight(view.weighted_layers().back()).size(0);
}

absl::Status CheckLabelled(const LabelledData& d, const char* what,
                           int64_t min_size) {
  if (!d.inputs.defined() || d.inputs.dim() == 0 ||
      d.inputs.size(0) < min_size || !d.labels.defined() ||
      d.labels.dim() != 1 || d.labels.size(0) != d.inputs.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Dare: `", what, "` needs at least ", min_size,
                     " inputs and one class label ([N]) per input"));
  }
  if (!c10::isIntegralType(d.labels.scalar_type(), /*includeBool=*/false)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Dare: `", what, "` labels must be integer class ids"));
  }
  return absl::OkStatus();
}

class DareTask : public PostTrainTask {
 public:
  DareTask(DareOptions options, DareVariant variant, PipelineOptions settings)
      : options_(std::move(options)),
        variant_(std::move(variant)),
        settings_(std::move(settings)) {}

  std::string name() const override { return variant_.name; }
  const PipelineOptions& settings() const override { return settings_; }

  std::vector<std::pair<std::string, std::string>> Describe() const override {
    return {
        {"variant", JsonQuote(variant_.name)},
        {"mining", variant_.mode == MinerOptions::Mode::kBest
                       ? "\"algorithm 1\""
                       : "\"random history model\""},
        {"guard_fraction", Json(options_.guard_fraction)},
        {"max_mine_inputs", absl::StrCat(options_.max_mine_inputs)},
        {"mine_batch_size", absl::StrCat(options_.mine_batch_size)},
        {"validation_inputs", absl::StrCat(options_.validation.inputs.size(0))},
        {"slice_data", options_.slice_data.inputs.defined()
                           ? "\"slice_data\""
                           : "\"the mining split\""}};
  }

  absl::Status Check(const torch::nn::Sequential& model) const override {
    PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(model));
    const int64_t classes = NumClasses(view);
    for (const auto& [data, what] :
         {std::make_pair(&options_.validation, "validation"),
          std::make_pair(&options_.slice_data, "slice_data")}) {
      if (!data->inputs.defined()) continue;
      absl::Status status;
      PT_RETURN_IF_ERROR(CallTorch("checking the data", [&] {
        const int64_t lo = data->labels.min().item<int64_t>();
        const int64_t hi = data->labels.max().item<int64_t>();
        if (lo < 0 || hi >= classes) {
          status = absl::InvalidArgumentError(absl::StrCat(
              "Dare: `", what, "` has class label ", lo < 0 ? lo : hi,
              " but the model has ", classes, " outputs"));
        }
      }));
      PT_RETURN_IF_ERROR(status);
      // One input through the model: the shapes must fit.
      PT_RETURN_IF_ERROR(ForwardFirstInput(model, data->inputs,
                                           absl::StrCat("Dare: `", what, "`"))
                             .status());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<GuardSpec> MakeGuard(const TaskContext& ctx) override {
    (void)ctx;
    PT_ASSIGN_OR_RETURN(
        GuardSplit split,
        SplitForGuard(options_.validation, options_.guard_fraction,
                      settings_.seed, options_.max_mine_inputs));
    guard_ = std::move(split.guard);
    mine_ = std::move(split.rest);
    split_ = true;
    return AccuracyGuard(guard_);
  }

  absl::StatusOr<Augmentation> Augment(const TaskContext& ctx, int p) override {
    if (!split_ || !mine_.inputs.defined()) {
      PT_RETURN_IF_ERROR(MakeGuard(ctx).status());
    }
    if (ctx.history == nullptr) {
      return absl::FailedPreconditionError(
          "Dare mines the training history, and the host gave none");
    }
    MinerOptions miner;
    miner.mode = variant_.mode;
    miner.seed = settings_.seed;
    miner.p = p;
    miner.batch_size = options_.mine_batch_size;
    miner.progress = ctx.progress;
    PT_ASSIGN_OR_RETURN(MinedSet mined,
                        MineHistory(ctx.model, *ctx.history, mine_.inputs,
                                    mine_.labels, miner));
    miner.stage = "mining (guard split)";
    PT_ASSIGN_OR_RETURN(MinedSet guard,
                        MineHistory(ctx.model, *ctx.history, guard_.inputs,
                                    guard_.labels, miner));
    // The mined split's copy of D is needed again only where slicing reads
    // it; otherwise it goes now, before tuning (|D| inputs: 29.9 MiB at
    // the example's 10 000). A second Augment splits again, identically.
    if (options_.slice_data.inputs.defined()) mine_ = LabelledData();
    Augmentation a;
    a.figures["T/D"] = mined.ratio();  // before the data moves out
    a.train = std::move(mined.data);
    a.validation = std::move(guard.data);
    a.figures["D"] = static_cast<double>(mined.candidates);
    a.figures["T"] = static_cast<double>(a.train.size());
    a.figures["guard_T"] = static_cast<double>(a.validation.size());
    a.figures["history_epochs"] = static_cast<double>(mined.epochs.size());
    a.figures["mining_seconds"] = mined.seconds + guard.seconds;
    for (const auto& [epoch, count] : mined.chosen) {
      a.figures[absl::StrCat("chosen_epoch_", epoch)] =
          static_cast<double>(count);
    }
    return a;
  }

  absl::StatusOr<SlicingPlan> PlanSlicing(const TaskContext& ctx) override {
    if (!split_) PT_RETURN_IF_ERROR(MakeGuard(ctx).status());
    PT_ASSIGN_OR_RETURN(ModelView view, ModelView::Create(ctx.model));
    const LabelledData& slice =
        options_.slice_data.inputs.defined() ? options_.slice_data : mine_;
    return ClassSlicingPlan(slice, NumClasses(view));
  }

 private:
  DareOptions options_;
  DareVariant variant_;
  PipelineOptions settings_;
  bool split_ = false;
  LabelledData mine_, guard_;
};

}  // namespace

absl::StatusOr<GuardSplit> SplitForGuard(const LabelledData& val,
                                         double guard_fraction, uint64_t seed,
                                         int64_t max_rest) {
  if (!val.inputs.defined() || val.inputs.dim() == 0 ||
      val.inputs.size(0) < 2 || !(guard_fraction > 0 && guard_fraction < 1)) {
    return absl::InvalidArgumentError(
        "the guard split needs at least 2 inputs and a fraction in (0, 1)");
  }
  GuardSplit out;
  PT_RETURN_IF_ERROR(CallTorch("splitting the validation data", [&] {
    auto gen = at::detail::createCPUGenerator(seed);
    const int64_t n = val.inputs.size(0);
    // At least one guard input and at least one other.
    const int64_t n_guard =
        std::clamp<int64_t>(std::llround(n * guard_fraction), 1, n - 1);
    at::Tensor order = torch::randperm(n, gen);
    at::Tensor g = order.narrow(0, 0, n_guard).to(val.inputs.device());
    at::Tensor d =
        order.narrow(0, n_guard, n - n_guard).to(val.inputs.device());
    out.guard = {val.inputs.index_select(0, g),
                 val.labels.index_select(0, g.to(val.labels.device()))};
    if (max_rest > 0 && d.numel() > max_rest) d = d.narrow(0, 0, max_rest);
    out.rest = {val.inputs.index_select(0, d),
                val.labels.index_select(0, d.to(val.labels.device()))};
  }));
  return out;
}

std::vector<std::string> DareVariantNames() {
  std::vector<std::string> names;
  for (const DareVariant& v : Variants()) names.push_back(v.name);
  return names;
}

absl::StatusOr<DareVariant> DareVariantByName(const std::string& name) {
  for (const DareVariant& v : Variants()) {
    if (v.name == name) return v;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown Dare variant '", name,
                   "'; known: ", absl::StrJoin(DareVariantNames(), ", ")));
}

PipelineOptions DefaultDarePipeline() {
  PipelineOptions o;
  o.max_slice_inputs = 10000;
  return o;
}

absl::StatusOr<std::unique_ptr<PostTrainTask>> MakeDareTask(
    DareOptions options) {
  PT_ASSIGN_OR_RETURN(DareVariant variant, DareVariantByName(options.variant));
  PT_ASSIGN_OR_RETURN(PipelineOptions settings,
                      variant.Apply(options.pipeline));
  PT_RETURN_IF_ERROR(CheckLabelled(options.validation, "validation", 2));
  if (options.slice_data.inputs.defined()) {
    PT_RETURN_IF_ERROR(CheckLabelled(options.slice_data, "slice_data", 1));
  }
  if (!(options.guard_fraction > 0 && options.guard_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Dare: guard_fraction must be in (0, 1), got ",
                     options.guard_fraction));
  }
  if (options.max_mine_inputs < 0 || options.mine_batch_size < 1) {
    return absl::InvalidArgumentError(
        "Dare: max_mine_inputs must be >= 0 and mine_batch_size >= 1");
  }
  return std::unique_ptr<PostTrainTask>(new DareTask(
      std::move(options), std::move(variant), std::move(settings)));
}

}  // namespace posttrain

#include "robustness/dare.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace posttrain {
namespace {

std::vector<DareVariant> Variants() {
  using Mode = MinerOptions::Mode;
  return {{"dare", 1, true, true, Mode::kBest},
          {"dare_no_slice", 1, false, true, Mode::kBest},
          {"dare_no_transform", 1, false, false, Mode::kBest},
          {"dare_last", 0, true, true, Mode::kBest},
          {"dare_random", 1, true, true, Mode::kRandom}};
}

}  // namespace

PipelineOptions DareVariant::Apply(PipelineOptions options) const {
  options.tuner.p = p;
  options.slice = slice;
  options.transform = transform;
  return options;
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

absl::StatusOr<Augmentation> DareAugmenter::Augment(
    const torch::nn::Sequential& model, int p) {
  MinerOptions options = options_;
  options.p = p;
  PT_ASSIGN_OR_RETURN(MinedSet mined, MineHistory(model, store_, mine_.inputs,
                                                  mine_.labels, options));
  PT_ASSIGN_OR_RETURN(MinedSet guard, MineHistory(model, store_, guard_.inputs,
                                                  guard_.labels, options));
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

}  // namespace posttrain

// Dare (paper §4.1; ALGORITHMS.md §3): the Augmenter that mines the
// training history (HistoryMiner, Algorithm 1) for references, and its
// named ablations.
//
//   variant            p  slice  transform  history model per sample
//   dare               1  yes    yes        the most confident (Alg. 1)
//   dare_no_slice      1  no     yes        the most confident   (Dare−s)
//   dare_no_transform  -  no     no         the most confident   (Dare−sl:
//                                           cross-entropy on T's inputs)
//   dare_last          0  yes    yes        the most confident   (p = 0)
//   dare_random        1  yes    yes        a random one         (Dare_rand)
//
// Example:
//   PT_ASSIGN_OR_RETURN(DareVariant v, DareVariantByName("dare"));
//   DareAugmenter dare(store, mine_split, guard_split, v.miner);
//   PipelineOptions options = v.Apply(PipelineOptions{});
#ifndef POSTTRAIN_ROBUSTNESS_DARE_H_
#define POSTTRAIN_ROBUSTNESS_DARE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "history/store.h"
#include "robustness/history_miner.h"
#include "tuner/pipeline.h"

namespace posttrain {

struct DareVariant {
  std::string name;
  int p = 1;
  bool slice = true;
  bool transform = true;
  MinerOptions::Mode mode = MinerOptions::Mode::kBest;
  // `options` with this variant's p, slice and transform set.
  PipelineOptions Apply(PipelineOptions options) const;
};

// The variants in the table above, by name; InvalidArgument naming the
// unknown one (and listing the known ones).
absl::StatusOr<DareVariant> DareVariantByName(const std::string& name);
std::vector<std::string> DareVariantNames();

class DareAugmenter : public Augmenter {
 public:
  // `mine` is D (Algorithm 1 runs on it), `guard` the guard split (mined
  // the same way for the tuner's validation loss). The store must outlive
  // the augmenter.
  DareAugmenter(const HistoryStore& store, LabelledData mine,
                LabelledData guard, MinerOptions options)
      : store_(store),
        mine_(std::move(mine)),
        guard_(std::move(guard)),
        options_(options) {}

  std::string name() const override { return "dare"; }
  absl::StatusOr<Augmentation> Augment(const torch::nn::Sequential& model,
                                       int p) override;

 private:
  const HistoryStore& store_;
  LabelledData mine_, guard_;
  MinerOptions options_;
};

}  // namespace posttrain

#endif  // POSTTRAIN_ROBUSTNESS_DARE_H_

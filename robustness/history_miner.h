// HistoryMiner: Algorithm 1 of the paper (§4.1, Dare; ALGORITHMS.md §3).
// For every input σ of D, the history models M_i of the latest ⌈t/2⌉
// stored training epochs (counted as epochs, not by epoch number: sparse
// snapshots and retention gaps do not shrink the window) are visited from
// oldest to newest; one becomes M_best when it predicts σ's
// label with a confidence strictly above the best so far (starting from M's
// confidence when M is right, else 0). Samples with an M_best go to the
// augmented set T with M_best's regression output (layer l(r−p) of
// RegressionView, or the true-class probability for p = 0) as reference.
//
// History models are loaded one at a time into a single copy of M and run
// batched over D: the miner holds M, one history model, T, one [|D|,
// outputs] table of references, and one batch's activations. The whole Dare
// phase holds at most, in live tensors: six model-sized sets (M, the
// history or regression copy, the tuner's best weights, gradients and
// Adam's two moments), T and its guard part, the guard split's inputs, the
// larger of D and the slicing sample (D is dropped before slicing copies
// its sample), the references, and one batch's working set (a 128-sample
// tuning step or a 512-image forward without gradients). bench/dare_bench
// measures it against this bound (docs/BENCHMARKS.md, issue 13). A history
// epoch whose weights equal M's bit for bit (the final epoch, usually) is
// skipped: with the strict comparison of Algorithm 1 it can never be
// chosen over M. (With the lossy history codec that epoch is M plus
// quantization noise and is mined like the others.)
//
// Example:
//   PT_ASSIGN_OR_RETURN(MinedSet mined,
//       MineHistory(model, *store, val_images, val_labels, {}));
//   // mined.data: inputs, references, criteria (= labels), labels
//
// Thread safety: the store may be shared; the model must not train
// meanwhile.
#ifndef POSTTRAIN_ROBUSTNESS_HISTORY_MINER_H_
#define POSTTRAIN_ROBUSTNESS_HISTORY_MINER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "history/store.h"
#include "tuner/masked_tuner.h"
#include "tuner/progress.h"

namespace posttrain {

struct MinerOptions {
  int p = 1;  // the regression target, as RegressionView
  // kBest: Algorithm 1. kRandom: the dare_random ablation (Dare_rand,
  // ALGORITHMS.md §3): as many samples as Algorithm 1 selects, drawn
  // uniformly from D (seeded), each with the output of a history model
  // drawn uniformly from the same window.
  enum class Mode { kBest, kRandom };
  Mode mode = Mode::kBest;
  uint64_t seed = 1;
  int64_t batch_size = 256;
  // Receives `stage` with the window epochs visited; null: none.
  ProgressSink* progress = nullptr;
  std::string stage = "mining";
};

struct MinedSet {
  TuningData data;              // T; criteria = labels (one slice per class)
  int64_t candidates = 0;       // |D|
  std::vector<int64_t> epochs;  // the history epochs visited
  std::map<int64_t, int64_t> chosen;  // epoch -> samples it supplied
  double seconds = 0;
  double ratio() const {
    return candidates ? static_cast<double>(data.size()) / candidates : 0;
  }
};

// Errors: an empty store or D, labels that do not match, a store of another
// architecture (from LoadEpoch, naming the tensor).
absl::StatusOr<MinedSet> MineHistory(const torch::nn::Sequential& model,
                                     const HistoryStore& store,
                                     const at::Tensor& inputs,
                                     const at::Tensor& labels,
                                     const MinerOptions& options);

}  // namespace posttrain

#endif  // POSTTRAIN_ROBUSTNESS_HISTORY_MINER_H_

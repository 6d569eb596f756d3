// The posttrain command as a library function, so that a user with a model
// of their own builds their own `posttrain` binary: it registers a model
// factory (how to rebuild the model from a stored spec) and calls
// PosttrainMain.
//
//   posttrain history ls|show|verify|gc STORE [EPOCH]
//   posttrain improve --store STORE --task robustness|fairness --data ...
//                     [--variant V] [--seed N] --out DIR
//   posttrain eval --model M --data ... [--attacks fgsm,bim,pgd,cw,jsma]
//                  [--protected NAME] [--json]
//   posttrain export --model M --out FILE.safetensors|FILE.pt
//   posttrain report RUN_DIR
//
// `posttrain help` and `--help` after any subcommand print its flags.
//
// Exit status: 0 success; 1 the accuracy guard kept the original model
// (improve), or a store failed verification (history verify); 2 bad usage
// or bad input, with one line on stderr naming the flag, file, epoch or
// column; 3 an internal error.
//
// Example (the body of a user's main):
//   posttrain::CliOptions options;
//   options.model_factory = [](const posttrain::pb::ModelSpec& spec) {
//     return posttrain::BuildSequential(spec);  // or the user's own
//   };
//   char arg0[] = "posttrain", arg1[] = "--help";
//   char* args[] = {arg0, arg1};
//   int code = posttrain::PosttrainMain(2, args, options);
//
// Thread safety: call once per process (the flags are process-wide).
#ifndef POSTTRAIN_TOOLS_CLI_H_
#define POSTTRAIN_TOOLS_CLI_H_

#include <functional>

#include "absl/status/statusor.h"
#include "common/model_spec.h"

namespace torch::nn {
class Sequential;
}  // namespace torch::nn

namespace posttrain {

struct CliOptions {
  // Rebuilds a model (freshly initialised) from a stored spec; the weights
  // are loaded by name afterwards. Empty: BuildSequential.
  std::function<absl::StatusOr<torch::nn::Sequential>(const pb::ModelSpec&)>
      model_factory;
};

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitGuardRejected = 1;
inline constexpr int kExitBadInput = 2;
inline constexpr int kExitInternal = 3;

int PosttrainMain(int argc, char** argv, const CliOptions& options = {});

}  // namespace posttrain

#endif  // POSTTRAIN_TOOLS_CLI_H_

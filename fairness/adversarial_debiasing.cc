#include "fairness/adversarial_debiasing.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status.h"
#include "common/torch_status.h"

namespace posttrain {

std::string AdversarialDebiasingResult::Describe(
    const AdversarialDebiasingOptions& o) const {
  return absl::StrFormat(
      "{\"method\": \"ADV\", \"adversary_weight\": %g, \"adversary_lr\": %g, "
      "\"equalized_odds\": %s, \"classifier_lr\": %g, \"batch_size\": %d, "
      "\"epochs\": %d, \"classifier_loss\": %.6f, \"adversary_loss\": %.6f}",
      o.adversary_weight, o.adversary_lr, o.equalized_odds ? "true" : "false",
      o.train.lr, o.train.batch_size, epochs, classifier_loss, adversary_loss);
}

absl::StatusOr<AdversarialDebiasingResult> TrainAdversarialDebiasing(
    torch::nn::Sequential& model, const TabularSplit& train,
    const AdversarialDebiasingOptions& options) {
  if (train.size() == 0) {
    return absl::InvalidArgumentError("ADV: the training split is empty");
  }
  if (!(options.adversary_weight >= 0) || !(options.adversary_lr > 0) ||
      !(options.train.lr > 0) || options.train.batch_size < 1) {
    return absl::InvalidArgumentError(
        "ADV: needs adversary_weight >= 0, learning rates > 0 and "
        "batch_size >= 1");
  }
  AdversarialDebiasingResult result;
  PT_RETURN_IF_ERROR(CallTorch("ADV training", [&] {
    std::vector<at::Tensor> params = model->parameters();
    torch::optim::Adam classifier_opt(
        params, torch::optim::AdamOptions(options.train.lr));
    // The adversary: s = sigmoid((1 + |c|) z); logit(A) = [s, s·y, s·(1 − y)]·w
    // + b.
    const int64_t inputs = options.equalized_odds ? 3 : 1;
    at::Tensor c = torch::ones({1}).requires_grad_(true);
    torch::nn::Linear head(torch::nn::LinearOptions(inputs, 1));
    {  // Its initial weights from the seed, not from torch's global stream.
      torch::NoGradGuard no_grad;
      auto init = at::detail::createCPUGenerator(options.train.seed + 7919);
      const double bound = 1.0 / std::sqrt(static_cast<double>(inputs));
      head->weight.uniform_(-bound, bound, init);
      head->bias.uniform_(-bound, bound, init);
    }
    std::vector<at::Tensor> adv_params = head->parameters();
    adv_params.push_back(c);
    torch::optim::Adam adversary_opt(
        adv_params, torch::optim::AdamOptions(options.adversary_lr));
    auto adversary_logit = [&](const at::Tensor& z, const at::Tensor& y) {
      const at::Tensor s = torch::sigmoid((1 + torch::abs(c)) * z).unsqueeze(1);
      if (!options.equalized_odds) return head->forward(s).squeeze(1);
      const at::Tensor yf = y.to(torch::kFloat).unsqueeze(1);
      return head->forward(torch::cat({s, s * yf, s * (1 - yf)}, 1)).squeeze(1);
    };
    auto gen = at::detail::createCPUGenerator(options.train.seed);
    const int epochs = TrainingEpochs(options.train, train.size());
    const int64_t bs = options.train.batch_size;
    for (int epoch = 0; epoch < epochs; ++epoch) {
      model->train();
      const at::Tensor order = torch::randperm(train.size(), gen);
      double cls_sum = 0, adv_sum = 0;
      for (int64_t b = 0; b < train.size(); b += bs) {
        const at::Tensor idx =
            order.narrow(0, b, std::min(bs, train.size() - b));
        const at::Tensor x = train.x.index_select(0, idx);
        const at::Tensor y = train.y.index_select(0, idx);
        const at::Tensor a = train.a.index_select(0, idx).to(torch::kFloat);
        const at::Tensor logits = model->forward(x);
        TORCH_CHECK(logits.dim() == 2 && logits.size(1) == 2,
                    "ADV needs a model with two outputs, got ", logits.sizes());
        const at::Tensor z = logits.select(1, 1) - logits.select(1, 0);
        const at::Tensor cls_loss =
            torch::nn::functional::cross_entropy(logits, y);
        const at::Tensor adv_loss =
            torch::nn::functional::binary_cross_entropy_with_logits(
                adversary_logit(z, y), a);
        std::vector<at::Tensor> g =
            torch::autograd::grad({cls_loss}, params, {}, true, false, true);
        std::vector<at::Tensor> h =
            torch::autograd::grad({adv_loss}, params, {}, true, false, true);
        // The adversary descends its own loss, from the same batch.
        std::vector<at::Tensor> ga = torch::autograd::grad(
            {adv_loss}, adv_params, {}, false, false, true);
        {
          torch::NoGradGuard no_grad;
          for (size_t i = 0; i < params.size(); ++i) {
            at::Tensor gi =
                g[i].defined() ? g[i] : torch::zeros_like(params[i]);
            if (h[i].defined()) {
              const at::Tensor unit = h[i] / (h[i].norm() + 1e-8);
              gi = gi - (gi * unit).sum() * unit -
                   options.adversary_weight * h[i];
            }
            params[i].mutable_grad() = gi;
          }
        }
        classifier_opt.step();
        {
          torch::NoGradGuard no_grad;
          for (size_t i = 0; i < adv_params.size(); ++i) {
            adv_params[i].mutable_grad() =
                ga[i].defined() ? ga[i] : torch::zeros_like(adv_params[i]);
          }
        }
        adversary_opt.step();
        cls_sum += cls_loss.item<double>() * idx.numel();
        adv_sum += adv_loss.item<double>() * idx.numel();
      }
      result.classifier_loss = cls_sum / train.size();
      result.adversary_loss = adv_sum / train.size();
    }
    result.epochs = epochs;
    for (at::Tensor& p : params) p.mutable_grad() = at::Tensor();
  }));
  return result;
}

}  // namespace posttrain

#include "tuner/task.h"

#include <utility>

namespace posttrain {

GuardSpec AccuracyGuard(LabelledData data) {
  GuardSpec g;
  g.metric = "accuracy";
  g.data = data;
  g.evaluate = AccuracyOn(std::move(data));
  return g;
}

SlicingPlan ClassSlicingPlan(const LabelledData& data, int64_t classes) {
  SlicingPlan plan;
  plan.inputs = data.inputs;
  plan.criteria = data.labels;
  for (int64_t c = 0; c < classes; ++c) plan.outputs.push_back(c);
  return plan;
}

}  // namespace posttrain

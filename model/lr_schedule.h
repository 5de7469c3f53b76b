// Learning-rate schedules as functions of the global step.
#ifndef FEDGE_MODEL_LR_SCHEDULE_H_
#define FEDGE_MODEL_LR_SCHEDULE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace fedge::model {

// Linear warm-up from peak/warmup to `peak` over `warmup_steps`, then cosine decay to zero
// at `total_steps`.
class WarmupCosineSchedule {
 public:
  WarmupCosineSchedule(float peak, int64_t warmup_steps, int64_t total_steps)
      : peak_(peak),
        warmup_(std::max<int64_t>(0, warmup_steps)),
        total_(std::max<int64_t>(total_steps, warmup_ + 1)) {}

  float operator()(int64_t step) const {
    if (step < warmup_) return peak_ * static_cast<float>(step + 1) / static_cast<float>(warmup_);
    const double t = std::min(1.0, static_cast<double>(step - warmup_) / (total_ - warmup_));
    return static_cast<float>(0.5 * peak_ * (1.0 + std::cos(M_PI * t)));
  }

 private:
  float peak_;
  int64_t warmup_;
  int64_t total_;
};

}  // namespace fedge::model

#endif  // FEDGE_MODEL_LR_SCHEDULE_H_

#include "model/optimizer.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace fedge::model {
namespace {

bool FiniteNonNegative(float v) { return std::isfinite(v) && v >= 0.0f; }

}  // namespace

absl::StatusOr<std::unique_ptr<Sgd>> Sgd::Create(const SgdOptions& o) {
  if (!FiniteNonNegative(o.learning_rate) || !FiniteNonNegative(o.weight_decay) ||
      !(o.momentum >= 0.0f && o.momentum < 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Sgd: need learning_rate ≥ 0, weight_decay ≥ 0, momentum in [0, 1); got lr=",
        o.learning_rate, " wd=", o.weight_decay, " momentum=", o.momentum));
  }
  if (o.nesterov && o.momentum == 0.0f) {
    return absl::InvalidArgumentError("Sgd: nesterov needs momentum > 0");
  }
  return std::unique_ptr<Sgd>(new Sgd(o));
}

void Sgd::Step(const std::vector<Parameter*>& params) {
  const float mu = options_.momentum, wd = options_.weight_decay, lr = lr_;
  if (mu != 0.0f && velocity_.size() != params.size()) {
    velocity_.assign(params.size(), {});
    for (size_t i = 0; i < params.size(); ++i) velocity_[i].assign(params[i]->size(), 0.0f);
  }
  for (size_t i = 0; i < params.size(); ++i) {
    Parameter& p = *params[i];
    if (!p.trainable) continue;
    float* w = p.value.data();
    const float* g = p.grad.data();
    const int64_t n = p.size();
    if (mu == 0.0f) {
      for (int64_t j = 0; j < n; ++j) w[j] -= lr * (g[j] + wd * w[j]);
    } else {
      FEDGE_CHECK(static_cast<int64_t>(velocity_[i].size()) == n);
      float* v = velocity_[i].data();
      for (int64_t j = 0; j < n; ++j) {
        const float d = g[j] + wd * w[j];
        v[j] = mu * v[j] + d;
        w[j] -= lr * (options_.nesterov ? d + mu * v[j] : v[j]);
      }
    }
    ++p.version;
  }
}

absl::StatusOr<std::unique_ptr<Adam>> Adam::Create(const AdamOptions& o) {
  if (!FiniteNonNegative(o.learning_rate) || !FiniteNonNegative(o.weight_decay) ||
      !(o.beta1 >= 0.0f && o.beta1 < 1.0f) || !(o.beta2 >= 0.0f && o.beta2 < 1.0f) ||
      !(o.epsilon > 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Adam: need learning_rate ≥ 0, betas in [0, 1), epsilon > 0; got lr=",
                     o.learning_rate, " betas=(", o.beta1, ", ", o.beta2, ") eps=", o.epsilon));
  }
  return std::unique_ptr<Adam>(new Adam(o));
}

void Adam::Reset() { state_ = State(); }

absl::Status Adam::RestoreState(State state) {
  bool same_shape = state.m.size() == state.v.size();
  for (size_t i = 0; same_shape && i < state.m.size(); ++i) {
    same_shape = state.m[i].size() == state.v[i].size();
  }
  if (state.step < 0 || !same_shape || (state.step == 0) != state.m.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Adam: a state needs step ≥ 0, moments m and v of one shape, and moments exactly when "
        "step > 0; got step ", state.step, ", ", state.m.size(), " and ", state.v.size(),
        " moment tensors"));
  }
  state_ = std::move(state);
  return absl::OkStatus();
}

void Adam::Step(const std::vector<Parameter*>& params) {
  std::vector<std::vector<float>>& ms = state_.m;
  std::vector<std::vector<float>>& vs = state_.v;
  if (ms.size() != params.size()) {  // first step (or other parameters): start afresh
    state_.step = 0;
    ms.assign(params.size(), {});
    vs.assign(params.size(), {});
    for (size_t i = 0; i < params.size(); ++i) {
      ms[i].assign(params[i]->size(), 0.0f);
      vs[i].assign(params[i]->size(), 0.0f);
    }
  }
  const int64_t step = ++state_.step;
  const float b1 = options_.beta1, b2 = options_.beta2, wd = options_.weight_decay;
  const float bc1 = 1.0f - static_cast<float>(std::pow(b1, static_cast<double>(step)));
  const float bc2 = 1.0f - static_cast<float>(std::pow(b2, static_cast<double>(step)));
  const float step_size = lr_ / bc1;
  const float invssqrt_bc2 = 1.0f / std::sqrt(bc2);
  for (size_t i = 0; i < params.size(); ++i) {
    Parameter& p = *params[i];
    FEDGE_CHECK(static_cast<int64_t>(ms[i].size()) == p.size());
    if (!p.trainable) continue;
    float* w = p.value.data();
    const float* g = p.grad.data();
    float* m = ms[i].data();
    float* v = vs[i].data();
    for (int64_t j = 0; j < p.size(); ++j) {
      const float d = g[j] + wd * w[j];
      m[j] = b1 * m[j] + (1.0f - b1) * d;
      v[j] = b2 * v[j] + (1.0f - b2) * d * d;
      w[j] -= step_size * m[j] / (std::sqrt(v[j]) * invssqrt_bc2 + options_.epsilon);
    }
    ++p.version;
  }
}

}  // namespace fedge::model

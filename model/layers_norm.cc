// Normalization layers: BatchNorm2d, and HeteroFL's Scaler.
#include "model/layers.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "base/status_macros.h"

namespace fedge::model {

// ---------------------------------------------------------------------------------------
// BatchNorm2d

BatchNorm2d::BatchNorm2d(std::string name, std::vector<int> shape, float momentum,
                         float epsilon)
    : Layer(name, shape, shape),
      c_(shape.back()),
      momentum_(momentum),
      eps_(epsilon),
      weight_(MakeParameter(name + ".weight", {shape.back()})),
      bias_(MakeParameter(name + ".bias", {shape.back()})),
      running_mean_(MakeParameter(name + ".running_mean", {shape.back()})),
      running_var_(MakeParameter(name + ".running_var", {shape.back()})) {
  std::fill(weight_.value.begin(), weight_.value.end(), 1.0f);
  std::fill(running_var_.value.begin(), running_var_.value.end(), 1.0f);
  running_mean_.trainable = false;
  running_var_.trainable = false;
}

void BatchNorm2d::Forward(const float* x, int batch, float* y, ComputeMode mode,
                          bool training) {
  (void)mode;
  const int c = c_;
  const int64_t m = static_cast<int64_t>(batch) * (input_size() / c);  // values per channel
  const float* g = weight_.value.data();
  const float* beta = bias_.value.data();
  last_training_ = training;
  if (!training) {
    std::vector<float>& scale = scale_;
    std::vector<float>& shift = shift_;
    scale.resize(c);
    shift.resize(c);
    for (int j = 0; j < c; ++j) {
      // max(·, 0): a running variance rebuilt from a quantized update may dip below zero.
      scale[j] = g[j] / std::sqrt(std::max(running_var_.value[j], 0.0f) + eps_);
      shift[j] = beta[j] - running_mean_.value[j] * scale[j];
    }
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * c;
      float* yr = y + r * c;
      for (int j = 0; j < c; ++j) yr[j] = xr[j] * scale[j] + shift[j];
    }
    return;
  }
  std::vector<double>& sum = sum_;
  std::vector<double>& sq = sq_;
  std::vector<float>& mean = mean_;
  sum.assign(c, 0.0);
  sq.assign(c, 0.0);
  mean.resize(c);
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * c;
    for (int j = 0; j < c; ++j) sum[j] += xr[j];
  }
  for (int j = 0; j < c; ++j) mean[j] = static_cast<float>(sum[j] / static_cast<double>(m));
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * c;
    for (int j = 0; j < c; ++j) {
      const double d = static_cast<double>(xr[j]) - mean[j];
      sq[j] += d * d;
    }
  }
  invstd_.resize(c);
  for (int j = 0; j < c; ++j) {
    const double var = sq[j] / static_cast<double>(m);
    invstd_[j] = static_cast<float>(1.0 / std::sqrt(var + eps_));
    const double unbiased = m > 1 ? sq[j] / static_cast<double>(m - 1) : var;
    running_mean_.value[j] = (1.0f - momentum_) * running_mean_.value[j] + momentum_ * mean[j];
    running_var_.value[j] = static_cast<float>((1.0 - momentum_) * running_var_.value[j] +
                                               momentum_ * unbiased);
  }
  ++running_mean_.version;
  ++running_var_.version;
  xhat_.resize(static_cast<size_t>(m) * c);
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * c;
    float* hr = xhat_.data() + r * c;
    float* yr = y + r * c;
    for (int j = 0; j < c; ++j) {
      hr[j] = (xr[j] - mean[j]) * invstd_[j];
      yr[j] = g[j] * hr[j] + beta[j];
    }
  }
}

void BatchNorm2d::Backward(const float* x, const float* y, const float* dy, int batch,
                           float* dx) {
  (void)x;
  (void)y;
  FEDGE_CHECK(last_training_);
  const int c = c_;
  const int64_t m = static_cast<int64_t>(batch) * (input_size() / c);
  FEDGE_CHECK(xhat_.size() == static_cast<size_t>(m) * c);  // the training forward's batch
  std::vector<double>& sum_dy = sum_;
  std::vector<double>& sum_dy_xhat = sq_;
  sum_dy.assign(c, 0.0);
  sum_dy_xhat.assign(c, 0.0);
  for (int64_t r = 0; r < m; ++r) {
    const float* dr = dy + r * c;
    const float* hr = xhat_.data() + r * c;
    for (int j = 0; j < c; ++j) {
      sum_dy[j] += dr[j];
      sum_dy_xhat[j] += static_cast<double>(dr[j]) * hr[j];
    }
  }
  for (int j = 0; j < c; ++j) {
    bias_.grad[j] += static_cast<float>(sum_dy[j]);
    weight_.grad[j] += static_cast<float>(sum_dy_xhat[j]);
  }
  if (dx == nullptr) return;
  // dx = γ/(σ·m) · (m·dy − Σdy − x̂·Σ(dy·x̂))
  std::vector<float>& k = scale_;
  std::vector<float>& mean_dy = shift_;
  std::vector<float>& mean_dy_xhat = mean_;
  k.resize(c);
  mean_dy.resize(c);
  mean_dy_xhat.resize(c);
  for (int j = 0; j < c; ++j) {
    k[j] = weight_.value[j] * invstd_[j];
    mean_dy[j] = static_cast<float>(sum_dy[j] / static_cast<double>(m));
    mean_dy_xhat[j] = static_cast<float>(sum_dy_xhat[j] / static_cast<double>(m));
  }
  for (int64_t r = 0; r < m; ++r) {
    const float* dr = dy + r * c;
    const float* hr = xhat_.data() + r * c;
    float* out = dx + r * c;
    for (int j = 0; j < c; ++j) out[j] = k[j] * (dr[j] - mean_dy[j] - hr[j] * mean_dy_xhat[j]);
  }
}

std::vector<Parameter*> BatchNorm2d::parameters() {
  return {&weight_, &bias_, &running_mean_, &running_var_};
}

// ---------------------------------------------------------------------------------------
// Scaler

Scaler::Scaler(std::string name, std::vector<int> shape, float rate)
    : Layer(std::move(name), shape, shape), inv_rate_(1.0f / rate) {}

void Scaler::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  const size_t n = static_cast<size_t>(batch) * input_size();
  for (size_t i = 0; i < n; ++i) y[i] = x[i] * inv_rate_;
}

void Scaler::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  if (dx == nullptr) return;
  const size_t n = static_cast<size_t>(batch) * input_size();
  for (size_t i = 0; i < n; ++i) dx[i] = dy[i] * inv_rate_;
}

}  // namespace fedge::model

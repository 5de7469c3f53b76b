// Dense and the product it shares with Conv2d (LinearProduct): fp32, int8 and int4.
#include "model/layers.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "base/rng.h"
#include "base/status_macros.h"
#include "kernels/bias.h"
#include "kernels/q4.h"
#include "kernels/qgemm.h"
#include "kernels/quantize.h"
#include "kernels/sgemm.h"

namespace fedge::model {

using kernels::Trans;

// ---------------------------------------------------------------------------------------
// LinearProduct

LinearProduct::LinearProduct(const std::string& layer_name, std::vector<int> weight_shape,
                             int in, int out, bool has_bias)
    : in_(in),
      out_(out),
      has_bias_(has_bias),
      weight_(MakeParameter(layer_name + ".weight", std::move(weight_shape))),
      bias_(has_bias ? MakeParameter(layer_name + ".bias", {out}) : Parameter{}) {
  FEDGE_CHECK(weight_.size() == static_cast<int64_t>(in) * out);
}

void LinearProduct::Forward(const float* a, int rows, float* y, ComputeMode mode,
                            bool training) {
  const float* bias = has_bias_ ? bias_.value.data() : nullptr;
  last_forward_int8_ = false;
  switch (mode) {
    case ComputeMode::kFp32: {
      kernels::Sgemm(Trans::kNo, Trans::kYes, rows, out_, in_, 1.0f, a, in_,
                     weight_.value.data(), in_, 0.0f, y, out_);
      if (bias != nullptr) kernels::BiasAdd(y, rows, out_, bias);
      return;
    }
    case ComputeMode::kInt8: {
      const kernels::PackedWeightsS8& w8 = Int8Weights(training);
      kernels::QuantizeActivations(a, rows, in_, in_, &qa_);
      kernels::QGemmS8(qa_, w8, kernels::Epilogue{bias, false}, y, out_);
      if (training) {
        last_forward_int8_ = true;  // Backward uses qa_ and the int8 weights
      }
      return;
    }
    case ComputeMode::kInt4: {
      kernels::QuantizeActivations(a, rows, in_, in_, &qa_);
      kernels::QGemmQ4(qa_, Int4Weights(), kernels::Epilogue{bias, false}, y, out_);
      return;
    }
  }
}

const kernels::PackedWeightsQ4& LinearProduct::Int4Weights() {
  // Inference only: cached until the weights change.
  if (w4_version_ != weight_.version) {
    kernels::QuantizeWeightsQ4(weight_.value.data(), out_, in_, in_, &w4_);
    w4_version_ = weight_.version;
  }
  return w4_;
}

const kernels::PackedWeightsS8& LinearProduct::Int8Weights(bool training) {
  if (w8_version_ != weight_.version || training) {
    if (training) w_fq_.resize(weight_.value.size());
    kernels::QuantizeWeightsS8(weight_.value.data(), out_, in_, in_, &w8_,
                               training ? w_fq_.data() : nullptr, in_);
    w8_version_ = weight_.version;
  }
  return w8_;
}

const float* LinearProduct::BackwardWeights() const {
  return last_forward_int8_ ? w_fq_.data() : weight_.value.data();
}

void LinearProduct::AccumulateGradients(const float* a, const float* dy, int rows) {
  // dW[out × in] += dyᵀ · a
  kernels::Sgemm(Trans::kYes, Trans::kNo, out_, in_, rows, 1.0f, dy, out_, a, in_, 1.0f,
                 weight_.grad.data(), in_);
  if (has_bias_) kernels::BiasAddGrad(dy, rows, out_, bias_.grad.data());
}

void LinearProduct::AccumulateGradientsInt8(const float* dy, int rows) {
  dy_t_.resize(static_cast<size_t>(out_) * rows);
  for (int r = 0; r < rows; ++r) {
    const float* d = dy + static_cast<size_t>(r) * out_;
    for (int o = 0; o < out_; ++o) dy_t_[static_cast<size_t>(o) * rows + r] = d[o];
  }
  kernels::QuantizeActivations(dy_t_.data(), out_, rows, rows, &qdy_t_);
  kernels::PackTransposedActivationsS8(qa_, qa_.scale, &qa_t_);
  dw_.resize(static_cast<size_t>(out_) * in_);
  kernels::QGemmS8(qdy_t_, qa_t_, kernels::Epilogue{}, dw_.data(), in_);
  float* __restrict g = weight_.grad.data();
  const float* __restrict d = dw_.data();
  for (size_t i = 0; i < dw_.size(); ++i) g[i] += d[i];
  if (has_bias_) kernels::BiasAddGrad(dy, rows, out_, bias_.grad.data());
}

void LinearProduct::Backward(const float* a, const float* dy, int rows, float* da) {
  const float* w_used = BackwardWeights();
  if (last_forward_int8_) {
    AccumulateGradientsInt8(dy, rows);
  } else {
    AccumulateGradients(a, dy, rows);
  }
  if (da != nullptr) {
    // da[rows × in] = dy · W
    kernels::Sgemm(Trans::kNo, Trans::kNo, rows, in_, out_, 1.0f, dy, out_, w_used, in_, 0.0f,
                   da, in_);
  }
}

// ---------------------------------------------------------------------------------------
// Dense

Dense::Dense(std::string name, int in_features, int out_features, bool has_bias,
             bool spectral_norm)
    : Layer(name, {in_features}, {out_features}),
      product_(name, {out_features, in_features}, in_features, out_features, has_bias),
      spectral_norm_(spectral_norm) {
  if (spectral_norm_) weight_ = MakeParameter(name + ".weight", {out_features, in_features});
}

namespace {
// dst = src / ‖src‖ (a zero vector stays zero).
void NormalizeInto(const std::vector<double>& src, std::vector<float>& dst) {
  double norm = 0;
  for (double a : src) norm += a * a;
  norm = std::max(std::sqrt(norm), 1e-12);
  for (size_t i = 0; i < src.size(); ++i) dst[i] = static_cast<float>(src[i] / norm);
}
}  // namespace

// wv_ = W·v (double sums, so that the same on every ISA).
void Dense::MultiplyV() {
  const int out = product_.out(), in = product_.in();
  const float* w = weight_.value.data();
  for (int o = 0; o < out; ++o) {
    const float* row = w + static_cast<size_t>(o) * in;
    double s = 0;
    for (int i = 0; i < in; ++i) s += static_cast<double>(row[i]) * v_[i];
    wv_[o] = s;
  }
}

// One power-iteration step on W: v ← Wᵀu/‖Wᵀu‖, u ← Wv/‖Wv‖; leaves wv_ = W·v.
void Dense::PowerStep() {
  const int out = product_.out(), in = product_.in();
  const float* w = weight_.value.data();
  std::fill(wtu_.begin(), wtu_.end(), 0.0);
  for (int o = 0; o < out; ++o) {
    const double uo = u_[o];
    const float* row = w + static_cast<size_t>(o) * in;
    for (int i = 0; i < in; ++i) wtu_[i] += uo * row[i];
  }
  NormalizeInto(wtu_, v_);
  MultiplyV();
  NormalizeInto(wv_, u_);
}

// Writes W̄ = W / σ into the product's weight, σ = uᵀWv; in training after one power step.
void Dense::NormalizeWeight(bool training) {
  const int out = product_.out(), in = product_.in();
  if (u_.empty()) {
    u_.resize(out);
    v_.resize(in);
    wv_.resize(out);
    wtu_.resize(in);
    base::Rng rng(base::Fnv1a(name()));
    std::vector<double> start(out);
    for (double& x : start) x = static_cast<float>(rng.Normal());
    NormalizeInto(start, u_);
    for (int i = 0; i < 15; ++i) PowerStep();
  } else if (training) {
    PowerStep();
  } else {
    MultiplyV();
  }
  double sigma = 0;
  for (int o = 0; o < out; ++o) sigma += wv_[o] * u_[o];
  // σ is ≥ 0 up to rounding after a power step; a degenerate W (all zeros) keeps W̄ = W.
  sigma_ = sigma > 1e-12 ? static_cast<float>(sigma) : 1.0f;
  const float inv = 1.0f / sigma_;
  const float* w = weight_.value.data();
  Parameter& wbar = product_.weight();
  for (size_t i = 0; i < wbar.value.size(); ++i) wbar.value[i] = w[i] * inv;
  ++wbar.version;
}

void Dense::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  if (spectral_norm_) NormalizeWeight(training);
  product_.Forward(x, batch, y, mode, training);
}

void Dense::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  if (!spectral_norm_) {
    product_.Backward(x, dy, batch, dx);
    return;
  }
  std::vector<float>& g = product_.weight().grad;  // dL/dW̄ of this call only
  std::fill(g.begin(), g.end(), 0.0f);
  product_.Backward(x, dy, batch, dx);
  const std::vector<float>& wbar = product_.weight().value;
  double dot = 0;
  for (size_t i = 0; i < g.size(); ++i) dot += static_cast<double>(g[i]) * wbar[i];
  const int out = product_.out(), in = product_.in();
  const float inv = 1.0f / sigma_;
  const float c = static_cast<float>(dot);
  for (int o = 0; o < out; ++o) {
    const float cu = c * u_[o];
    const float* go = g.data() + static_cast<size_t>(o) * in;
    float* dw = weight_.grad.data() + static_cast<size_t>(o) * in;
    for (int i = 0; i < in; ++i) dw[i] += (go[i] - cu * v_[i]) * inv;
  }
}

std::vector<Parameter*> Dense::parameters() {
  Parameter* w = spectral_norm_ ? &weight_ : &product_.weight();
  if (product_.has_bias()) return {w, &product_.bias()};
  return {w};
}

}  // namespace fedge::model

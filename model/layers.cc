#include "model/layers.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "base/rng.h"
#include "base/status_macros.h"
#include "kernels/activation.h"
#include "kernels/bias.h"
#include "kernels/conv.h"
#include "kernels/pool.h"
#include "kernels/qgemm.h"
#include "kernels/sgemm.h"

namespace fedge::model {
namespace {

using kernels::Trans;

int Product(const std::vector<int>& shape) {
  int64_t n = 1;
  for (int d : shape) n *= d;
  return static_cast<int>(n);
}

Parameter MakeParameter(std::string name, std::vector<int> shape) {
  Parameter p;
  p.name = std::move(name);
  p.shape = std::move(shape);
  p.value.assign(Product(p.shape), 0.0f);
  p.grad.assign(p.value.size(), 0.0f);
  return p;
}

}  // namespace

absl::string_view ComputeModeName(ComputeMode mode) {
  switch (mode) {
    case ComputeMode::kFp32:
      return "fp32";
    case ComputeMode::kInt8:
      return "int8";
    case ComputeMode::kInt4:
      return "int4";
  }
  return "unknown";
}

Layer::Layer(std::string name, std::vector<int> input_shape, std::vector<int> output_shape)
    : name_(std::move(name)),
      input_shape_(std::move(input_shape)),
      output_shape_(std::move(output_shape)),
      input_size_(Product(input_shape_)),
      output_size_(Product(output_shape_)) {}

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
        last_forward_int8_ = true;
        a_fq_.resize(static_cast<size_t>(rows) * in_);
        kernels::DequantizeActivations(qa_, a_fq_.data(), in_);
      }
      return;
    }
    case ComputeMode::kInt4: {
      // Inference only: int4 weights are cached until the weights change.
      if (w4_version_ != weight_.version) {
        kernels::QuantizeWeightsQ4(weight_.value.data(), out_, in_, in_, &w4_);
        w4_version_ = weight_.version;
      }
      kernels::QuantizeActivations(a, rows, in_, in_, &qa_);
      kernels::QGemmQ4(qa_, w4_, kernels::Epilogue{bias, false}, y, out_);
      return;
    }
  }
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

void LinearProduct::Backward(const float* a, const float* dy, int rows, float* da) {
  const float* a_used = last_forward_int8_ ? a_fq_.data() : a;
  const float* w_used = BackwardWeights();
  AccumulateGradients(a_used, dy, rows);
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

// ---------------------------------------------------------------------------------------
// Conv2d

Conv2d::Conv2d(std::string name, int height, int width, int in_channels, int out_channels,
               int kernel, int stride, int padding, bool has_bias)
    : Layer(name, {height, width, in_channels},
            {kernels::ConvOutputSize(height, kernel, stride, padding),
             kernels::ConvOutputSize(width, kernel, stride, padding), out_channels}),
      h_(height),
      w_(width),
      cin_(in_channels),
      cout_(out_channels),
      k_(kernel),
      stride_(stride),
      pad_(padding),
      oh_(kernels::ConvOutputSize(height, kernel, stride, padding)),
      ow_(kernels::ConvOutputSize(width, kernel, stride, padding)),
      kpad_((kernel * kernel * in_channels + 15) / 16 * 16),
      geometry_{height, width, in_channels, kernel, stride, padding, oh_, ow_},
      product_(name, {out_channels, kernel, kernel, in_channels},
               kernel * kernel * in_channels, out_channels, has_bias) {}

int Conv2d::ChunkExamples() const {
  // About 256 KiB of fp32 im2col rows per chunk: resident in L2 while the GEMMs run.
  constexpr int64_t kChunkFloats = 64 * 1024;
  const int64_t per_example = static_cast<int64_t>(oh_) * ow_ * kpad_;
  return static_cast<int>(std::max<int64_t>(1, kChunkFloats / per_example));
}

void Conv2d::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  const int chunk = std::min(batch, ChunkExamples());
  const int rows_per_example = oh_ * ow_;
  const int kdim = product_.in();
  const int in_size = input_size(), out_size = output_size();
  product_.set_backward_int8(false);
  if (mode == ComputeMode::kFp32) {
    // One chunk's im2col rows at a time, consumed while in cache; the backward pass
    // rebuilds them (measured: faster than keeping the whole batch's for it).
    cols_.resize(static_cast<size_t>(chunk) * rows_per_example * kpad_);
    const float* w = product_.weight().value.data();
    const bool has_bias = product_.has_bias();
    const float* bias = product_.bias().value.data();
    for (int b0 = 0; b0 < batch; b0 += chunk) {
      const int nb = std::min(chunk, batch - b0);
      const int rows = nb * rows_per_example;
      const float* cols = cols_.data();
      float* yc = y + static_cast<size_t>(b0) * out_size;
      kernels::Im2Col(geometry_, x + static_cast<size_t>(b0) * in_size, nb, in_size,
                      cols_.data(), kpad_);
      if (cout_ >= 32) {
        kernels::Sgemm(Trans::kNo, Trans::kYes, rows, cout_, kdim, 1.0f, cols, kpad_, w, kdim,
                       0.0f, yc, cout_);
        if (has_bias) kernels::BiasAdd(yc, rows, cout_, bias);
        continue;
      }
      // Few output channels: Eigen vectorizes along the first dimension of its
      // column-major result, so compute yᵀ [Cout × rows] = W · colsᵀ (rows along the
      // vectors) and transpose it into NHWC with the bias.
      yt_.resize(static_cast<size_t>(cout_) * rows);
      kernels::Sgemm(Trans::kNo, Trans::kYes, cout_, rows, kdim, 1.0f, w, kdim, cols, kpad_,
                     0.0f, yt_.data(), rows);
      kernels::BiasAddTransposed(yt_.data(), rows, cout_, has_bias ? bias : nullptr, yc);
    }
    return;
  }
  if (mode == ComputeMode::kInt4) {
    // Inference only; int4 is not on the training path, so keep it simple.
    cols_.resize(static_cast<size_t>(batch) * rows_per_example * kdim);
    kernels::Im2Col(geometry_, x, batch, in_size, cols_.data(), kdim);
    product_.Forward(cols_.data(), batch * rows_per_example, y, mode, false);
    return;
  }
  // int8: quantize the input once (im2col only copies its values, so the per-tensor scale
  // of the im2col matrix is the input's), then im2col the int8 values chunk by chunk.
  const kernels::PackedWeightsS8& w8 = product_.Int8Weights(training);
  kernels::QuantizeActivations(x, batch, in_size, in_size, &qx_);
  if (training) {
    product_.set_backward_int8(true);
    x_fq_.resize(static_cast<size_t>(batch) * in_size);
    kernels::DequantizeActivations(qx_, x_fq_.data(), in_size);
  }
  const float* bias = product_.has_bias() ? product_.bias().value.data() : nullptr;
  qcols_.k = kdim;
  qcols_.k_padded = kernels::PadK(kdim);
  qcols_.scale = qx_.scale;
  for (int b0 = 0; b0 < batch; b0 += chunk) {
    const int nb = std::min(chunk, batch - b0);
    qcols_.m = nb * rows_per_example;
    // The K padding may hold spilled values (kernels/conv.h); the packed weights are zero
    // there, so they add nothing.
    qcols_.data.resize(std::max(qcols_.data.size(),
                                static_cast<size_t>(qcols_.m) * qcols_.k_padded));
    kernels::Im2Col(geometry_, qx_.row(b0), nb, qx_.k_padded, qcols_.data.data(),
                    qcols_.k_padded);
    kernels::QGemmS8(qcols_, w8, kernels::Epilogue{bias, false},
                     y + static_cast<size_t>(b0) * out_size, cout_);
  }
}

void Conv2d::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  // Straight-through estimator in int8: the fp32 backward at the fake-quantized operands.
  const float* xin = product_.backward_int8() ? x_fq_.data() : x;
  const float* w = product_.BackwardWeights();
  const int chunk = std::min(batch, ChunkExamples());
  const int rows_per_example = oh_ * ow_;
  const int kdim = product_.in();
  const int in_size = input_size(), out_size = output_size();
  const size_t chunk_floats = static_cast<size_t>(chunk) * rows_per_example * kpad_;
  cols_.resize(chunk_floats);
  if (dx != nullptr) dcols_.resize(chunk_floats);
  // dW over the padded K (Eigen runs much faster on a multiple of 16 there); the padding
  // columns, computed from scratch values, are dropped when adding into the gradient.
  dw_pad_.assign(static_cast<size_t>(cout_) * kpad_, 0.0f);
  for (int b0 = 0; b0 < batch; b0 += chunk) {
    const int nb = std::min(chunk, batch - b0);
    const int rows = nb * rows_per_example;
    const float* dyc = dy + static_cast<size_t>(b0) * out_size;
    kernels::Im2Col(geometry_, xin + static_cast<size_t>(b0) * in_size, nb, in_size,
                    cols_.data(), kpad_);
    kernels::Sgemm(Trans::kYes, Trans::kNo, cout_, kpad_, rows, 1.0f, dyc, cout_, cols_.data(),
                   kpad_, 1.0f, dw_pad_.data(), kpad_);
    if (product_.has_bias()) {
      kernels::BiasAddGrad(dyc, rows, cout_, product_.bias().grad.data());
    }
    if (dx != nullptr) {
      // dcols[rows × K] = dy · W
      kernels::Sgemm(Trans::kNo, Trans::kNo, rows, kdim, cout_, 1.0f, dyc, cout_, w, kdim,
                     0.0f, dcols_.data(), kpad_);
      kernels::Col2Im(geometry_, dcols_.data(), nb, kpad_,
                      dx + static_cast<size_t>(b0) * in_size);
    }
  }
  float* grad = product_.weight().grad.data();
  for (int c = 0; c < cout_; ++c) {
    for (int k = 0; k < kdim; ++k) grad[c * kdim + k] += dw_pad_[static_cast<size_t>(c) * kpad_ + k];
  }
}

std::vector<Parameter*> Conv2d::parameters() {
  if (!product_.has_bias()) return {&product_.weight()};
  return {&product_.weight(), &product_.bias()};
}

// ---------------------------------------------------------------------------------------
// MaxPool2d

MaxPool2d::MaxPool2d(std::string name, int height, int width, int channels, int kernel,
                     int stride)
    : Layer(std::move(name), {height, width, channels},
            {(height - kernel) / stride + 1, (width - kernel) / stride + 1, channels}),
      h_(height),
      w_(width),
      c_(channels),
      k_(kernel),
      stride_(stride),
      oh_((height - kernel) / stride + 1),
      ow_((width - kernel) / stride + 1) {}

void MaxPool2d::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  kernels::MaxPoolForward(Geometry(), x, batch, y);
}

void MaxPool2d::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  if (dx == nullptr) return;
  kernels::MaxPoolBackward(Geometry(), x, y, dy, batch, dx);
}

// ---------------------------------------------------------------------------------------
// AvgPool2d, Sigmoid, LeakyRelu

AvgPool2d::AvgPool2d(std::string name, int height, int width, int channels, int kernel,
                     int stride)
    : Layer(std::move(name), {height, width, channels},
            {(height - kernel) / stride + 1, (width - kernel) / stride + 1, channels}),
      h_(height),
      w_(width),
      c_(channels),
      k_(kernel),
      stride_(stride),
      oh_((height - kernel) / stride + 1),
      ow_((width - kernel) / stride + 1) {}

void AvgPool2d::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  kernels::AvgPoolForward(Geometry(), x, batch, y);
}

void AvgPool2d::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  if (dx == nullptr) return;
  kernels::AvgPoolBackward(Geometry(), dy, batch, dx);
}

Sigmoid::Sigmoid(std::string name, std::vector<int> shape)
    : Layer(std::move(name), shape, shape) {}

void Sigmoid::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  kernels::Sigmoid(x, static_cast<int64_t>(batch) * input_size(), y);
}

void Sigmoid::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  if (dx == nullptr) return;
  kernels::SigmoidBackward(y, dy, static_cast<int64_t>(batch) * input_size(), dx);
}

LeakyRelu::LeakyRelu(std::string name, std::vector<int> shape, float negative_slope)
    : Layer(std::move(name), shape, shape), slope_(negative_slope) {}

void LeakyRelu::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  kernels::LeakyRelu(x, static_cast<int64_t>(batch) * input_size(), slope_, y);
}

void LeakyRelu::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  if (dx == nullptr) return;
  kernels::LeakyReluBackward(x, dy, static_cast<int64_t>(batch) * input_size(), slope_, dx);
}

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

// ---------------------------------------------------------------------------------------
// Relu, Flatten

Relu::Relu(std::string name, std::vector<int> shape) : Layer(std::move(name), shape, shape) {}

void Relu::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  kernels::Relu(x, static_cast<int64_t>(batch) * input_size(), y);
}

void Relu::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  if (dx != nullptr) kernels::ReluBackward(y, dy, static_cast<int64_t>(batch) * input_size(), dx);
}

Flatten::Flatten(std::string name, std::vector<int> shape)
    : Layer(std::move(name), shape, {Product(shape)}) {}

void Flatten::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  std::memcpy(y, x, sizeof(float) * static_cast<size_t>(batch) * input_size());
}

void Flatten::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  if (dx != nullptr) {
    std::memcpy(dx, dy, sizeof(float) * static_cast<size_t>(batch) * input_size());
  }
}

// ---------------------------------------------------------------------------------------
// Embedding

Embedding::Embedding(std::string name, int count, int num_embeddings, int dim)
    : Layer(name, {count}, {count, dim}),
      count_(count),
      num_(num_embeddings),
      dim_(dim),
      weight_(MakeParameter(name + ".weight", {num_embeddings, dim})) {}

void Embedding::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  for (int i = 0; i < batch * count_; ++i) {
    const int id = static_cast<int>(x[i]);
    FEDGE_CHECK(id >= 0 && id < num_);
    std::memcpy(y + static_cast<size_t>(i) * dim_,
                weight_.value.data() + static_cast<size_t>(id) * dim_, sizeof(float) * dim_);
  }
}

void Embedding::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  for (int i = 0; i < batch * count_; ++i) {
    const int id = static_cast<int>(x[i]);
    float* g = weight_.grad.data() + static_cast<size_t>(id) * dim_;
    const float* d = dy + static_cast<size_t>(i) * dim_;
    for (int j = 0; j < dim_; ++j) g[j] += d[j];
  }
  if (dx != nullptr) std::fill(dx, dx + static_cast<size_t>(batch) * count_, 0.0f);
}

// ---------------------------------------------------------------------------------------
// ConvTranspose2d

ConvTranspose2d::ConvTranspose2d(std::string name, int height, int width, int in_channels,
                                 int out_channels, int kernel, int stride, int padding,
                                 bool has_bias)
    : Layer(name, {height, width, in_channels},
            {(height - 1) * stride - 2 * padding + kernel,
             (width - 1) * stride - 2 * padding + kernel, out_channels}),
      h_(height),
      w_(width),
      cin_(in_channels),
      cout_(out_channels),
      k_(kernel),
      stride_(stride),
      pad_(padding),
      oh_((height - 1) * stride - 2 * padding + kernel),
      ow_((width - 1) * stride - 2 * padding + kernel),
      // The convolution this one transposes: input [OH, OW, Cout], output [H, W].
      conv_{(height - 1) * stride - 2 * padding + kernel,
            (width - 1) * stride - 2 * padding + kernel,
            out_channels,
            kernel,
            stride,
            padding,
            height,
            width},
      has_bias_(has_bias),
      weight_(MakeParameter(name + ".weight", {in_channels, kernel, kernel, out_channels})),
      bias_(has_bias ? MakeParameter(name + ".bias", {out_channels}) : Parameter{}) {}

void ConvTranspose2d::Forward(const float* x, int batch, float* y, ComputeMode mode,
                              bool training) {
  (void)mode;
  (void)training;
  const int rows = batch * h_ * w_, kkc = k_ * k_ * cout_;
  cols_.resize(static_cast<size_t>(rows) * kkc);
  kernels::Sgemm(Trans::kNo, Trans::kNo, rows, kkc, cin_, 1.0f, x, cin_,
                 weight_.value.data(), kkc, 0.0f, cols_.data(), kkc);
  // y = col2im(cols) in the geometry of the convolution this one transposes.
  kernels::Col2Im(conv_, cols_.data(), batch, kkc, y);
  if (has_bias_) {
    kernels::BiasAdd(y, static_cast<int64_t>(batch) * oh_ * ow_, cout_, bias_.value.data());
  }
}

void ConvTranspose2d::Backward(const float* x, const float* y, const float* dy, int batch,
                               float* dx) {
  (void)y;
  const int rows = batch * h_ * w_, kkc = k_ * k_ * cout_;
  cols_.resize(static_cast<size_t>(rows) * kkc);
  // dcols = im2col(dy): each input position's K·K·Cout block of the output gradient.
  kernels::Im2Col(conv_, dy, batch, static_cast<int64_t>(output_size()), cols_.data(), kkc);
  // dW [Cin × KKC] += xᵀ · dcols; dx [rows × Cin] = dcols · Wᵀ
  kernels::Sgemm(Trans::kYes, Trans::kNo, cin_, kkc, rows, 1.0f, x, cin_, cols_.data(), kkc,
                 1.0f, weight_.grad.data(), kkc);
  if (dx != nullptr) {
    kernels::Sgemm(Trans::kNo, Trans::kYes, rows, cin_, kkc, 1.0f, cols_.data(), kkc,
                   weight_.value.data(), kkc, 0.0f, dx, cin_);
  }
  if (has_bias_) {
    kernels::BiasAddGrad(dy, static_cast<int64_t>(batch) * oh_ * ow_, cout_, bias_.grad.data());
  }
}

std::vector<Parameter*> ConvTranspose2d::parameters() {
  if (!has_bias_) return {&weight_};
  return {&weight_, &bias_};
}

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

}  // namespace fedge::model

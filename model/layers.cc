#include "model/layers.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "base/rng.h"
#include "base/status_macros.h"
#include "kernels/qgemm.h"
#include "kernels/sgemm.h"

// Memory-bound loops (im2col, pooling, ReLU, reductions) are cloned per ISA by the compiler
// and picked at load time (GCC function multiversioning): the build still targets any
// x86-64, and wider vectors halve these loops where the CPU has them.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FEDGE_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FEDGE_SIMD_CLONES
#endif

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

// sums[j] += Σ_r m[r·cols + j]. Few columns (a conv with 6 channels) would leave the
// inner loop too short to vectorize, so rows are summed in groups whose width is a multiple
// of 16 floats, then folded.
FEDGE_SIMD_CLONES void AddColumnSums(const float* m, int rows, int cols, float* sums) {
  int group = 1;
  while ((group * cols) % 16 != 0 && group < 16) group *= 2;
  const int width = group * cols;
  if (group == 1 || width > 1024 || rows < 2 * group) {
    for (int r = 0; r < rows; ++r) {
      const float* __restrict mr = m + static_cast<size_t>(r) * cols;
      for (int j = 0; j < cols; ++j) sums[j] += mr[j];
    }
    return;
  }
  float acc[1024] = {};
  const int full = rows / group;
  for (int g = 0; g < full; ++g) {
    const float* __restrict mg = m + static_cast<size_t>(g) * width;
    for (int i = 0; i < width; ++i) acc[i] += mg[i];
  }
  for (int i = 0; i < width; ++i) sums[i % cols] += acc[i];
  for (int r = full * group; r < rows; ++r) {
    for (int j = 0; j < cols; ++j) sums[j] += m[static_cast<size_t>(r) * cols + j];
  }
}

FEDGE_SIMD_CLONES void ReluForward(const float* x, size_t n, float* y) {
  const float* __restrict in = x;
  float* __restrict out = y;
  for (size_t i = 0; i < n; ++i) out[i] = std::max(in[i], 0.0f);
}

// Branch-free so that it vectorizes: a mispredicted branch per element costs more than the
// whole pass.
FEDGE_SIMD_CLONES void ReluBackward(const float* y, const float* dy, size_t n, float* dx) {
  const float* __restrict out = y;
  const float* __restrict g = dy;
  float* __restrict d = dx;
  for (size_t i = 0; i < n; ++i) {
    const float gi = g[i];  // loaded unconditionally so that GCC emits a blend
    d[i] = out[i] > 0.0f ? gi : 0.0f;
  }
}

struct PoolGeometry {
  int h, w, c, k, stride, oh, ow;
};

// 2×2 / stride-2 pooling of one output row, channels innermost. kC > 0 fixes the channel
// count at compile time (so the channel loop unrolls into whole vectors); kC == 0 reads it
// from `c`.
template <int kC>
FEDGE_SIMD_CLONES void Pool2x2ForwardRow(const float* __restrict x0, const float* __restrict x1,
                                         int ow_n, int c, float* __restrict y) {
  const int cc = kC > 0 ? kC : c;
  for (int ow = 0; ow < ow_n; ++ow) {
    const float* a = x0 + 2 * ow * cc;
    const float* b = x1 + 2 * ow * cc;
    float* yo = y + ow * cc;
    for (int i = 0; i < cc; ++i) {
      yo[i] = std::max(std::max(a[i], a[i + cc]), std::max(b[i], b[i + cc]));
    }
  }
}

// The backward of the row above: the first of the four positions holding the maximum
// (row-major order) gets the gradient, the others zero. 0/1 float arithmetic instead of
// branches: the comparisons are data-dependent and would mispredict half the time.
template <int kC>
FEDGE_SIMD_CLONES void Pool2x2BackwardRow(const float* __restrict x0, const float* __restrict x1,
                                          const float* __restrict y, const float* __restrict dy,
                                          int ow_n, int c, float* __restrict d0,
                                          float* __restrict d1) {
  const int cc = kC > 0 ? kC : c;
  for (int ow = 0; ow < ow_n; ++ow) {
    const int p = 2 * ow * cc, o = ow * cc;
    for (int i = 0; i < cc; ++i) {
      const float m = y[o + i], g = dy[o + i];
      const float e00 = x0[p + i] == m ? 1.0f : 0.0f;
      const float e01 = x0[p + cc + i] == m ? 1.0f : 0.0f;
      const float e10 = x1[p + i] == m ? 1.0f : 0.0f;
      const float n00 = 1.0f - e00;
      const float h01 = e01 * n00;
      const float n01 = n00 * (1.0f - e01);
      const float h10 = e10 * n01;
      const float h11 = n01 * (1.0f - e10);
      d0[p + i] = g * e00;
      d0[p + cc + i] = g * h01;
      d1[p + i] = g * h10;
      d1[p + cc + i] = g * h11;
    }
  }
}

using Pool2x2Forward = void (*)(const float*, const float*, int, int, float*);
using Pool2x2Backward = void (*)(const float*, const float*, const float*, const float*, int,
                                 int, float*, float*);

Pool2x2Forward PickPool2x2Forward(int c) {
  switch (c) {
    case 6: return Pool2x2ForwardRow<6>;
    case 16: return Pool2x2ForwardRow<16>;
    case 32: return Pool2x2ForwardRow<32>;
    case 64: return Pool2x2ForwardRow<64>;
    default: return Pool2x2ForwardRow<0>;
  }
}

Pool2x2Backward PickPool2x2Backward(int c) {
  switch (c) {
    case 6: return Pool2x2BackwardRow<6>;
    case 16: return Pool2x2BackwardRow<16>;
    case 32: return Pool2x2BackwardRow<32>;
    case 64: return Pool2x2BackwardRow<64>;
    default: return Pool2x2BackwardRow<0>;
  }
}

FEDGE_SIMD_CLONES void MaxPoolForward(const PoolGeometry& g, const float* x, int batch,
                                      float* y) {
  const int h_ = g.h, w_ = g.w, c_ = g.c, k_ = g.k, stride_ = g.stride, oh_ = g.oh, ow_ = g.ow;
  (void)h_;
  // Max only (no arg-max bookkeeping), so the channel loop is branch-free; Backward finds
  // each window's first maximum again from x and y.
  const int in_size = h_ * w_ * c_, out_size = oh_ * ow_ * c_;
  if (k_ == 2 && stride_ == 2) {
    const Pool2x2Forward row = PickPool2x2Forward(c_);
    for (int b = 0; b < batch; ++b) {
      for (int oh = 0; oh < oh_; ++oh) {
        const float* x0 = x + static_cast<size_t>(b) * in_size + 2 * oh * w_ * c_;
        row(x0, x0 + w_ * c_, ow_, c_, y + static_cast<size_t>(b) * out_size + oh * ow_ * c_);
      }
    }
    return;
  }
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * in_size;
    float* yb = y + static_cast<size_t>(b) * out_size;
    for (int oh = 0; oh < oh_; ++oh) {
      for (int ow = 0; ow < ow_; ++ow) {
        float* __restrict yo = yb + (oh * ow_ + ow) * c_;
        const float* x0 = xb + ((oh * stride_) * w_ + ow * stride_) * c_;
        for (int c = 0; c < c_; ++c) yo[c] = x0[c];
        for (int kh = 0; kh < k_; ++kh) {
          for (int kw = 0; kw < k_; ++kw) {
            const float* __restrict xi = x0 + (kh * w_ + kw) * c_;
            for (int c = 0; c < c_; ++c) yo[c] = std::max(yo[c], xi[c]);
          }
        }
      }
    }
  }
}

FEDGE_SIMD_CLONES void MaxPoolBackward(const PoolGeometry& g, const float* x, const float* y,
                                       const float* dy, int batch, float* dx) {
  const int h_ = g.h, w_ = g.w, c_ = g.c, k_ = g.k, stride_ = g.stride, oh_ = g.oh, ow_ = g.ow;
  const int in_size = h_ * w_ * c_, out_size = oh_ * ow_ * c_;
  // When the windows tile the input exactly, every dx element is written once below;
  // otherwise (overlaps, or rows/columns no window covers) start from zero and accumulate.
  const bool tiles = stride_ == k_ && oh_ * k_ == h_ && ow_ * k_ == w_;
  if (tiles && k_ == 2) {
    const Pool2x2Backward row = PickPool2x2Backward(c_);
    for (int b = 0; b < batch; ++b) {
      for (int oh = 0; oh < oh_; ++oh) {
        const size_t in_off = static_cast<size_t>(b) * in_size + 2 * oh * w_ * c_;
        const size_t out_off = static_cast<size_t>(b) * out_size + oh * ow_ * c_;
        row(x + in_off, x + in_off + w_ * c_, y + out_off, dy + out_off, ow_, c_, dx + in_off,
            dx + in_off + w_ * c_);
      }
    }
    return;
  }
  if (!tiles) std::fill(dx, dx + static_cast<size_t>(batch) * in_size, 0.0f);
  std::vector<uint8_t> done(c_);
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * in_size;
    float* dxb = dx + static_cast<size_t>(b) * in_size;
    const float* yb = y + static_cast<size_t>(b) * out_size;
    const float* dyb = dy + static_cast<size_t>(b) * out_size;
    for (int oh = 0; oh < oh_; ++oh) {
      for (int ow = 0; ow < ow_; ++ow) {
        const float* yo = yb + (oh * ow_ + ow) * c_;
        const float* go = dyb + (oh * ow_ + ow) * c_;
        const int base = ((oh * stride_) * w_ + ow * stride_) * c_;
        std::fill(done.begin(), done.end(), 0);
        for (int kh = 0; kh < k_; ++kh) {
          for (int kw = 0; kw < k_; ++kw) {
            const int off = base + (kh * w_ + kw) * c_;
            float* __restrict d = dxb + off;
            const float* __restrict xi = xb + off;
            if (tiles) {
              for (int c = 0; c < c_; ++c) {
                const float g = go[c];
                const uint8_t hit = (xi[c] == yo[c]) & !done[c];
                done[c] |= hit;
                d[c] = hit ? g : 0.0f;
              }
            } else {
              for (int c = 0; c < c_; ++c) {
                const float g = go[c];
                const uint8_t hit = (xi[c] == yo[c]) & !done[c];
                done[c] |= hit;
                d[c] += hit ? g : 0.0f;
              }
            }
          }
        }
      }
    }
  }
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
      if (bias != nullptr) {
        for (int r = 0; r < rows; ++r) {
          float* yr = y + static_cast<size_t>(r) * out_;
          for (int j = 0; j < out_; ++j) yr[j] += bias[j];
        }
      }
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
  if (has_bias_) AddColumnSums(dy, rows, out_, bias_.grad.data());
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

namespace {
int ConvOut(int size, int kernel, int stride, int pad) {
  return (size + 2 * pad - kernel) / stride + 1;
}
}  // namespace

Conv2d::Conv2d(std::string name, int height, int width, int in_channels, int out_channels,
               int kernel, int stride, int padding, bool has_bias)
    : Layer(name, {height, width, in_channels},
            {ConvOut(height, kernel, stride, padding), ConvOut(width, kernel, stride, padding),
             out_channels}),
      h_(height),
      w_(width),
      cin_(in_channels),
      cout_(out_channels),
      k_(kernel),
      stride_(stride),
      pad_(padding),
      oh_(ConvOut(height, kernel, stride, padding)),
      ow_(ConvOut(width, kernel, stride, padding)),
      kpad_((kernel * kernel * in_channels + 15) / 16 * 16),
      product_(name, {out_channels, kernel, kernel, in_channels},
               kernel * kernel * in_channels, out_channels, has_bias) {}

template <typename T>
FEDGE_SIMD_CLONES void Conv2d::Im2Col(const T* x, int batch, int ldx, T* cols, int ldc) const {
  // Members are copied to locals: the memcpys below may alias anything, and would otherwise
  // make the compiler reload every member on every span.
  const int h = h_, w = w_, cin = cin_, k = k_, stride = stride_, pad = pad_, oh_n = oh_,
            ow_n = ow_;
  const int span = k * cin;  // one kernel row: contiguous in NHWC when fully inside
  constexpr int kBlock = 32 / sizeof(T);
  const int copy_span = (span + kBlock - 1) / kBlock * kBlock;
  const T* x_end = x + static_cast<size_t>(batch - 1) * ldx + h * w * cin;
  // Output columns whose window lies fully inside the input: [ow_lo, ow_hi).
  int ow_lo = 0;
  while (ow_lo < ow_n && ow_lo * stride - pad < 0) ++ow_lo;
  int ow_hi = ow_n;
  while (ow_hi > ow_lo && (ow_hi - 1) * stride - pad + k > w) --ow_hi;
  // One span with per-element bounds checks, for windows that cross the left/right edge.
  auto edge_span = [&](const T* xrow, int ow, T* dst) {
    const int iw0 = ow * stride - pad;
    for (int kw = 0; kw < k; ++kw) {
      const int iw = iw0 + kw;
      for (int c = 0; c < cin; ++c) {
        dst[kw * cin + c] = (iw < 0 || iw >= w) ? T(0) : xrow[iw * cin + c];
      }
    }
  };
  const size_t src_step = static_cast<size_t>(stride) * cin;
  for (int b = 0; b < batch; ++b) {
    const T* xb = x + static_cast<size_t>(b) * ldx;
    for (int oh = 0; oh < oh_n; ++oh) {
      T* row0 = cols + static_cast<size_t>((b * oh_n + oh) * ow_n) * ldc;
      for (int kh = 0; kh < k; ++kh) {
        const int ih = oh * stride - pad + kh;
        T* dst0 = row0 + kh * span;
        if (ih < 0 || ih >= h) {
          for (int ow = 0; ow < ow_n; ++ow) {
            T* __restrict dst = dst0 + static_cast<size_t>(ow) * ldc;
            for (int i = 0; i < span; ++i) dst[i] = T(0);
          }
          continue;
        }
        const T* xrow = xb + static_cast<size_t>(ih) * w * cin;
        for (int ow = 0; ow < ow_lo; ++ow) edge_span(xrow, ow, dst0 + static_cast<size_t>(ow) * ldc);
        const T* src = xrow + static_cast<size_t>(ow_lo * stride - pad) * cin;
        T* dst = dst0 + static_cast<size_t>(ow_lo) * ldc;
        int ow = ow_lo;
        // A span may spill into later spans of its row (written after it) and into the row's
        // padding columns [K, ldc), never into the next row; and it may not read past x.
        if (kh * span + copy_span <= ldc) {
          for (; ow < ow_hi && src + copy_span <= x_end; ++ow, src += src_step, dst += ldc) {
            // Whole 32-byte blocks: fixed-size memcpys become vector moves, where a 5-float
            // span would otherwise cost a library call.
            for (int i = 0; i < span; i += kBlock) std::memcpy(dst + i, src + i, 32);
          }
        }
        for (; ow < ow_hi; ++ow, src += src_step, dst += ldc) {
          for (int i = 0; i < span; ++i) dst[i] = src[i];
        }
        for (ow = ow_hi; ow < ow_n; ++ow) edge_span(xrow, ow, dst0 + static_cast<size_t>(ow) * ldc);
      }
    }
  }
}

FEDGE_SIMD_CLONES void Conv2d::Col2Im(const float* cols, int batch, int ldc, float* dx) const {
  std::fill(dx, dx + static_cast<size_t>(batch) * h_ * w_ * cin_, 0.0f);
  for (int b = 0; b < batch; ++b) {
    float* xb = dx + static_cast<size_t>(b) * h_ * w_ * cin_;
    for (int oh = 0; oh < oh_; ++oh) {
      for (int ow = 0; ow < ow_; ++ow) {
        const float* row = cols + (static_cast<size_t>(b * oh_ + oh) * ow_ + ow) * ldc;
        for (int kh = 0; kh < k_; ++kh) {
          const int ih = oh * stride_ - pad_ + kh;
          if (ih < 0 || ih >= h_) continue;
          const int iw0 = ow * stride_ - pad_;
          if (iw0 >= 0 && iw0 + k_ <= w_) {
            float* __restrict dst = xb + (static_cast<size_t>(ih) * w_ + iw0) * cin_;
            const float* __restrict src = row + kh * k_ * cin_;
            for (int i = 0; i < k_ * cin_; ++i) dst[i] += src[i];
            continue;
          }
          for (int kw = 0; kw < k_; ++kw) {
            const int iw = iw0 + kw;
            if (iw < 0 || iw >= w_) continue;
            float* dst = xb + (static_cast<size_t>(ih) * w_ + iw) * cin_;
            const float* src = row + (kh * k_ + kw) * cin_;
            for (int c = 0; c < cin_; ++c) dst[c] += src[c];
          }
        }
      }
    }
  }
}

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
      Im2Col(x + static_cast<size_t>(b0) * in_size, nb, in_size, cols_.data(), kpad_);
      if (cout_ >= 32) {
        kernels::Sgemm(Trans::kNo, Trans::kYes, rows, cout_, kdim, 1.0f, cols, kpad_, w, kdim,
                       0.0f, yc, cout_);
        if (!has_bias) continue;
        for (int r = 0; r < rows; ++r) {
          float* __restrict yr = yc + static_cast<size_t>(r) * cout_;
          for (int c = 0; c < cout_; ++c) yr[c] += bias[c];
        }
        continue;
      }
      // Few output channels: Eigen vectorizes along the first dimension of its
      // column-major result, so compute yᵀ [Cout × rows] = W · colsᵀ (rows along the
      // vectors) and transpose it into NHWC with the bias.
      yt_.resize(static_cast<size_t>(cout_) * rows);
      kernels::Sgemm(Trans::kNo, Trans::kYes, cout_, rows, kdim, 1.0f, w, kdim, cols, kpad_,
                     0.0f, yt_.data(), rows);
      for (int c = 0; c < cout_; ++c) {
        const float* __restrict ytc = yt_.data() + static_cast<size_t>(c) * rows;
        const float bc = has_bias ? bias[c] : 0.0f;
        for (int r = 0; r < rows; ++r) yc[static_cast<size_t>(r) * cout_ + c] = ytc[r] + bc;
      }
    }
    return;
  }
  if (mode == ComputeMode::kInt4) {
    // Inference only; int4 is not on the training path, so keep it simple.
    cols_.resize(static_cast<size_t>(batch) * rows_per_example * kdim);
    Im2Col(x, batch, in_size, cols_.data(), kdim);
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
    // The K padding may hold spilled values (see Im2Col); the packed weights are zero
    // there, so they add nothing.
    qcols_.data.resize(std::max(qcols_.data.size(),
                                static_cast<size_t>(qcols_.m) * qcols_.k_padded));
    Im2Col(qx_.row(b0), nb, qx_.k_padded, qcols_.data.data(), qcols_.k_padded);
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
    Im2Col(xin + static_cast<size_t>(b0) * in_size, nb, in_size, cols_.data(), kpad_);
    kernels::Sgemm(Trans::kYes, Trans::kNo, cout_, kpad_, rows, 1.0f, dyc, cout_, cols_.data(),
                   kpad_, 1.0f, dw_pad_.data(), kpad_);
    if (product_.has_bias()) AddColumnSums(dyc, rows, cout_, product_.bias().grad.data());
    if (dx != nullptr) {
      // dcols[rows × K] = dy · W
      kernels::Sgemm(Trans::kNo, Trans::kNo, rows, kdim, cout_, 1.0f, dyc, cout_, w, kdim,
                     0.0f, dcols_.data(), kpad_);
      Col2Im(dcols_.data(), nb, kpad_, dx + static_cast<size_t>(b0) * in_size);
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
  MaxPoolForward(PoolGeometry{h_, w_, c_, k_, stride_, oh_, ow_}, x, batch, y);
}

void MaxPool2d::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  if (dx == nullptr) return;
  MaxPoolBackward(PoolGeometry{h_, w_, c_, k_, stride_, oh_, ow_}, x, y, dy, batch, dx);
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
  const int in_size = h_ * w_ * c_, out_size = oh_ * ow_ * c_;
  const float inv = 1.0f / static_cast<float>(k_ * k_);
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * in_size;
    float* yb = y + static_cast<size_t>(b) * out_size;
    for (int oh = 0; oh < oh_; ++oh) {
      for (int ow = 0; ow < ow_; ++ow) {
        float* __restrict yo = yb + (oh * ow_ + ow) * c_;
        std::fill(yo, yo + c_, 0.0f);
        const float* x0 = xb + ((oh * stride_) * w_ + ow * stride_) * c_;
        for (int kh = 0; kh < k_; ++kh) {
          for (int kw = 0; kw < k_; ++kw) {
            const float* __restrict xi = x0 + (kh * w_ + kw) * c_;
            for (int c = 0; c < c_; ++c) yo[c] += xi[c];
          }
        }
        for (int c = 0; c < c_; ++c) yo[c] *= inv;
      }
    }
  }
}

void AvgPool2d::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  if (dx == nullptr) return;
  const int in_size = h_ * w_ * c_, out_size = oh_ * ow_ * c_;
  const float inv = 1.0f / static_cast<float>(k_ * k_);
  std::fill(dx, dx + static_cast<size_t>(batch) * in_size, 0.0f);
  for (int b = 0; b < batch; ++b) {
    float* dxb = dx + static_cast<size_t>(b) * in_size;
    const float* dyb = dy + static_cast<size_t>(b) * out_size;
    for (int oh = 0; oh < oh_; ++oh) {
      for (int ow = 0; ow < ow_; ++ow) {
        const float* __restrict go = dyb + (oh * ow_ + ow) * c_;
        float* d0 = dxb + ((oh * stride_) * w_ + ow * stride_) * c_;
        for (int kh = 0; kh < k_; ++kh) {
          for (int kw = 0; kw < k_; ++kw) {
            float* __restrict d = d0 + (kh * w_ + kw) * c_;
            for (int c = 0; c < c_; ++c) d[c] += go[c] * inv;
          }
        }
      }
    }
  }
}

Sigmoid::Sigmoid(std::string name, std::vector<int> shape)
    : Layer(std::move(name), shape, shape) {}

void Sigmoid::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  const size_t n = static_cast<size_t>(batch) * input_size();
  for (size_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

void Sigmoid::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  if (dx == nullptr) return;
  const size_t n = static_cast<size_t>(batch) * input_size();
  for (size_t i = 0; i < n; ++i) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

LeakyRelu::LeakyRelu(std::string name, std::vector<int> shape, float negative_slope)
    : Layer(std::move(name), shape, shape), slope_(negative_slope) {}

void LeakyRelu::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  const size_t n = static_cast<size_t>(batch) * input_size();
  for (size_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : slope_ * x[i];
}

void LeakyRelu::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  if (dx == nullptr) return;
  const size_t n = static_cast<size_t>(batch) * input_size();
  for (size_t i = 0; i < n; ++i) dx[i] = x[i] > 0.0f ? dy[i] : slope_ * dy[i];
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
  ReluForward(x, static_cast<size_t>(batch) * input_size(), y);
}

void Relu::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  if (dx != nullptr) ReluBackward(y, dy, static_cast<size_t>(batch) * input_size(), dx);
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
      has_bias_(has_bias),
      weight_(MakeParameter(name + ".weight", {in_channels, kernel, kernel, out_channels})),
      bias_(has_bias ? MakeParameter(name + ".bias", {out_channels}) : Parameter{}) {}

void ConvTranspose2d::Scatter(const float* cols, int batch, float* y) const {
  const int kkc = k_ * k_ * cout_;
  for (int b = 0; b < batch; ++b) {
    float* yb = y + static_cast<size_t>(b) * oh_ * ow_ * cout_;
    for (int ih = 0; ih < h_; ++ih) {
      for (int iw = 0; iw < w_; ++iw) {
        const float* row = cols + (static_cast<size_t>(b * h_ + ih) * w_ + iw) * kkc;
        for (int kh = 0; kh < k_; ++kh) {
          const int oh = ih * stride_ - pad_ + kh;
          if (oh < 0 || oh >= oh_) continue;
          for (int kw = 0; kw < k_; ++kw) {
            const int ow = iw * stride_ - pad_ + kw;
            if (ow < 0 || ow >= ow_) continue;
            float* __restrict dst = yb + (static_cast<size_t>(oh) * ow_ + ow) * cout_;
            const float* __restrict src = row + (kh * k_ + kw) * cout_;
            for (int c = 0; c < cout_; ++c) dst[c] += src[c];
          }
        }
      }
    }
  }
}

void ConvTranspose2d::Gather(const float* dy, int batch, float* dcols) const {
  const int kkc = k_ * k_ * cout_;
  for (int b = 0; b < batch; ++b) {
    const float* dyb = dy + static_cast<size_t>(b) * oh_ * ow_ * cout_;
    for (int ih = 0; ih < h_; ++ih) {
      for (int iw = 0; iw < w_; ++iw) {
        float* row = dcols + (static_cast<size_t>(b * h_ + ih) * w_ + iw) * kkc;
        for (int kh = 0; kh < k_; ++kh) {
          const int oh = ih * stride_ - pad_ + kh;
          for (int kw = 0; kw < k_; ++kw) {
            const int ow = iw * stride_ - pad_ + kw;
            float* __restrict dst = row + (kh * k_ + kw) * cout_;
            if (oh < 0 || oh >= oh_ || ow < 0 || ow >= ow_) {
              std::fill(dst, dst + cout_, 0.0f);
              continue;
            }
            const float* __restrict src = dyb + (static_cast<size_t>(oh) * ow_ + ow) * cout_;
            std::copy(src, src + cout_, dst);
          }
        }
      }
    }
  }
}

void ConvTranspose2d::Forward(const float* x, int batch, float* y, ComputeMode mode,
                              bool training) {
  (void)mode;
  (void)training;
  const int rows = batch * h_ * w_, kkc = k_ * k_ * cout_;
  cols_.resize(static_cast<size_t>(rows) * kkc);
  kernels::Sgemm(Trans::kNo, Trans::kNo, rows, kkc, cin_, 1.0f, x, cin_,
                 weight_.value.data(), kkc, 0.0f, cols_.data(), kkc);
  const size_t out_n = static_cast<size_t>(batch) * output_size();
  std::fill(y, y + out_n, 0.0f);
  Scatter(cols_.data(), batch, y);
  if (!has_bias_) return;
  for (size_t r = 0; r < out_n / cout_; ++r) {
    float* yr = y + r * cout_;
    for (int c = 0; c < cout_; ++c) yr[c] += bias_.value[c];
  }
}

void ConvTranspose2d::Backward(const float* x, const float* y, const float* dy, int batch,
                               float* dx) {
  (void)y;
  const int rows = batch * h_ * w_, kkc = k_ * k_ * cout_;
  cols_.resize(static_cast<size_t>(rows) * kkc);
  Gather(dy, batch, cols_.data());
  // dW [Cin × KKC] += xᵀ · dcols; dx [rows × Cin] = dcols · Wᵀ
  kernels::Sgemm(Trans::kYes, Trans::kNo, cin_, kkc, rows, 1.0f, x, cin_, cols_.data(), kkc,
                 1.0f, weight_.grad.data(), kkc);
  if (dx != nullptr) {
    kernels::Sgemm(Trans::kNo, Trans::kYes, rows, cin_, kkc, 1.0f, cols_.data(), kkc,
                   weight_.value.data(), kkc, 0.0f, dx, cin_);
  }
  if (has_bias_) AddColumnSums(dy, batch * oh_ * ow_, cout_, bias_.grad.data());
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

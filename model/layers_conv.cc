// Conv2d (im2col + GEMM, fp32 / int8 / int4) and ConvTranspose2d (GEMM + col2im).
#include "model/layers.h"

#include <algorithm>
#include <utility>

#include "kernels/bias.h"
#include "kernels/conv.h"
#include "kernels/conv_direct.h"
#include "kernels/qgemm.h"
#include "kernels/quantize.h"
#include "kernels/sgemm.h"

namespace fedge::model {

using kernels::Trans;

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
      direct_(false),
      kpad_((kernel * kernel * in_channels + 15) / 16 * 16),
      geometry_{height, width, in_channels, kernel, stride, padding, oh_, ow_},
      product_(name, {out_channels, kernel, kernel, in_channels},
               kernel * kernel * in_channels, out_channels, has_bias) {
  direct_ = kernels::DirectConvSupported(geometry_, cout_);
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
  if (mode == ComputeMode::kFp32 && direct_) {
    wp_.resize(static_cast<size_t>(kdim) * kernels::DirectConvPadded(cout_));
    kernels::PackConvWeights(geometry_, cout_, product_.weight().value.data(), wp_.data());
    direct_scratch_.resize(static_cast<size_t>(kernels::DirectConvScratch(geometry_)));
    kernels::ConvDirect(geometry_, cout_, x, batch, wp_.data(),
                        product_.has_bias() ? product_.bias().value.data() : nullptr, y,
                        direct_scratch_.data());
    return;
  }
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
  const float* bias = product_.has_bias() ? product_.bias().value.data() : nullptr;
  // int8 and int4: quantize the input once (im2col only copies its values, so the
  // per-tensor scale of the im2col matrix is the input's), then im2col the quantized values
  // chunk by chunk: the scratch is bounded by the chunk, never by the batch.
  kernels::QuantizeActivations(x, batch, in_size, in_size, &qx_);
  qcols_.k = kdim;
  qcols_.k_padded = kernels::PadK(kdim);
  qcols_.scale = qx_.scale;
  const kernels::PackedWeightsQ4* w4 =
      mode == ComputeMode::kInt4 ? &product_.Int4Weights() : nullptr;  // inference only
  const kernels::PackedWeightsS8* w8 = w4 == nullptr ? &product_.Int8Weights(training) : nullptr;
  if (w8 != nullptr && training) {
    product_.set_backward_int8(true);
    x_fq_.resize(static_cast<size_t>(batch) * in_size);
    kernels::DequantizeActivations(qx_, x_fq_.data(), in_size);
  }
  for (int b0 = 0; b0 < batch; b0 += chunk) {
    const int nb = std::min(chunk, batch - b0);
    qcols_.m = nb * rows_per_example;
    // The K padding may hold spilled values (kernels/conv.h); the packed weights are zero
    // there (int4: blocks padded with the zero code), so they add nothing.
    qcols_.data.resize(std::max(qcols_.data.size(),
                                static_cast<size_t>(qcols_.m) * qcols_.k_padded));
    kernels::Im2Col(geometry_, qx_.row(b0), nb, qx_.k_padded, qcols_.data.data(),
                    qcols_.k_padded);
    float* yc = y + static_cast<size_t>(b0) * out_size;
    if (w4 != nullptr) {
      kernels::QGemmQ4(qcols_, *w4, kernels::Epilogue{bias, false}, yc, cout_);
    } else {
      kernels::QGemmS8(qcols_, *w8, kernels::Epilogue{bias, false}, yc, cout_);
    }
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
  if (direct_) {
    // dW and db straight from x and dy, in one pass; only dx still goes through a GEMM
    // (dcols = dy · W, then col2im), chunk by chunk.
    direct_scratch_.resize(
        static_cast<size_t>(kernels::DirectConvGradScratch(geometry_, cout_)));
    kernels::ConvDirectWeightGrad(
        geometry_, cout_, xin, dy, batch, product_.weight().grad.data(),
        product_.has_bias() ? product_.bias().grad.data() : nullptr, direct_scratch_.data());
  } else {
    cols_.resize(chunk_floats);
    // dW over the padded K (Eigen runs much faster on a multiple of 16 there); the padding
    // columns, computed from scratch values, are dropped when adding into the gradient.
    dw_pad_.assign(static_cast<size_t>(cout_) * kpad_, 0.0f);
  }
  if (dx != nullptr) dcols_.resize(chunk_floats);
  for (int b0 = 0; b0 < batch; b0 += chunk) {
    const int nb = std::min(chunk, batch - b0);
    const int rows = nb * rows_per_example;
    const float* dyc = dy + static_cast<size_t>(b0) * out_size;
    if (!direct_) {
      kernels::Im2Col(geometry_, xin + static_cast<size_t>(b0) * in_size, nb, in_size,
                      cols_.data(), kpad_);
      kernels::Sgemm(Trans::kYes, Trans::kNo, cout_, kpad_, rows, 1.0f, dyc, cout_,
                     cols_.data(), kpad_, 1.0f, dw_pad_.data(), kpad_);
      if (product_.has_bias()) {
        kernels::BiasAddGrad(dyc, rows, cout_, product_.bias().grad.data());
      }
    }
    if (dx != nullptr) {
      // dcols[rows × K] = dy · W
      kernels::Sgemm(Trans::kNo, Trans::kNo, rows, kdim, cout_, 1.0f, dyc, cout_, w, kdim,
                     0.0f, dcols_.data(), kpad_);
      kernels::Col2Im(geometry_, dcols_.data(), nb, kpad_,
                      dx + static_cast<size_t>(b0) * in_size);
    }
  }
  if (direct_) return;
  float* grad = product_.weight().grad.data();
  for (int c = 0; c < cout_; ++c) {
    for (int k = 0; k < kdim; ++k) {
      grad[c * kdim + k] += dw_pad_[static_cast<size_t>(c) * kpad_ + k];
    }
  }
}

std::vector<Parameter*> Conv2d::parameters() {
  if (!product_.has_bias()) return {&product_.weight()};
  return {&product_.weight(), &product_.bias()};
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

}  // namespace fedge::model

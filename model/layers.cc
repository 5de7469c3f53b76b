#include "model/layers.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "base/status_macros.h"
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
      if (bias != nullptr) {
        for (int r = 0; r < rows; ++r) {
          float* yr = y + static_cast<size_t>(r) * out_;
          for (int j = 0; j < out_; ++j) yr[j] += bias[j];
        }
      }
      return;
    }
    case ComputeMode::kInt8: {
      if (w8_version_ != weight_.version || training) {
        kernels::QuantizeWeightsS8(weight_.value.data(), out_, in_, in_, &w8_);
        w8_version_ = weight_.version;
      }
      kernels::QuantizeActivations(a, rows, in_, in_, &qa_);
      kernels::QGemmS8(qa_, w8_, kernels::Epilogue{bias, false}, y, out_);
      if (training) {
        last_forward_int8_ = true;
        a_fq_.resize(static_cast<size_t>(rows) * in_);
        kernels::DequantizeActivations(qa_, a_fq_.data(), in_);
        w_fq_.resize(weight_.value.size());
        kernels::DequantizeWeightsS8(w8_, w_fq_.data(), in_);
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

void LinearProduct::Backward(const float* a, const float* dy, int rows, float* da) {
  const float* a_used = last_forward_int8_ ? a_fq_.data() : a;
  const float* w_used = last_forward_int8_ ? w_fq_.data() : weight_.value.data();
  // dW[out × in] += dyᵀ · a
  kernels::Sgemm(Trans::kYes, Trans::kNo, out_, in_, rows, 1.0f, dy, out_, a_used, in_, 1.0f,
                 weight_.grad.data(), in_);
  if (has_bias_) {
    float* db = bias_.grad.data();
    for (int r = 0; r < rows; ++r) {
      const float* dyr = dy + static_cast<size_t>(r) * out_;
      for (int j = 0; j < out_; ++j) db[j] += dyr[j];
    }
  }
  if (da != nullptr) {
    // da[rows × in] = dy · W
    kernels::Sgemm(Trans::kNo, Trans::kNo, rows, in_, out_, 1.0f, dy, out_, w_used, in_, 0.0f,
                   da, in_);
  }
}

// ---------------------------------------------------------------------------------------
// Dense

Dense::Dense(std::string name, int in_features, int out_features, bool has_bias)
    : Layer(name, {in_features}, {out_features}),
      product_(name, {out_features, in_features}, in_features, out_features, has_bias) {}

void Dense::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  product_.Forward(x, batch, y, mode, training);
}

void Dense::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  product_.Backward(x, dy, batch, dx);
}

std::vector<Parameter*> Dense::parameters() {
  if (product_.has_bias()) return {&product_.weight(), &product_.bias()};
  return {&product_.weight()};
}

// ---------------------------------------------------------------------------------------
// Conv2d

namespace {
int ConvOut(int size, int kernel, int stride, int pad) {
  return (size + 2 * pad - kernel) / stride + 1;
}
}  // namespace

Conv2d::Conv2d(std::string name, int height, int width, int in_channels, int out_channels,
               int kernel, int stride, int padding)
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
      product_(name, {out_channels, kernel, kernel, in_channels},
               kernel * kernel * in_channels, out_channels, true) {}

void Conv2d::Im2Col(const float* x, int batch, float* cols) const {
  const int kdim = k_ * k_ * cin_;
  const int span = k_ * cin_;  // one kernel row: contiguous in NHWC when fully inside
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * h_ * w_ * cin_;
    for (int oh = 0; oh < oh_; ++oh) {
      for (int ow = 0; ow < ow_; ++ow) {
        float* row = cols + (static_cast<size_t>(b * oh_ + oh) * ow_ + ow) * kdim;
        const int iw0 = ow * stride_ - pad_;
        for (int kh = 0; kh < k_; ++kh) {
          const int ih = oh * stride_ - pad_ + kh;
          float* dst = row + kh * span;
          if (ih < 0 || ih >= h_) {
            std::memset(dst, 0, sizeof(float) * span);
          } else if (iw0 >= 0 && iw0 + k_ <= w_) {
            std::memcpy(dst, xb + (static_cast<size_t>(ih) * w_ + iw0) * cin_,
                        sizeof(float) * span);
          } else {
            for (int kw = 0; kw < k_; ++kw) {
              const int iw = iw0 + kw;
              if (iw < 0 || iw >= w_) {
                std::memset(dst + kw * cin_, 0, sizeof(float) * cin_);
              } else {
                std::memcpy(dst + kw * cin_, xb + (static_cast<size_t>(ih) * w_ + iw) * cin_,
                            sizeof(float) * cin_);
              }
            }
          }
        }
      }
    }
  }
}

void Conv2d::Col2Im(const float* cols, int batch, float* dx) const {
  const int kdim = k_ * k_ * cin_;
  std::fill(dx, dx + static_cast<size_t>(batch) * h_ * w_ * cin_, 0.0f);
  for (int b = 0; b < batch; ++b) {
    float* xb = dx + static_cast<size_t>(b) * h_ * w_ * cin_;
    for (int oh = 0; oh < oh_; ++oh) {
      for (int ow = 0; ow < ow_; ++ow) {
        const float* row = cols + (static_cast<size_t>(b * oh_ + oh) * ow_ + ow) * kdim;
        for (int kh = 0; kh < k_; ++kh) {
          const int ih = oh * stride_ - pad_ + kh;
          if (ih < 0 || ih >= h_) continue;
          for (int kw = 0; kw < k_; ++kw) {
            const int iw = ow * stride_ - pad_ + kw;
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

void Conv2d::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  const size_t rows = static_cast<size_t>(batch) * oh_ * ow_;
  cols_.resize(rows * product_.in());
  Im2Col(x, batch, cols_.data());
  product_.Forward(cols_.data(), static_cast<int>(rows), y, mode, training);
}

void Conv2d::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  const size_t rows = static_cast<size_t>(batch) * oh_ * ow_;
  if (dx == nullptr) {
    product_.Backward(cols_.data(), dy, static_cast<int>(rows), nullptr);
    return;
  }
  dcols_.resize(rows * product_.in());
  product_.Backward(cols_.data(), dy, static_cast<int>(rows), dcols_.data());
  Col2Im(dcols_.data(), batch, dx);
}

std::vector<Parameter*> Conv2d::parameters() {
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
  const int in_size = input_size(), out_size = output_size();
  argmax_.resize(static_cast<size_t>(batch) * out_size);
  for (int b = 0; b < batch; ++b) {
    const float* xb = x + static_cast<size_t>(b) * in_size;
    float* yb = y + static_cast<size_t>(b) * out_size;
    int32_t* ab = argmax_.data() + static_cast<size_t>(b) * out_size;
    for (int oh = 0; oh < oh_; ++oh) {
      for (int ow = 0; ow < ow_; ++ow) {
        float* yo = yb + (oh * ow_ + ow) * c_;
        int32_t* ao = ab + (oh * ow_ + ow) * c_;
        const int base = ((oh * stride_) * w_ + ow * stride_) * c_;
        for (int c = 0; c < c_; ++c) {
          yo[c] = xb[base + c];
          ao[c] = base + c;
        }
        for (int kh = 0; kh < k_; ++kh) {
          for (int kw = 0; kw < k_; ++kw) {
            if (kh == 0 && kw == 0) continue;
            const int off = ((oh * stride_ + kh) * w_ + ow * stride_ + kw) * c_;
            for (int c = 0; c < c_; ++c) {
              const float v = xb[off + c];
              if (v > yo[c]) {
                yo[c] = v;
                ao[c] = off + c;
              }
            }
          }
        }
      }
    }
  }
}

void MaxPool2d::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  if (dx == nullptr) return;
  const int in_size = input_size(), out_size = output_size();
  std::fill(dx, dx + static_cast<size_t>(batch) * in_size, 0.0f);
  for (int b = 0; b < batch; ++b) {
    float* dxb = dx + static_cast<size_t>(b) * in_size;
    const float* dyb = dy + static_cast<size_t>(b) * out_size;
    const int32_t* ab = argmax_.data() + static_cast<size_t>(b) * out_size;
    for (int i = 0; i < out_size; ++i) dxb[ab[i]] += dyb[i];
  }
}

// ---------------------------------------------------------------------------------------
// Relu, Flatten

Relu::Relu(std::string name, std::vector<int> shape) : Layer(std::move(name), shape, shape) {}

void Relu::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  const size_t n = static_cast<size_t>(batch) * input_size();
  for (size_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void Relu::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  if (dx == nullptr) return;
  const size_t n = static_cast<size_t>(batch) * input_size();
  for (size_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
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

}  // namespace fedge::model

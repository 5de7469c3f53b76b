// The layer kinds of fedge's sequential networks. See layer.h for layouts and compute modes.
#ifndef FEDGE_MODEL_LAYERS_H_
#define FEDGE_MODEL_LAYERS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/pool.h"
#include "kernels/q4.h"
#include "kernels/quantize.h"
#include "model/layer.h"

namespace fedge::model {

// y[rows × out] = a[rows × in] · Wᵀ + b, the product shared by Dense and Conv2d (after
// im2col). Owns W [out × in] and b [out] and the quantized copies of W.
class LinearProduct {
 public:
  LinearProduct(const std::string& layer_name, std::vector<int> weight_shape, int in, int out,
                bool has_bias);

  void Forward(const float* a, int rows, float* y, ComputeMode mode, bool training);
  // Adds dW, db; writes da = dy · W (da may be null). After an int8 training forward, dW
  // comes from the int8 product (AccumulateGradientsInt8) and da from the fake-quantized
  // weights.
  void Backward(const float* a, const float* dy, int rows, float* da);

  // The pieces, for layers that run the product in chunks (Conv2d):
  // int8 weights for this step (re-quantized when the weights changed, or always in
  // training, when the fake-quantized copy for the backward pass is refreshed too).
  const kernels::PackedWeightsS8& Int8Weights(bool training);
  // int4 weights (inference only), re-quantized when the weights changed.
  const kernels::PackedWeightsQ4& Int4Weights();
  // The weights the backward pass multiplies by: fake-quantized after an int8 training
  // forward (see set_backward_int8), else the fp32 weights.
  const float* BackwardWeights() const;
  void set_backward_int8(bool int8) { last_forward_int8_ = int8; }
  bool backward_int8() const { return last_forward_int8_; }
  // dW += dyᵀ · a, db += Σ rows of dy.
  void AccumulateGradients(const float* a, const float* dy, int rows);
  // After an int8 training forward of this product (LinearProduct::Forward): dW += dyᵀ · a
  // with both operands in int8 (a as the forward quantized it, dy quantized per tensor) on
  // the int8 GEMM, db += Σ rows of dy in fp32. The rounding of dy to 8 bits is the only
  // difference from AccumulateGradients at the fake-quantized input.
  void AccumulateGradientsInt8(const float* dy, int rows);

  Parameter& weight() { return weight_; }
  Parameter& bias() { return bias_; }
  bool has_bias() const { return has_bias_; }
  int in() const { return in_; }
  int out() const { return out_; }

 private:
  int in_, out_;
  bool has_bias_;
  Parameter weight_;
  Parameter bias_;
  // int8: re-quantized whenever weight_.version changes (every training step).
  kernels::PackedWeightsS8 w8_;
  uint64_t w8_version_ = UINT64_MAX;
  kernels::PackedWeightsQ4 w4_;
  uint64_t w4_version_ = UINT64_MAX;
  kernels::QuantizedActivations qa_;
  // The last training forward ran in int8: the backward pass uses its quantized input (qa_)
  // and the fake-quantized weights (straight-through estimator).
  bool last_forward_int8_ = false;
  std::vector<float> w_fq_;
  // The int8 weight gradient's operands and product.
  std::vector<float> dy_t_;                 // dyᵀ [out × rows]
  kernels::QuantizedActivations qdy_t_;
  kernels::PackedWeightsS8 qa_t_;           // the forward's quantized input, transposed
  std::vector<float> dw_;                   // dyᵀ · a [out × in]
};

// With `spectral_norm` (Miyato et al. 2018, as torch.nn.utils.spectral_norm): the product
// uses W̄ = W / σ(W), σ the largest singular value of the trainable W, estimated by power
// iteration with persistent vectors u [out], v [in]: each training forward runs one step
// (v ← Wᵀu/‖Wᵀu‖, u ← Wv/‖Wv‖) and σ = uᵀWv; inference reuses u and v. The backward pass
// treats u and v as constants: dL/dW = (G − ⟨G, W̄⟩ u vᵀ) / σ with G = dL/dW̄. u and v are
// not parameters (they are never serialized): a new layer starts them from a fixed
// pseudo-random u and 15 power steps. The bias is not normalized.
class Dense final : public Layer {
 public:
  Dense(std::string name, int in_features, int out_features, bool has_bias,
        bool spectral_norm = false);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;
  std::vector<Parameter*> parameters() override;
  // The product; with spectral norm its weight is W̄ (the trainable W is parameters()[0]).
  LinearProduct& product() { return product_; }
  bool spectral_norm() const { return spectral_norm_; }
  float sigma() const { return sigma_; }  // σ of the last forward (spectral norm only)

 private:
  void MultiplyV();
  void PowerStep();
  void NormalizeWeight(bool training);

  LinearProduct product_;
  bool spectral_norm_;
  Parameter weight_;  // spectral norm: the trainable W [out, in]
  std::vector<float> u_, v_;
  std::vector<double> wv_, wtu_;  // W·v [out] and Wᵀu [in], scratch of the power step
  float sigma_ = 1.0f;
};

// NHWC convolution: input [H, W, Cin], output [OH, OW, Cout]; W is [Cout, K, K, Cin].
// Runs as im2col + GEMM over chunks of a few examples, so that each chunk's im2col matrix
// stays in cache; the backward pass rebuilds it per chunk instead of storing it. In int8
// the input is quantized once per tensor and im2col copies int8 values.
class Conv2d final : public Layer {
 public:
  Conv2d(std::string name, int height, int width, int in_channels, int out_channels,
         int kernel, int stride, int padding, bool has_bias = true);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;
  std::vector<Parameter*> parameters() override;

 private:
  int ChunkExamples() const;

  int h_, w_, cin_, cout_, k_, stride_, pad_, oh_, ow_;
  // fp32 products by the direct kernels (kernels/conv_direct.h) instead of im2col + GEMM:
  // stride 1 and few channels, where the GEMM's K and N are too small to pay for packing.
  bool direct_;
  std::vector<float> wp_;           // direct: the packed weights (PackConvWeights)
  std::vector<float> direct_scratch_;
  int kpad_;  // row stride of the fp32 im2col matrix: K·K·Cin rounded up to 16
  kernels::ConvGeometry geometry_;  // for im2col / col2im (kernels/conv.h)
  LinearProduct product_;
  // One chunk of im2col rows [chunk·OH·OW, kpad_]; columns past K·K·Cin are scratch (they
  // may hold spilled values) and only meet zero weights or discarded outputs.
  std::vector<float> cols_;
  std::vector<float> dw_pad_;  // [Cout, kpad_]
  std::vector<float> yt_;     // one chunk's output, transposed
  std::vector<float> dcols_;
  kernels::QuantizedActivations qx_;     // int8: the whole input
  kernels::QuantizedActivations qcols_;  // int8: one chunk of im2col rows
  std::vector<float> x_fq_;              // int8 training: fake-quantized input
};

// NHWC transposed convolution (the gradient of a convolution with respect to its input):
// input [H, W, Cin], output [OH, OW, Cout] with OH = (H − 1)·stride − 2·padding + K (and
// likewise OW); W is [Cin, K, K, Cout] and y[oh, ow] += x[ih, iw, ·] · W[·, kh, kw, ·] for
// oh = ih·stride − padding + kh, ow = iw·stride − padding + kw. Runs as one GEMM
// cols [B·H·W, K·K·Cout] = x · W and a scatter of cols into y (col2im in the geometry of the
// convolution it transposes); the backward pass gathers dy into that layout (im2col) for
// dW = xᵀ · dcols and dx = dcols · Wᵀ. fp32 in every compute mode (it is a generator's
// layer, never quantized).
class ConvTranspose2d final : public Layer {
 public:
  ConvTranspose2d(std::string name, int height, int width, int in_channels, int out_channels,
                  int kernel, int stride, int padding, bool has_bias);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;
  std::vector<Parameter*> parameters() override;

 private:
  int h_, w_, cin_, cout_, k_, stride_, pad_, oh_, ow_;
  kernels::ConvGeometry conv_;  // the convolution this one transposes: [OH, OW] → [H, W]
  bool has_bias_;
  Parameter weight_;  // [Cin, K, K, Cout]
  Parameter bias_;    // [Cout]
  std::vector<float> cols_;
};

// Batch normalization over the last dimension (channels of an NHWC tensor, or the features
// of a vector), as torch.nn.BatchNorm2d: in training y = γ·x̂ + β with x̂ = (x − μ)/√(σ² + ε)
// from the batch's mean μ and biased variance σ² over every other position, and the running
// estimates move by `momentum` towards μ and the unbiased variance; in inference they stand
// in for μ, σ². Parameters: weight γ, bias β, and running_mean / running_var (trainable =
// false: no gradient, no optimizer step, but serialized and averaged with the model).
class BatchNorm2d final : public Layer {
 public:
  BatchNorm2d(std::string name, std::vector<int> shape, float momentum, float epsilon);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  // REQUIRES: the last Forward was a training one (aborts otherwise).
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;
  std::vector<Parameter*> parameters() override;

 private:
  int c_;
  float momentum_, eps_;
  Parameter weight_, bias_, running_mean_, running_var_;
  bool last_training_ = false;
  std::vector<float> xhat_;    // last training forward's x̂
  std::vector<float> invstd_;  // [C], its 1/√(σ² + ε)
  std::vector<double> sum_, sq_;           // [C] scratch: per-channel sums
  std::vector<float> scale_, shift_, mean_;  // [C] scratch
};

// NHWC max pooling; backward routes each gradient to the window's first maximum.
class MaxPool2d final : public Layer {
 public:
  MaxPool2d(std::string name, int height, int width, int channels, int kernel, int stride);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;

 private:
  const kernels::PoolGeometry geometry_;
};

// NHWC average pooling over kernel × kernel windows (no padding; rows and columns that no
// window reaches get zero gradient); backward spreads dy / k² over each window.
class AvgPool2d final : public Layer {
 public:
  AvgPool2d(std::string name, int height, int width, int channels, int kernel, int stride);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;

 private:
  const kernels::PoolGeometry geometry_;
};

// y = 1 / (1 + e^−x); backward from y: dx = dy · y · (1 − y).
class Sigmoid final : public Layer {
 public:
  Sigmoid(std::string name, std::vector<int> shape);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;
};

// HeteroFL's scaler: y = x / rate (model.proto ScalerSpec).
class Scaler final : public Layer {
 public:
  Scaler(std::string name, std::vector<int> shape, float rate);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;

 private:
  float inv_rate_;
};

// y = x (x > 0), slope · x otherwise.
class LeakyRelu final : public Layer {
 public:
  LeakyRelu(std::string name, std::vector<int> shape, float negative_slope);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;
  float negative_slope() const { return slope_; }

 private:
  float slope_;
};

class Relu final : public Layer {
 public:
  Relu(std::string name, std::vector<int> shape);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;
};

class Flatten final : public Layer {
 public:
  Flatten(std::string name, std::vector<int> shape);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;
};

// Input: `count` integer ids per example (as floats, each in [0, num_embeddings));
// output: [count, dim]. No gradient flows to the ids (dx, if asked for, is zero).
class Embedding final : public Layer {
 public:
  Embedding(std::string name, int count, int num_embeddings, int dim);
  void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) override;
  void Backward(const float* x, const float* y, const float* dy, int batch, float* dx) override;
  std::vector<Parameter*> parameters() override { return {&weight_}; }

 private:
  int count_, num_, dim_;
  Parameter weight_;
};

}  // namespace fedge::model

#endif  // FEDGE_MODEL_LAYERS_H_

// Layers of a sequential network and the parameters they own.
//
// Activations are batches of per-example tensors stored contiguously, row-major, one example
// after another: [batch, features] for dense layers and [batch, H, W, C] (NHWC) for
// convolutional ones, so that a convolution's im2col GEMM writes its output in place.
//
// Compute modes (docs/architecture.md, Algorithms):
//   kFp32  — fp32 everywhere (Eigen GEMM).
//   kInt8  — Dense and Conv2d run their forward product through the int8 kernels: weights
//            quantized per output channel from the fp32 master weights on every call,
//            activations per tensor. In training the backward pass is fp32 with a
//            straight-through estimator: the fake-quantized operands (q·s) stand in for the
//            originals, and the rounding is treated as identity.
//   kInt4  — inference only: int4 weights (32-value blocks), int8 activations.
#ifndef FEDGE_MODEL_LAYER_H_
#define FEDGE_MODEL_LAYER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace fedge::model {

enum class ComputeMode { kFp32, kInt8, kInt4 };

absl::string_view ComputeModeName(ComputeMode mode);  // "fp32", "int8", "int4"

// A named trainable tensor with its gradient. `version` changes whenever `value` does
// (optimizers and loaders bump it) so that layers can cache quantized copies.
struct Parameter {
  std::string name;          // "<layer>.weight", "<layer>.bias"
  std::vector<int> shape;
  std::vector<float> value;
  std::vector<float> grad;   // same size as value; accumulated by Backward
  uint64_t version = 0;
  // false for state that is part of the model but not trained (batch norm's running
  // statistics): optimizers leave it alone, its grad stays zero, and it is serialized,
  // averaged and sent like any other tensor.
  bool trainable = true;

  int64_t size() const { return static_cast<int64_t>(value.size()); }
};

// A trainable parameter named `name` of `shape`, value and gradient all zero.
Parameter MakeParameter(std::string name, std::vector<int> shape);

class Layer {
 public:
  virtual ~Layer() = default;

  const std::string& name() const { return name_; }
  const std::vector<int>& input_shape() const { return input_shape_; }
  const std::vector<int>& output_shape() const { return output_shape_; }
  int input_size() const { return input_size_; }    // floats per example
  int output_size() const { return output_size_; }  // floats per example

  // y[batch × output_size] = f(x[batch × input_size]). With `training`, keeps what Backward
  // needs (until the next Forward).
  virtual void Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) = 0;

  // Given dL/dy, adds dL/dθ to each parameter's grad and writes dL/dx into dx (dx may be
  // null when the input gradient is not needed, e.g. for the first layer).
  // REQUIRES: the last call was Forward(x, batch, y, mode, training = true).
  virtual void Backward(const float* x, const float* y, const float* dy, int batch,
                        float* dx) = 0;

  virtual std::vector<Parameter*> parameters() { return {}; }

 protected:
  Layer(std::string name, std::vector<int> input_shape, std::vector<int> output_shape);

 private:
  std::string name_;
  std::vector<int> input_shape_;
  std::vector<int> output_shape_;
  int input_size_;
  int output_size_;
};

}  // namespace fedge::model

#endif  // FEDGE_MODEL_LAYER_H_

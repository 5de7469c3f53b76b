// Activation layers: Relu, LeakyRelu, Sigmoid (loops in kernels/activation.h).
#include "model/layers.h"

#include <cstdint>
#include <utility>

#include "kernels/activation.h"

namespace fedge::model {

// ---------------------------------------------------------------------------------------
// Relu

Relu::Relu(std::string name, std::vector<int> shape) : Layer(std::move(name), shape, shape) {}

void Relu::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  kernels::Relu(x, static_cast<int64_t>(batch) * input_size(), y);
}

void Relu::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  if (dx != nullptr) kernels::ReluBackward(y, dy, static_cast<int64_t>(batch) * input_size(), dx);
}

// ---------------------------------------------------------------------------------------
// LeakyRelu

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

// ---------------------------------------------------------------------------------------
// Sigmoid

Sigmoid::Sigmoid(std::string name, std::vector<int> shape)
    : Layer(std::move(name), shape, shape) {}

void Sigmoid::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  kernels::Sigmoid(x, static_cast<int64_t>(batch) * input_size(), y);
}

void Sigmoid::Backward(const float* x, const float* y, const float* dy, int batch, float* dx) {
  if (dx == nullptr) return;
  kernels::SigmoidBackward(y, dy, static_cast<int64_t>(batch) * input_size(), dx);
}

}  // namespace fedge::model

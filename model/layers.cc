// The Layer base, the helpers every layer kind shares, and Flatten. The layer kinds live in
// layers_<family>.cc: dense, conv, norm, pool, activation, embedding.
#include "model/layers.h"

#include <cstdint>
#include <cstring>
#include <utility>

namespace fedge::model {
namespace {

int Product(const std::vector<int>& shape) {
  int64_t n = 1;
  for (int d : shape) n *= d;
  return static_cast<int>(n);
}

}  // namespace

Parameter MakeParameter(std::string name, std::vector<int> shape) {
  Parameter p;
  p.name = std::move(name);
  p.shape = std::move(shape);
  p.value.assign(Product(p.shape), 0.0f);
  p.grad.assign(p.value.size(), 0.0f);
  return p;
}

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
// Flatten

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

}  // namespace fedge::model

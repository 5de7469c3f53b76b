// Activations: the scalar references, the portable variant (activation_simd.inc for the
// baseline ISA) and the run-time dispatchers. activation_avx2.cc and activation_avx512.cc
// compile the same source for their ISA (a target attribute on each function).
#include "kernels/activation.h"

#include <cmath>

#define FEDGE_KERNEL_VARIANT(name) name##_portable
#define FEDGE_KERNEL_TARGET
#include "kernels/activation_simd.inc"
#undef FEDGE_KERNEL_VARIANT
#undef FEDGE_KERNEL_TARGET

namespace fedge::kernels {
namespace {

}  // namespace

void Relu_ref(const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] < 0.0f) {
      y[i] = 0.0f;
    } else {
      y[i] = x[i];
    }
  }
}

void ReluBackward_ref(const float* y, const float* dy, int64_t n, float* dx) {
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] > 0.0f) {
      dx[i] = dy[i];
    } else {
      dx[i] = 0.0f;
    }
  }
}

void LeakyRelu_ref(const float* x, int64_t n, float slope, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] > 0.0f) {
      y[i] = x[i];
    } else {
      y[i] = slope * x[i];
    }
  }
}

void LeakyReluBackward_ref(const float* x, const float* dy, int64_t n, float slope,
                           float* dx) {
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] > 0.0f) {
      dx[i] = dy[i];
    } else {
      dx[i] = slope * dy[i];
    }
  }
}

void Sigmoid_ref(const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(-x[i]);
    y[i] = 1.0f / (1.0f + e);
  }
}

void SigmoidBackward_ref(const float* y, const float* dy, int64_t n, float* dx) {
  for (int64_t i = 0; i < n; ++i) {
    const float dy_y = dy[i] * y[i];
    dx[i] = dy_y * (1.0f - y[i]);
  }
}


void Relu(const float* x, int64_t n, float* y, Isa isa) {
  FEDGE_KERNEL_DISPATCH(Relu, x, n, y)
}

void ReluBackward(const float* y, const float* dy, int64_t n, float* dx, Isa isa) {
  FEDGE_KERNEL_DISPATCH(ReluBackward, y, dy, n, dx)
}

void LeakyRelu(const float* x, int64_t n, float slope, float* y, Isa isa) {
  FEDGE_KERNEL_DISPATCH(LeakyRelu, x, n, slope, y)
}

void LeakyReluBackward(const float* x, const float* dy, int64_t n, float slope, float* dx,
                       Isa isa) {
  FEDGE_KERNEL_DISPATCH(LeakyReluBackward, x, dy, n, slope, dx)
}

void Sigmoid(const float* x, int64_t n, float* y, Isa isa) {
  FEDGE_KERNEL_DISPATCH(Sigmoid, x, n, y)
}

void SigmoidBackward(const float* y, const float* dy, int64_t n, float* dx, Isa isa) {
  FEDGE_KERNEL_DISPATCH(SigmoidBackward, y, dy, n, dx)
}


}  // namespace fedge::kernels

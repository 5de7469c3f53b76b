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

Isa Usable(Isa isa) {
  while (isa > Isa::kPortable && !CpuSupports(isa)) {
    isa = static_cast<Isa>(static_cast<int>(isa) - 1);
  }
  return isa;
}

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

// The dispatchers. FEDGE_ACTIVATION_DISPATCH(fn, args) picks fn's variant for `isa`.
#if FEDGE_KERNELS_X86
#define FEDGE_ACTIVATION_DISPATCH(fn, ...)  \
  switch (Usable(isa)) {                    \
    case Isa::kAvx512Vnni:                  \
      return fn##_avx512(__VA_ARGS__);      \
    case Isa::kAvx2:                        \
      return fn##_avx2(__VA_ARGS__);        \
    case Isa::kRef:                         \
      return fn##_ref(__VA_ARGS__);         \
    default: /* kPortable */                \
      return fn##_portable(__VA_ARGS__);    \
  }
#else
#define FEDGE_ACTIVATION_DISPATCH(fn, ...)  \
  switch (Usable(isa)) {                    \
    case Isa::kRef:                         \
      return fn##_ref(__VA_ARGS__);         \
    default: /* kPortable */                \
      return fn##_portable(__VA_ARGS__);    \
  }
#endif

void Relu(const float* x, int64_t n, float* y, Isa isa) {
  FEDGE_ACTIVATION_DISPATCH(Relu, x, n, y)
}

void ReluBackward(const float* y, const float* dy, int64_t n, float* dx, Isa isa) {
  FEDGE_ACTIVATION_DISPATCH(ReluBackward, y, dy, n, dx)
}

void LeakyRelu(const float* x, int64_t n, float slope, float* y, Isa isa) {
  FEDGE_ACTIVATION_DISPATCH(LeakyRelu, x, n, slope, y)
}

void LeakyReluBackward(const float* x, const float* dy, int64_t n, float slope, float* dx,
                       Isa isa) {
  FEDGE_ACTIVATION_DISPATCH(LeakyReluBackward, x, dy, n, slope, dx)
}

void Sigmoid(const float* x, int64_t n, float* y, Isa isa) {
  FEDGE_ACTIVATION_DISPATCH(Sigmoid, x, n, y)
}

void SigmoidBackward(const float* y, const float* dy, int64_t n, float* dx, Isa isa) {
  FEDGE_ACTIVATION_DISPATCH(SigmoidBackward, y, dy, n, dx)
}

#undef FEDGE_ACTIVATION_DISPATCH

}  // namespace fedge::kernels

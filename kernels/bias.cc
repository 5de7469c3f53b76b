// Bias add and its gradient: the scalar references, the portable variant (bias_simd.inc for
// the baseline ISA) and the run-time dispatchers. bias_avx2.cc and bias_avx512.cc compile the
// same source for their ISA (a target attribute on each function).
#include "kernels/bias.h"

#define FEDGE_KERNEL_VARIANT(name) name##_portable
#define FEDGE_KERNEL_TARGET
#include "kernels/bias_simd.inc"
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

void BiasAdd_ref(float* y, int64_t rows, int cols, const float* bias) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int j = 0; j < cols; ++j) y[r * cols + j] += bias[j];
  }
}

void BiasAddTransposed_ref(const float* yt, int64_t rows, int cols, const float* bias,
                           float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int j = 0; j < cols; ++j) {
      const float b = bias != nullptr ? bias[j] : 0.0f;
      y[r * cols + j] = yt[j * rows + r] + b;
    }
  }
}

void BiasAddGrad_ref(const float* dy, int64_t rows, int cols, float* db) {
  for (int j = 0; j < cols; ++j) {
    float sum = db[j];
    for (int64_t r = 0; r < rows; ++r) sum += dy[r * cols + j];
    db[j] = sum;
  }
}

// The dispatchers. FEDGE_BIAS_DISPATCH(fn, args) picks fn's variant for `isa`.
#if FEDGE_KERNELS_X86
#define FEDGE_BIAS_DISPATCH(fn, ...)     \
  switch (Usable(isa)) {                 \
    case Isa::kAvx512Vnni:               \
      return fn##_avx512(__VA_ARGS__);   \
    case Isa::kAvx2:                     \
      return fn##_avx2(__VA_ARGS__);     \
    case Isa::kRef:                      \
      return fn##_ref(__VA_ARGS__);      \
    default: /* kPortable */             \
      return fn##_portable(__VA_ARGS__); \
  }
#else
#define FEDGE_BIAS_DISPATCH(fn, ...)     \
  switch (Usable(isa)) {                 \
    case Isa::kRef:                      \
      return fn##_ref(__VA_ARGS__);      \
    default: /* kPortable */             \
      return fn##_portable(__VA_ARGS__); \
  }
#endif

void BiasAdd(float* y, int64_t rows, int cols, const float* bias, Isa isa) {
  FEDGE_BIAS_DISPATCH(BiasAdd, y, rows, cols, bias)
}

void BiasAddTransposed(const float* yt, int64_t rows, int cols, const float* bias, float* y,
                       Isa isa) {
  FEDGE_BIAS_DISPATCH(BiasAddTransposed, yt, rows, cols, bias, y)
}

void BiasAddGrad(const float* dy, int64_t rows, int cols, float* db, Isa isa) {
  FEDGE_BIAS_DISPATCH(BiasAddGrad, dy, rows, cols, db)
}

#undef FEDGE_BIAS_DISPATCH

}  // namespace fedge::kernels

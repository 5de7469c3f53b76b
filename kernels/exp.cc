// Exp kernels: the references, the portable variant (exp_simd.inc for the baseline ISA) and
// the run-time dispatchers. exp_avx2.cc and exp_avx512.cc compile the same source per ISA.
#include "kernels/exp.h"

#include <cmath>

#define FEDGE_KERNEL_VARIANT(name) name##_portable
#define FEDGE_KERNEL_TARGET
#include "kernels/exp_simd.inc"
#undef FEDGE_KERNEL_VARIANT
#undef FEDGE_KERNEL_TARGET

namespace fedge::kernels {

float ExpShiftSum_ref(const float* x, int64_t n, float shift, float* y) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    y[i] = std::exp(x[i] - shift);
    sum += y[i];
  }
  return static_cast<float>(sum);
}

void SiluMul_ref(const float* a, const float* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + std::exp(-a[i]));
    y[i] = a[i] * s * b[i];
  }
}

void SiluMulBackward_ref(const float* a, const float* b, const float* dy, int64_t n, float* da,
                         float* db) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + std::exp(-a[i]));
    db[i] = dy[i] * a[i] * s;
    da[i] = dy[i] * b[i] * s * (1.0f + a[i] * (1.0f - s));
  }
}

float ExpShiftSum(const float* x, int64_t n, float shift, float* y, Isa isa) {
  FEDGE_KERNEL_DISPATCH(ExpShiftSum, x, n, shift, y)
}

void SiluMul(const float* a, const float* b, int64_t n, float* y, Isa isa) {
  FEDGE_KERNEL_DISPATCH(SiluMul, a, b, n, y)
}

void SiluMulBackward(const float* a, const float* b, const float* dy, int64_t n, float* da,
                     float* db, Isa isa) {
  FEDGE_KERNEL_DISPATCH(SiluMulBackward, a, b, dy, n, da, db)
}

}  // namespace fedge::kernels

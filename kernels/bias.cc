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


void BiasAdd(float* y, int64_t rows, int cols, const float* bias, Isa isa) {
  FEDGE_KERNEL_DISPATCH(BiasAdd, y, rows, cols, bias)
}

void BiasAddTransposed(const float* yt, int64_t rows, int cols, const float* bias, float* y,
                       Isa isa) {
  FEDGE_KERNEL_DISPATCH(BiasAddTransposed, yt, rows, cols, bias, y)
}

void BiasAddGrad(const float* dy, int64_t rows, int cols, float* db, Isa isa) {
  FEDGE_KERNEL_DISPATCH(BiasAddGrad, dy, rows, cols, db)
}


}  // namespace fedge::kernels

// Bias of a dense or convolution layer whose output is rows × cols (rows = batch, or batch ×
// output positions; cols = output features or channels, innermost):
//   BiasAdd:           y[r, j] += bias[j]
//   BiasAddTransposed: y[r, j] = yt[j, r] + bias[j] (a product computed transposed, as
//                      cols × rows, written back row-major with its bias)
//   BiasAddGrad:       db[j] += Σ_r dy[r, j] (the bias gradient)
//
// Exactness: BiasAdd and BiasAddTransposed are bit-exact with their *_ref functions in
// every variant. BiasAddGrad_ref sums each column's rows in order; the optimized variants
// add groups of rows into lanes first when the columns are few (so that the loop
// vectorizes), which rounds differently: each differs from the reference by at most
// 2·rows·ε·Σ_r |dy[r, j]| (ε = FLT_EPSILON), and the optimized variants are bit-exact with
// each other (the order does not depend on the vector width).
//
// Variants: `*_ref` (scalar, always built), `*_portable` (plain C++ for the auto-vectorizer,
// any CPU), `*_avx2` and `*_avx512` (the portable source compiled with that ISA's flags,
// x86-64 only). The unsuffixed functions pick one at run time (cpu.h).
// REQUIRES (all): the output does not overlap an input.
#ifndef FEDGE_KERNELS_BIAS_H_
#define FEDGE_KERNELS_BIAS_H_

#include <cstdint>

#include "kernels/cpu.h"

namespace fedge::kernels {

void BiasAdd(float* y, int64_t rows, int cols, const float* bias, Isa isa = BestIsa());
// bias == nullptr: y = ytᵀ + 0.0f (which turns −0 into +0).
void BiasAddTransposed(const float* yt, int64_t rows, int cols, const float* bias, float* y,
                       Isa isa = BestIsa());
void BiasAddGrad(const float* dy, int64_t rows, int cols, float* db, Isa isa = BestIsa());

// The variants, for tests and benchmarks. Call only those the CPU supports.
void BiasAdd_ref(float* y, int64_t rows, int cols, const float* bias);
void BiasAddTransposed_ref(const float* yt, int64_t rows, int cols, const float* bias,
                           float* y);
void BiasAddGrad_ref(const float* dy, int64_t rows, int cols, float* db);

void BiasAdd_portable(float* y, int64_t rows, int cols, const float* bias);
void BiasAddTransposed_portable(const float* yt, int64_t rows, int cols, const float* bias,
                                float* y);
void BiasAddGrad_portable(const float* dy, int64_t rows, int cols, float* db);

void BiasAdd_avx2(float* y, int64_t rows, int cols, const float* bias);
void BiasAddTransposed_avx2(const float* yt, int64_t rows, int cols, const float* bias,
                            float* y);
void BiasAddGrad_avx2(const float* dy, int64_t rows, int cols, float* db);

void BiasAdd_avx512(float* y, int64_t rows, int cols, const float* bias);
void BiasAddTransposed_avx512(const float* yt, int64_t rows, int cols, const float* bias,
                              float* y);
void BiasAddGrad_avx512(const float* dy, int64_t rows, int cols, float* db);

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_BIAS_H_

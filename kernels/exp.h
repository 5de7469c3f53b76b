// Exponential-based elementwise kernels of the language model's training step:
//   ExpShiftSum:     y[i] = e^(x[i] − shift) for n floats; returns Σ y[i] (softmax rows,
//                    cross-entropy over the vocabulary)
//   SiluMul:         y = silu(a)·b = a·σ(a)·b (the SwiGLU gate)
//   SiluMulBackward: da = dy·b·σ(a)·(1 + a·(1 − σ(a))), db = dy·a·σ(a)
//
// The optimized variants compute e^x with Cephes' expf scheme, in plain float operations the
// auto-vectorizer turns into SIMD: x is clamped to [−87, 88] (so e^x stays a normal float:
// softmax terms below e^−87 ≈ 1.6e−38 count as that, σ saturates exactly as in float), split
// as x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r by a degree-7 polynomial, then scaled by 2^n
// through the exponent bits. Relative error ≤ 2e−7 against the *_ref functions' std::exp
// (tested); the sum runs over 16 partial sums. Not bit-exact with the references: the tests
// state the tolerance.
//
// Variants: `*_ref` (std::exp, always built), `*_portable` (exp_simd.inc for the baseline
// ISA), `*_avx2` and `*_avx512` (the same source with that ISA's target), chosen at run time.
// REQUIRES (all): outputs do not overlap inputs.
#ifndef FEDGE_KERNELS_EXP_H_
#define FEDGE_KERNELS_EXP_H_

#include <cstdint>

#include "kernels/cpu.h"

namespace fedge::kernels {

float ExpShiftSum(const float* x, int64_t n, float shift, float* y, Isa isa = BestIsa());
void SiluMul(const float* a, const float* b, int64_t n, float* y, Isa isa = BestIsa());
void SiluMulBackward(const float* a, const float* b, const float* dy, int64_t n, float* da,
                     float* db, Isa isa = BestIsa());

float ExpShiftSum_ref(const float* x, int64_t n, float shift, float* y);
void SiluMul_ref(const float* a, const float* b, int64_t n, float* y);
void SiluMulBackward_ref(const float* a, const float* b, const float* dy, int64_t n, float* da,
                         float* db);

float ExpShiftSum_portable(const float* x, int64_t n, float shift, float* y);
void SiluMul_portable(const float* a, const float* b, int64_t n, float* y);
void SiluMulBackward_portable(const float* a, const float* b, const float* dy, int64_t n,
                              float* da, float* db);

float ExpShiftSum_avx2(const float* x, int64_t n, float shift, float* y);
void SiluMul_avx2(const float* a, const float* b, int64_t n, float* y);
void SiluMulBackward_avx2(const float* a, const float* b, const float* dy, int64_t n, float* da,
                          float* db);

float ExpShiftSum_avx512(const float* x, int64_t n, float shift, float* y);
void SiluMul_avx512(const float* a, const float* b, int64_t n, float* y);
void SiluMulBackward_avx512(const float* a, const float* b, const float* dy, int64_t n,
                            float* da, float* db);

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_EXP_H_

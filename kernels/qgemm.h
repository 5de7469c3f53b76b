// int8 GEMM: s8 activations × s8 weights → s32, with a float epilogue.
//
//   acc[i][j] = Σ_k xq[i][k] · wq[j][k]                      (exact, int32)
//   y[i][j]   = fma(float(acc), x.scale · w.scales[j], bias[j])   (then max(y, 0) if relu)
//
// The epilogue is written with one fused multiply-add so that every variant rounds exactly
// like QGemmS8_ref: all variants are bit-exact with the reference, int32 and float results.
// VNNI's vpdpbusd wants u8 × s8: its variant adds 128 to activations (xor 0x80) and subtracts
// 128 · row_sums[j]. AVX2 has no exact u8×s8 product (vpmaddubsw saturates), so its variant
// widens to s16 and uses vpmaddwd.
#ifndef FEDGE_KERNELS_QGEMM_H_
#define FEDGE_KERNELS_QGEMM_H_

#include <cstdint>

#include "kernels/cpu.h"
#include "kernels/quantize.h"

namespace fedge::kernels {

struct Epilogue {
  const float* bias = nullptr;  // n values, or null for none
  bool relu = false;
};

// acc (x.m × w.n, row stride ldacc ≥ w.n) = x · wᵀ, exact. REQUIRES x.k == w.k.
void QGemmS8Int32(const QuantizedActivations& x, const PackedWeightsS8& w, int32_t* acc,
                  int ldacc, Isa isa = BestIsa());

// y (x.m × w.n, row stride ldy ≥ w.n) = epilogue(x · wᵀ). REQUIRES x.k == w.k.
void QGemmS8(const QuantizedActivations& x, const PackedWeightsS8& w, const Epilogue& epi,
             float* y, int ldy, Isa isa = BestIsa());

// The variants by name (tests call each against the reference).
void QGemmS8Int32_ref(const QuantizedActivations&, const PackedWeightsS8&, int32_t*, int);
void QGemmS8_ref(const QuantizedActivations&, const PackedWeightsS8&, const Epilogue&, float*,
                 int);

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_QGEMM_H_

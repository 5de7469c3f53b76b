// Direct convolution for few channels: the NHWC convolution's forward product and weight
// gradient computed from the input itself, with no im2col matrix.
//
// Why: the zoo's convolutions (28×28×1 → 6 and 12×12×6 → 16 channels, 5×5) give im2col +
// GEMM a K of 25 or 150 and an N of 6 or 16: the GEMM spends its time packing operands and
// the im2col matrix is 25× the input. Here each output row is computed in registers:
// `lanes` output channels per vector (8 when Cout ≤ 8, else 16), a block of output columns
// per set of accumulators, and the (kernel column, input channel) pairs of one kernel row
// walked as one contiguous run of the NHWC input row (stride 1 only).
//
// Layouts (weights as the layers keep them, W [Cout, K, K, Cin]):
//   packed weights  wp[(kh·K + kw)·Cin + ci][co], rows of Padded(Cout) floats, 0 past Cout
//   (PackConvWeights). With one input channel the vectors run along the output row instead
//   (a row of the input is then contiguous) and the weights are read one by one.
//   The input gradient is not here: computed directly it is the adjoint convolution of dy
//   padded by K − 1 − padding, and its products with that padding cost more than the GEMM
//   dcols = dy · W plus col2im (the cnn's training step with its 12×12×6 → 16 layer's dx
//   computed either way, AMD Zen 5: 35.0k against 29.4k samples/s).
//
// Numerics: every variant sums in float; the order differs between variants (the optimized
// ones use fused multiply-adds and block the sums), so results agree with the *_ref functions
// within float rounding: |Δ| ≤ 1e-5 · Σ|terms| (tested), not bit for bit.
//
// Variants: `*_ref` (scalar loops in the textbook order), `*_portable` (vector extensions,
// any CPU), `*_avx2` and `*_avx512` (the same source with that ISA's target, x86-64 only).
// The unsuffixed functions pick one at run time (cpu.h).
#ifndef FEDGE_KERNELS_CONV_DIRECT_H_
#define FEDGE_KERNELS_CONV_DIRECT_H_

#include <cstdint>

#include "kernels/conv.h"
#include "kernels/cpu.h"

namespace fedge::kernels {

// True when the direct kernels handle this convolution: stride 1, padding < kernel, and
// few enough channels that their registers hold a block (Cin ≤ 64, Cout ≤ 64).
bool DirectConvSupported(const ConvGeometry& g, int cout);

// Output channels per vector for `cout` channels: 8 when cout ≤ 8, else 16.
int DirectConvLanes(int cout);
// cout rounded up to DirectConvLanes(cout).
int DirectConvPadded(int cout);

// wp [K·K·Cin, DirectConvPadded(cout)] from W [cout, K, K, Cin] (zeros past cout).
void PackConvWeights(const ConvGeometry& g, int cout, const float* w, float* wp);
// y [batch, OH, OW, cout] = conv(x [batch, H, W, Cin], wp) + bias (bias may be null).
// `scratch` holds one padded example (when g.padding > 0 or there is one input channel):
// at least DirectConvScratch(g) floats. REQUIRES: DirectConvSupported(g, cout); y does not overlap x.
int64_t DirectConvScratch(const ConvGeometry& g);
void ConvDirect(const ConvGeometry& g, int cout, const float* x, int batch, const float* wp,
                const float* bias, float* y, float* scratch, Isa isa = BestIsa());

// dw [cout, K, K, Cin] += Σ over the batch's output positions of dy[pos, co] · x[window],
// and db [cout] += Σ dy[pos, co] when db is not null (the bias gradient, while dy is in
// cache). `scratch`: at least DirectConvGradScratch(g, cout) floats.
int64_t DirectConvGradScratch(const ConvGeometry& g, int cout);
void ConvDirectWeightGrad(const ConvGeometry& g, int cout, const float* x, const float* dy,
                          int batch, float* dw, float* db, float* scratch,
                          Isa isa = BestIsa());

// The variants, for tests and benchmarks. Call only those the CPU supports.
void ConvDirect_ref(const ConvGeometry& g, int cout, const float* x, int batch,
                    const float* wp, const float* bias, float* y, float* scratch);
void ConvDirect_portable(const ConvGeometry& g, int cout, const float* x, int batch,
                         const float* wp, const float* bias, float* y, float* scratch);
void ConvDirect_avx2(const ConvGeometry& g, int cout, const float* x, int batch,
                     const float* wp, const float* bias, float* y, float* scratch);
void ConvDirect_avx512(const ConvGeometry& g, int cout, const float* x, int batch,
                       const float* wp, const float* bias, float* y, float* scratch);
void ConvDirectWeightGrad_ref(const ConvGeometry& g, int cout, const float* x,
                              const float* dy, int batch, float* dw, float* db,
                              float* scratch);
void ConvDirectWeightGrad_portable(const ConvGeometry& g, int cout, const float* x,
                                   const float* dy, int batch, float* dw, float* db,
                                   float* scratch);
void ConvDirectWeightGrad_avx2(const ConvGeometry& g, int cout, const float* x,
                               const float* dy, int batch, float* dw, float* db,
                               float* scratch);
void ConvDirectWeightGrad_avx512(const ConvGeometry& g, int cout, const float* x,
                                 const float* dy, int batch, float* dw, float* db,
                                 float* scratch);

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_CONV_DIRECT_H_

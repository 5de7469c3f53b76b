// int4 weights in blocks of 32 values with one fp16 scale: 18 bytes per 32 weights, 4.5
// bits/weight, the layout of ggml's block_q4_0.
//
//   quantize a block: a = the value of largest magnitude (with its sign), d = a / -8,
//     q = clamp(round_half_even(x / d) + 8, 0, 15) (d = 0 gives q = 8); stored d is fp16
//   dequantize: x ≈ (q - 8) · d
//
// GEMM with int4 weights × int8 activations (QuantizedActivations), per output element:
//   acc = 0.0f; for each block b in order: acc = fma(float(Σ_{32 k in b} xq·(q - 8)), d_b, acc)
//   y = fma(acc, x.scale, bias[j])   (then max(y, 0) if relu)
// Every variant performs exactly these float operations in this order, so every variant is
// bit-exact with QGemmQ4_ref.
#ifndef FEDGE_KERNELS_Q4_H_
#define FEDGE_KERNELS_Q4_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/qgemm.h"
#include "kernels/quantize.h"

namespace fedge::kernels {

struct BlockQ4 {
  uint16_t d;        // fp16 scale (IEEE binary16 bits)
  uint8_t qs[16];    // q[i] in the low nibble of qs[i], q[i + 16] in the high nibble
};
static_assert(sizeof(BlockQ4) == 18, "BlockQ4 must be 18 bytes (4.5 bits per weight)");
inline constexpr int kQ4Block = 32;

uint16_t FloatToHalf(float f);   // round to nearest even; overflow → ±inf
float HalfToFloat(uint16_t h);

// Quantizes n = count values (count a multiple of 32) into count/32 blocks.
void QuantizeRowQ4(const float* x, int count, BlockQ4* out);
void DequantizeRowQ4(const BlockQ4* blocks, int count, float* out);

// Weights W (n × k) in int4 blocks along k (k zero-padded to PadK(k)), packed for the GEMM.
// The storage and transfer form is `blocks` (n rows × k_padded/32 blocks, row-major, 4.5
// bits/weight). The GEMM form (`packed`, `scales`, `sums`) is derived from it by PackQ4 in a
// layout chosen by the implementation; it trades memory for speed: `packed` holds each weight
// as one byte (q - 8), so the GEMM reads 8 bits/weight and does no nibble unpacking per call.
struct PackedWeightsQ4 {
  int n = 0;
  int k = 0;
  int k_padded = 0;
  std::vector<BlockQ4> blocks;   // n × (k_padded / 32)
  // implementation-defined GEMM layout of q - 8, one byte each, 64-byte aligned
  std::vector<int8_t, CacheLineAllocator<int8_t>> packed;
  std::vector<float> scales;     // implementation-defined GEMM layout of the block scales
  std::vector<int32_t> sums;     // implementation-defined per-block sums of q - 8
  int blocks_per_row() const { return k_padded / kQ4Block; }
};

void QuantizeWeightsQ4(const float* w, int n, int k, int ldw, PackedWeightsQ4* out);
// Rebuilds w->packed and w->scales from w->n, w->k, w->k_padded and w->blocks (e.g. after
// receiving the blocks over the wire). QuantizeWeightsQ4 calls it.
void PackQ4(PackedWeightsQ4* w);
void DequantizeWeightsQ4(const PackedWeightsQ4& w, float* out, int ldo);

// y (x.m × w.n, row stride ldy) = the formula above. REQUIRES x.k == w.k.
void QGemmQ4(const QuantizedActivations& x, const PackedWeightsQ4& w, const Epilogue& epi,
             float* y, int ldy, Isa isa = BestIsa());
void QGemmQ4_ref(const QuantizedActivations&, const PackedWeightsQ4&, const Epilogue&, float*,
                 int);

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_Q4_H_

// int8 and int4-weight GEMMs for aarch64 with the int8 matrix-multiply extension (SMMLA,
// FEAT_I8MM; built with FEDGE_NEONI8MM_FLAGS only, chosen at run time when the kernel's
// HWCAP2 has I8MM).
//
// SMMLA multiplies a 2×8 block of s8 by the transpose of another 2×8 block into a 2×2 block
// of int32: twice the products of SDOT per instruction. Its operands are 8 consecutive k of
// two rows and of two channels. The activations' rows are contiguous along k already; the
// packed weights (qgemm.h) hold 4 k per channel at each k4, so the channel pairs' 8 k are
// built by interleaving the 32-bit groups of two consecutive k4 (vzip1q_s32/vzip2q_s32 of
// two 16-byte loads give channels 4q, 4q+1 and 4q+2, 4q+3). The 2×2 accumulators are put back
// into rows (vzip on 64-bit lanes) for the epilogue, which is the reference's: one fma, then
// relu as (y > 0 ? y : 0). Every result is bit for bit the reference's.
//
// int8: 4 rows (2 row pairs) × one panel of 16 channels (8 channel pairs) = 16 accumulators,
// 8 weight and 2 activation registers. int4: 2 rows × one panel, per 32-k block int32 then
// one fma into float accumulators per row, in q4.h's order.
#include <arm_neon.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "kernels/qkernels_isa.h"

namespace fedge::kernels::qdetail {
namespace {

#include "kernels/qgemm_neon.inc"

// The 8 channel pairs' operands for k = k0 .. k0 + 7: b[cp] = [channel 2cp: 8 k | 2cp + 1: 8 k].
inline void LoadPairs(const int8_t* wp, int k0, int8x16_t b[8]) {
  const int8_t* w = wp + (k0 / 4) * 64;
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const int32x4_t lo = vreinterpretq_s32_s8(vld1q_s8(w + 16 * q));       // k0 .. k0+3
    const int32x4_t hi = vreinterpretq_s32_s8(vld1q_s8(w + 64 + 16 * q));  // k0+4 .. k0+7
    b[2 * q] = vreinterpretq_s8_s32(vzip1q_s32(lo, hi));
    b[2 * q + 1] = vreinterpretq_s8_s32(vzip2q_s32(lo, hi));
  }
}

// acc[rp][cp] += rows (2rp, 2rp+1) × channels (2cp, 2cp+1) over 8 k from k0, for RP row pairs.
template <int RP>
inline void Step8(const int8_t* const* xr, const int8_t* wp, int k0, int32x4_t acc[][8]) {
  int8x16_t b[8];
  LoadPairs(wp, k0, b);
#pragma GCC unroll 2
  for (int rp = 0; rp < RP; ++rp) {
    const int8x16_t a = vcombine_s8(vld1_s8(xr[2 * rp] + k0), vld1_s8(xr[2 * rp + 1] + k0));
#pragma GCC unroll 8
    for (int cp = 0; cp < 8; ++cp) acc[rp][cp] = vmmlaq_s32(acc[rp][cp], a, b[cp]);
  }
}

// Row 2rp + h (h = 0, 1) of row pair rp's 2×2 blocks as 4 vectors of 4 channels.
inline void RowOf(const int32x4_t acc[8], int h, int32x4_t out[4]) {
  for (int q = 0; q < 4; ++q) {
    const int64x2_t a = vreinterpretq_s64_s32(acc[2 * q]), b = vreinterpretq_s64_s32(acc[2 * q + 1]);
    out[q] = vreinterpretq_s32_s64(h == 0 ? vzip1q_s64(a, b) : vzip2q_s64(a, b));
  }
}

template <int RP>
void KernelS8(const int8_t* const* xr, int mr, const int8_t* wp, int k8n, const S8Epilogue* epi,
              float* y, int32_t* out, int ld, int valid) {
  int32x4_t acc[RP][8];
  for (int rp = 0; rp < RP; ++rp) {
    for (int cp = 0; cp < 8; ++cp) acc[rp][cp] = vdupq_n_s32(0);
  }
  for (int k8 = 0; k8 < k8n; ++k8) Step8<RP>(xr, wp, 8 * k8, acc);
  for (int r = 0; r < mr; ++r) {
    int32x4_t row[4];
    RowOf(acc[r / 2], r % 2, row);
    if (out != nullptr) {
      StoreRow(row, out + static_cast<size_t>(r) * ld, valid);
    } else {
      epi->StoreRow(row, y + static_cast<size_t>(r) * ld, valid);
    }
  }
}

void KernelQ4(const int8_t* const* xr, int mr, const int8_t* wp, int blocks, const float* d,
              const float* bias, float x_scale, bool relu, float* y, int ld, int valid) {
  float32x4_t facc[2][4];
  for (int r = 0; r < 2; ++r) {
    for (int q = 0; q < 4; ++q) facc[r][q] = vdupq_n_f32(0.0f);
  }
  for (int blk = 0; blk < blocks; ++blk) {
    int32x4_t acc[1][8];
    for (int cp = 0; cp < 8; ++cp) acc[0][cp] = vdupq_n_s32(0);
    for (int k8 = 0; k8 < 4; ++k8) Step8<1>(xr, wp, 32 * blk + 8 * k8, acc);
    const float* db = d + static_cast<size_t>(blk) * kP;
    for (int r = 0; r < 2; ++r) {
      int32x4_t row[4];
      RowOf(acc[0], r, row);
      for (int q = 0; q < 4; ++q) {
        facc[r][q] = vfmaq_f32(facc[r][q], vcvtq_f32_s32(row[q]), vld1q_f32(db + 4 * q));
      }
    }
  }
  for (int r = 0; r < mr; ++r) {
    StoreQ4Row(facc[r], bias, x_scale, relu, y + static_cast<size_t>(r) * ld, valid);
  }
}

}  // namespace

void QGemmS8_neoni8mm(const QuantizedActivations& x, const PackedWeightsS8& w,
                      const Epilogue* epi, float* y, int32_t* acc, int ld) {
  const int k8n = (x.k + 7) / 8;
  const size_t pstride = static_cast<size_t>(w.k_padded) * kP;
  ForEachTile<4>(x, w.n, epi != nullptr ? epi->bias : nullptr,
                 [&](int p, int j0, int valid, const float* bias, int i0, int mr,
                     const int8_t* const* xr) {
    const int8_t* wp = w.packed.data() + p * pstride;
    float* yo = y != nullptr ? y + static_cast<size_t>(i0) * ld + j0 : nullptr;
    int32_t* ao = acc != nullptr ? acc + static_cast<size_t>(i0) * ld + j0 : nullptr;
    std::optional<S8Epilogue> e;
    if (epi != nullptr) e.emplace(w.scales.data() + j0, bias, x.scale, epi->relu);
    const S8Epilogue* ep = e.has_value() ? &*e : nullptr;
    if (mr > 2) {
      KernelS8<2>(xr, mr, wp, k8n, ep, yo, ao, ld, valid);
    } else {
      KernelS8<1>(xr, mr, wp, k8n, ep, yo, ao, ld, valid);
    }
  });
}

void QGemmQ4_neoni8mm(const QuantizedActivations& x, const PackedWeightsQ4& w,
                      const Epilogue& epi, float* y, int ldy) {
  const int nb = w.blocks_per_row();
  const int blocks = (x.k + kQ4Block - 1) / kQ4Block;  // blocks past k are all zero
  ForEachTile<2>(x, w.n, epi.bias, [&](int p, int j0, int valid, const float* bias, int i0,
                                       int mr, const int8_t* const* xr) {
    KernelQ4(xr, mr, w.packed.data() + p * Q4PanelBytes(w.k_padded), blocks,
             w.scales.data() + static_cast<size_t>(p) * nb * kP, bias, x.scale, epi.relu,
             y + static_cast<size_t>(i0) * ldy + j0, ldy, valid);
  });
}

}  // namespace fedge::kernels::qdetail

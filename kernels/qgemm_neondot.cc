// int8 and int4-weight GEMMs for aarch64 with the dotprod extension (built with
// FEDGE_NEONDOT_FLAGS only; chosen at run time when the kernel's HWCAP has ASIMDDP).
//
// SDOT multiplies s8 × s8 in groups of 4 into int32 lanes, which is the packed weight layout
// as it stands (qgemm.h, q4.h): at each k4 (4 consecutive k) a panel holds 16 channels × 4
// bytes, so one 16-byte load is 4 channels' 4 weights and `vdotq_laneq_s32(acc, w, x, t)` adds
// each channel's 4 products with the t-th 4-byte group of 16 activation bytes. No offset
// correction is needed (VNNI's u8 × s8 needs one), and no widening (AVX2 needs one).
//
// int8 microkernel: 4 rows × one panel of 16 channels = 16 int32x4 accumulators, with 4 weight
// and 4 activation registers (24 of the 32 vector registers); K advances 16 at a time (the
// operands are zero padded to a multiple of 64). int4: the same inner loop over one 32-k
// block into fresh int32 accumulators, then one fma per block with the block scale into float
// accumulators, as q4.h orders the operations; 2 rows × one panel (8 int32 + 8 float
// accumulators). The epilogue is the reference's: one fma, then relu as (y > 0 ? y : 0)
// (a bit select: FMAX would propagate a NaN the reference maps to 0). Every result is bit
// for bit the reference's.
#include <arm_neon.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "kernels/qkernels_isa.h"

namespace fedge::kernels::qdetail {
namespace {

#include "kernels/qgemm_neon.inc"

// acc[r][q] += Σ over 16 k from k0 of x[r][k] · w[channel 4q + lane][k], for MR rows.
template <int MR>
inline void Dot16(const int8_t* const* xr, const int8_t* wp, int k0, int32x4_t acc[][4]) {
  int8x16_t xv[MR];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) xv[r] = vld1q_s8(xr[r] + k0);
  const int8_t* w = wp + (k0 / 4) * 64;
#pragma GCC unroll 4
  for (int t = 0; t < 4; ++t) {
    int8x16_t wv[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) wv[q] = vld1q_s8(w + t * 64 + 16 * q);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        switch (t) {  // the lane must be a constant
          case 0: acc[r][q] = vdotq_laneq_s32(acc[r][q], wv[q], xv[r], 0); break;
          case 1: acc[r][q] = vdotq_laneq_s32(acc[r][q], wv[q], xv[r], 1); break;
          case 2: acc[r][q] = vdotq_laneq_s32(acc[r][q], wv[q], xv[r], 2); break;
          default: acc[r][q] = vdotq_laneq_s32(acc[r][q], wv[q], xv[r], 3); break;
        }
      }
    }
  }
}

template <int MR>
void KernelS8(const int8_t* const* xr, const int8_t* wp, int k16n, const S8Epilogue* epi,
              float* y, int32_t* out, int ld, int valid) {
  int32x4_t acc[MR][4];
  for (int r = 0; r < MR; ++r) {
    for (int q = 0; q < 4; ++q) acc[r][q] = vdupq_n_s32(0);
  }
  for (int k16 = 0; k16 < k16n; ++k16) Dot16<MR>(xr, wp, 16 * k16, acc);
  for (int r = 0; r < MR; ++r) {
    if (out != nullptr) {
      StoreRow(acc[r], out + static_cast<size_t>(r) * ld, valid);
    } else {
      epi->StoreRow(acc[r], y + static_cast<size_t>(r) * ld, valid);
    }
  }
}

template <int MR>
void KernelQ4(const int8_t* const* xr, const int8_t* wp, int blocks, const float* d,
              const float* bias, float x_scale, bool relu, float* y, int ld, int valid) {
  float32x4_t facc[MR][4];
  for (int r = 0; r < MR; ++r) {
    for (int q = 0; q < 4; ++q) facc[r][q] = vdupq_n_f32(0.0f);
  }
  for (int b = 0; b < blocks; ++b) {
    int32x4_t acc[MR][4];
    for (int r = 0; r < MR; ++r) {
      for (int q = 0; q < 4; ++q) acc[r][q] = vdupq_n_s32(0);
    }
    Dot16<MR>(xr, wp, 32 * b, acc);
    Dot16<MR>(xr, wp, 32 * b + 16, acc);
    const float* db = d + static_cast<size_t>(b) * kP;
    for (int q = 0; q < 4; ++q) {
      const float32x4_t dq = vld1q_f32(db + 4 * q);
      for (int r = 0; r < MR; ++r) {
        facc[r][q] = vfmaq_f32(facc[r][q], vcvtq_f32_s32(acc[r][q]), dq);  // fma(isum, d, acc)
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    StoreQ4Row(facc[r], bias, x_scale, relu, y + static_cast<size_t>(r) * ld, valid);
  }
}

}  // namespace

void QGemmS8_neondot(const QuantizedActivations& x, const PackedWeightsS8& w,
                     const Epilogue* epi, float* y, int32_t* acc, int ld) {
  const int k16n = (x.k + 15) / 16;
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
    switch (mr) {
      case 4: KernelS8<4>(xr, wp, k16n, ep, yo, ao, ld, valid); break;
      case 3: KernelS8<3>(xr, wp, k16n, ep, yo, ao, ld, valid); break;
      case 2: KernelS8<2>(xr, wp, k16n, ep, yo, ao, ld, valid); break;
      default: KernelS8<1>(xr, wp, k16n, ep, yo, ao, ld, valid); break;
    }
  });
}

void QGemmQ4_neondot(const QuantizedActivations& x, const PackedWeightsQ4& w,
                     const Epilogue& epi, float* y, int ldy) {
  const int nb = w.blocks_per_row();
  const int blocks = (x.k + kQ4Block - 1) / kQ4Block;  // blocks past k are all zero
  ForEachTile<2>(x, w.n, epi.bias, [&](int p, int j0, int valid, const float* bias, int i0,
                                       int mr, const int8_t* const* xr) {
    const int8_t* wp = w.packed.data() + p * Q4PanelBytes(w.k_padded);
    const float* d = w.scales.data() + static_cast<size_t>(p) * nb * kP;
    float* yo = y + static_cast<size_t>(i0) * ldy + j0;
    if (mr == 2) {
      KernelQ4<2>(xr, wp, blocks, d, bias, x.scale, epi.relu, yo, ldy, valid);
    } else {
      KernelQ4<1>(xr, wp, blocks, d, bias, x.scale, epi.relu, yo, ldy, valid);
    }
  });
}

}  // namespace fedge::kernels::qdetail

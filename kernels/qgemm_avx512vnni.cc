// int8 GEMM for AVX-512 VNNI (built with FEDGE_AVX512_FLAGS only).
//
// vpdpbusd multiplies u8 × s8, so each block of kMr activation rows is copied once, xor 0x80
// (u = x + 128), into a small L1-resident buffer, and the accumulators start at
// -128 · row_sums[j]: Σ (x + 128)·w - 128·Σ w = Σ x·w, exact in wrapping int32 arithmetic.
//
// Microkernel: kMr = 6 rows × NP ≤ 4 panels of 16 channels = up to 24 zmm accumulators. Per k4
// (4 consecutive k): NP 64-byte weight loads, kMr 4-byte activation broadcasts, kMr·NP
// vpdpbusd; K is the innermost loop and the epilogue runs once per tile. Only ceil(k/4) k4
// steps run (the padding is zero in both operands). Panels are split into tiles of at most 4,
// balanced (13 panels → 4+3+3+3), since a 1-panel tile is load-bound.
//
// int4-weight GEMM: PackQ4 stores the weights as s8 (q - 8) in the int8 panel layout
// (64-byte aligned) with each (panel, block)'s correction -128·Σ(q - 8), so there is no
// per-call unpack pass; the int8 inner loop runs with a float fma per 32-k block (KernelQ4).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/qkernels_isa.h"

namespace fedge::kernels::qdetail {
namespace {

constexpr int kMr = 6;
constexpr int kMaxNp = 4;
constexpr int kP = PackedWeightsS8::kPanel;

struct TileOut {
  float* y;          // float output at (row 0, first channel of the tile), or null
  int32_t* acc;      // int32 output, or null
  int ld;
  const float* scales;  // w.scales + j0 (n_padded entries, always readable)
  const float* bias;    // epi bias + j0, or null (only n - j0 entries readable)
  float x_scale;
  bool relu;
  int valid;            // real channels in the tile (≤ 16·NP)
};

inline __mmask16 PanelMask(int valid, int p) {
  const int v = valid - 16 * p;
  return v >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << v) - 1);
}

// acc += u8(b) · s8(w), per 4-byte group. Inline asm rather than _mm512_dpbusd_epi32: with the
// builtin, GCC 12 copies every accumulator through a temporary and the stack on each
// iteration (objdump of KernelS8<6, 4>), halving the kernel's speed; a "+v" operand keeps the
// accumulator in its zmm register.
inline void Dpbusd(__m512i& acc, __m512i b, __m512i w) {
  asm("vpdpbusd %[w], %[b], %[acc]" : [acc] "+v"(acc) : [b] "v"(b), [w] "v"(w));
}

inline __m512i BroadcastU32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

template <int MR, int NP>
void KernelS8(const uint8_t* xs, int ldxs, const int8_t* w, size_t pstride, int k4n,
              const int32_t* row_sums, const TileOut& o) {
  __m512i acc[MR][NP];
#pragma GCC unroll 4
  for (int p = 0; p < NP; ++p) {
    const __m512i c = _mm512_sub_epi32(
        _mm512_setzero_si512(), _mm512_slli_epi32(_mm512_loadu_si512(row_sums + 16 * p), 7));
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) acc[r][p] = c;
  }
  for (int k4 = 0; k4 < k4n; ++k4) {
    __m512i wv[NP];
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) wv[p] = _mm512_loadu_si512(w + p * pstride + k4 * 64);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m512i b = BroadcastU32(xs + r * ldxs + 4 * k4);
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) Dpbusd(acc[r][p], b, wv[p]);
    }
  }
  if (o.acc != nullptr) {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) {
        _mm512_mask_storeu_epi32(o.acc + static_cast<size_t>(r) * o.ld + 16 * p,
                                 PanelMask(o.valid, p), acc[r][p]);
      }
    }
    return;
  }
  const __m512 xscale = _mm512_set1_ps(o.x_scale);
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int p = 0; p < NP; ++p) {
    const __mmask16 mask = PanelMask(o.valid, p);
    const __m512 s = _mm512_mul_ps(xscale, _mm512_loadu_ps(o.scales + 16 * p));
    const __m512 b = o.bias != nullptr ? _mm512_maskz_loadu_ps(mask, o.bias + 16 * p) : zero;
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][p]), s, b);
      if (o.relu) v = _mm512_max_ps(v, zero);  // v > 0 ? v : 0, as the reference
      _mm512_mask_storeu_ps(o.y + static_cast<size_t>(r) * o.ld + 16 * p, mask, v);
    }
  }
}

using KernelFn = void (*)(const uint8_t*, int, const int8_t*, size_t, int, const int32_t*,
                          const TileOut&);

template <int MR>
constexpr KernelFn KernelFor(int np) {
  return np == 1 ? KernelS8<MR, 1> : np == 2 ? KernelS8<MR, 2> : np == 3 ? KernelS8<MR, 3>
                                                                          : KernelS8<MR, 4>;
}

KernelFn PickKernel(int mr, int np) {
  static const KernelFn table[kMr][kMaxNp] = {
      {KernelFor<1>(1), KernelFor<1>(2), KernelFor<1>(3), KernelFor<1>(4)},
      {KernelFor<2>(1), KernelFor<2>(2), KernelFor<2>(3), KernelFor<2>(4)},
      {KernelFor<3>(1), KernelFor<3>(2), KernelFor<3>(3), KernelFor<3>(4)},
      {KernelFor<4>(1), KernelFor<4>(2), KernelFor<4>(3), KernelFor<4>(4)},
      {KernelFor<5>(1), KernelFor<5>(2), KernelFor<5>(3), KernelFor<5>(4)},
      {KernelFor<6>(1), KernelFor<6>(2), KernelFor<6>(3), KernelFor<6>(4)},
  };
  return table[mr - 1][np - 1];
}

// int4 weights as s8 (q - 8): the same inner loop as KernelS8, with accumulators
// started at the (panel, block) correction -128·Σ(q - 8) and closed every 8 k4 steps (one
// 32-value block) into float accumulators by one fma with the block scale, as q4.h orders.
// int and float accumulators both live in registers: 6 rows × 2 panels = 12 + 12 zmm (of
// 6×2, 4×3, 3×4 and 6×4 with float accumulators in L1, 6×2 measured fastest on Zen 4;
// unpacking the nibbles inside the loop instead of in a pass before it was slower: the
// extra and/shift/sub ops compete with vpdpbusd).
//
// Zen 5 measurements (thread CPU time, best of 9-21; 2026-11): vpdpbusd alone peaks at ~898
// GOP/s and fma shares its two pipes, so the 12 fma per 96 vpdpbusd cap this kernel at 96/108
// = 0.889 of that (a synthetic asm loop: dp+fma 0.88-0.89, dp+cvt+fma 0.86-0.87, ~775 GOP/s),
// while the int8 GEMM (aligned panels) runs at ~0.98 (~870-880 GOP/s): int4/int8 ≤ ~0.89-0.91
// even for a perfect int4 kernel. This template runs a tile from L1 at ~755-785 GOP/s, the
// synthetic loop's level; a hand-written inline-asm 6×2 (fixed registers, no index
// recomputation) measured the same, as did a weight-stationary loop order and replacing
// vcvtdq2ps by a magic-number vsubps. Swapping the operand roles to use vpdpbusd's {1to16}
// broadcast form (u8 weights, s8 activations from memory) was ~6% slower in the synthetic loop.
constexpr int kMrQ4 = 6;
constexpr int kMaxNpQ4 = 2;

template <int MR, int NP>
void KernelQ4(const uint8_t* xs, int ldxs, const int8_t* w, size_t pstride, int k4n,
              const int32_t* corr, size_t cstride, const float* scales, size_t sstride,
              const TileOut& o) {
  __m512 facc[MR][NP];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) facc[r][p] = _mm512_setzero_ps();
  }
  for (int b0 = 0, blk = 0; b0 < k4n; b0 += 8, ++blk) {
    __m512i acc[MR][NP];
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) {
      const __m512i c = _mm512_loadu_si512(corr + p * cstride + blk * 16);
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) acc[r][p] = c;
    }
    auto step = [&](int k4) __attribute__((always_inline)) {
      __m512i wv[NP];
#pragma GCC unroll 4
      for (int p = 0; p < NP; ++p) wv[p] = _mm512_loadu_si512(w + p * pstride + k4 * 64);
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        const __m512i b = BroadcastU32(xs + r * ldxs + 4 * k4);
#pragma GCC unroll 4
        for (int p = 0; p < NP; ++p) Dpbusd(acc[r][p], b, wv[p]);
      }
    };
    // A whole block as a fixed 8-step sequence (a variable trip count here makes GCC keep
    // the accumulators in memory); the last, partial block step by step.
    if (b0 + 8 <= k4n) {
#pragma GCC unroll 8
      for (int kk = 0; kk < 8; ++kk) step(b0 + kk);
    } else {
#pragma GCC unroll 1
      for (int k4 = b0; k4 < k4n; ++k4) step(k4);
    }
#pragma GCC unroll 4
    for (int p = 0; p < NP; ++p) {
      const __m512 d = _mm512_loadu_ps(scales + p * sstride + blk * 16);
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        facc[r][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][p]), d, facc[r][p]);
      }
    }
  }
  const __m512 xscale = _mm512_set1_ps(o.x_scale);
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int p = 0; p < NP; ++p) {
    const __mmask16 mask = PanelMask(o.valid, p);
    const __m512 b = o.bias != nullptr ? _mm512_maskz_loadu_ps(mask, o.bias + 16 * p) : zero;
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      __m512 v = _mm512_fmadd_ps(facc[r][p], xscale, b);
      if (o.relu) v = _mm512_max_ps(v, zero);
      _mm512_mask_storeu_ps(o.y + static_cast<size_t>(r) * o.ld + 16 * p, mask, v);
    }
  }
}

using KernelQ4Fn = void (*)(const uint8_t*, int, const int8_t*, size_t, int, const int32_t*,
                            size_t, const float*, size_t, const TileOut&);

KernelQ4Fn PickKernelQ4(int mr, int np) {
  static const KernelQ4Fn table[kMrQ4][kMaxNpQ4] = {
      {KernelQ4<1, 1>, KernelQ4<1, 2>}, {KernelQ4<2, 1>, KernelQ4<2, 2>},
      {KernelQ4<3, 1>, KernelQ4<3, 2>}, {KernelQ4<4, 1>, KernelQ4<4, 2>},
      {KernelQ4<5, 1>, KernelQ4<5, 2>}, {KernelQ4<6, 1>, KernelQ4<6, 2>},
  };
  return table[mr - 1][np - 1];
}

// xor-0x80 copy of rows [i0, i0 + mr) of x into xs (row stride ldxs, a multiple of 64).
void FlipRows(const QuantizedActivations& x, int i0, int mr, uint8_t* xs, int ldxs) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int r = 0; r < mr; ++r) {
    const int8_t* src = x.row(i0 + r);
    uint8_t* dst = xs + r * ldxs;
    for (int c = 0; c < ldxs && c < x.k_padded; c += 64) {
      _mm512_store_si512(dst + c, _mm512_xor_si512(_mm512_loadu_si512(src + c), flip));
    }
  }
}

}  // namespace

void QGemmS8_avx512vnni(const QuantizedActivations& x, const PackedWeightsS8& w,
                        const Epilogue* epi, float* y, int32_t* acc, int ld) {
  const int m = x.m, n = w.n, k4n = (x.k + 3) / 4;
  if (m == 0 || n == 0) return;
  const int panels = w.n_padded / kP;
  const size_t pstride = static_cast<size_t>(w.k_padded) * kP;
  // xor-0x80 copy of kMr rows, whole 64-byte chunks (rows are zero-padded to k_padded).
  const int ldxs = std::max(64, (4 * k4n + 63) / 64 * 64);
  static thread_local Scratch scratch;
  uint8_t* xs = static_cast<uint8_t*>(scratch.Get(static_cast<size_t>(kMr) * ldxs));
  const int tiles = (panels + kMaxNp - 1) / kMaxNp;

  for (int i0 = 0; i0 < m; i0 += kMr) {
    const int mr = std::min(kMr, m - i0);
    FlipRows(x, i0, mr, xs, ldxs);
    int p0 = 0;
    for (int t = 0; t < tiles; ++t) {
      // Balanced split: the first (panels % tiles) tiles get one more panel.
      const int np = panels / tiles + (t < panels % tiles ? 1 : 0);
      const int j0 = p0 * kP;
      TileOut o;
      o.y = y != nullptr ? y + static_cast<size_t>(i0) * ld + j0 : nullptr;
      o.acc = acc != nullptr ? acc + static_cast<size_t>(i0) * ld + j0 : nullptr;
      o.ld = ld;
      o.scales = w.scales.data() + j0;
      o.bias = epi != nullptr && epi->bias != nullptr ? epi->bias + j0 : nullptr;
      o.x_scale = x.scale;
      o.relu = epi != nullptr && epi->relu;
      o.valid = std::min(np * kP, n - j0);
      PickKernel(mr, np)(xs, ldxs, w.packed.data() + p0 * pstride, pstride, k4n,
                         w.row_sums.data() + j0, o);
      p0 += np;
    }
  }
}

void QGemmQ4_avx512vnni(const QuantizedActivations& x, const PackedWeightsQ4& w,
                        const Epilogue& epi, float* y, int ldy) {
  const int m = x.m, n = w.n, k4n = (x.k + 3) / 4;
  if (m == 0 || n == 0) return;
  const int panels = (n + kQ4Panel - 1) / kQ4Panel;
  const size_t pstride = Q4PanelBytes(w.k_padded);
  const size_t sstride = static_cast<size_t>(w.blocks_per_row()) * 16;
  const int ldxs = std::max(64, (4 * k4n + 63) / 64 * 64);
  static thread_local Scratch scratch;
  uint8_t* xs = static_cast<uint8_t*>(scratch.Get(static_cast<size_t>(kMrQ4) * ldxs));
  const int8_t* wq = w.packed.data();
  const int32_t* corr = w.sums.data();
  const int tiles = (panels + kMaxNpQ4 - 1) / kMaxNpQ4;
  for (int i0 = 0; i0 < m; i0 += kMrQ4) {
    const int mr = std::min(kMrQ4, m - i0);
    FlipRows(x, i0, mr, xs, ldxs);
    int p0 = 0;
    for (int t = 0; t < tiles; ++t) {
      const int np = panels / tiles + (t < panels % tiles ? 1 : 0);
      const int j0 = p0 * kQ4Panel;
      TileOut o;
      o.y = y + static_cast<size_t>(i0) * ldy + j0;
      o.acc = nullptr;
      o.ld = ldy;
      o.scales = nullptr;
      o.bias = epi.bias != nullptr ? epi.bias + j0 : nullptr;
      o.x_scale = x.scale;
      o.relu = epi.relu;
      o.valid = std::min(np * kQ4Panel, n - j0);
      PickKernelQ4(mr, np)(xs, ldxs, wq + p0 * pstride, pstride, k4n, corr + p0 * sstride,
                           sstride, w.scales.data() + p0 * sstride, sstride, o);
      p0 += np;
    }
  }
}

}  // namespace fedge::kernels::qdetail

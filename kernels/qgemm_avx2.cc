// int8 and int4-weight GEMMs for AVX2 (built with FEDGE_AVX2_FLAGS only).
//
// AVX2 has no exact u8×s8 dot product (vpmaddubsw saturates), so both operands are widened
// to s16 and multiplied with vpmaddwd: each block of kMr activation rows is widened once into
// a small buffer; weights are widened on load (vpmovsxbw). Microkernel: kMr = 4 rows × 8
// channels (half a 16-channel panel); one accumulator holds 4 channels × 2 k-pairs, reduced
// with vphaddd at the end of the tile (int8) or of each 32-k block (int4).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/qkernels_isa.h"

namespace fedge::kernels::qdetail {
namespace {

constexpr int kMr = 4;

struct HalfOut {
  float* y;
  int32_t* acc;
  int ld;
  const float* scales;  // per-channel scales (int8) for these 8 channels
  const float* bias;    // or null; `valid` entries readable
  float x_scale;
  bool relu;
  int valid;            // real channels among these 8
  // int4 only: block scales for these 8 channels, block b at q4_scales + b·16.
  const float* q4_scales;
};

// 8 channel sums from two vpmaddwd accumulators (channels 0-3 and 4-7, two halves each).
inline __m256i Reduce8(__m256i a, __m256i b) {
  return _mm256_permute4x64_epi64(_mm256_hadd_epi32(a, b), 0xD8);
}

inline void Store8f(float* dst, __m256 v, int valid) {
  if (valid >= 8) {
    _mm256_storeu_ps(dst, v);
  } else {
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    std::memcpy(dst, t, sizeof(float) * valid);
  }
}

inline __m256 Load8f(const float* src, int valid) {
  if (valid >= 8) return _mm256_loadu_ps(src);
  alignas(32) float t[8] = {};
  std::memcpy(t, src, sizeof(float) * valid);
  return _mm256_load_ps(t);
}

inline __m256 Finish(__m256 v, const HalfOut& o) {
  return o.relu ? _mm256_max_ps(v, _mm256_setzero_ps()) : v;  // v > 0 ? v : 0
}

// kQ4: the weights are unpacked int4 values q - 8 and every 8 k4 steps close a block.
template <int MR, bool kQ4>
void Kernel(const int16_t* xs, int ldxs, const int8_t* w, int k4n, const HalfOut& o) {
  __m256i acc[MR][2];
  __m256 facc[MR];
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    facc[r] = _mm256_setzero_ps();
  }
  const int block = kQ4 ? 8 : k4n;
  for (int b0 = 0, blk = 0; b0 < k4n; b0 += block, ++blk) {
    const int kend = std::min(k4n, b0 + block);
    for (int k4 = b0; k4 < kend; ++k4) {
      const __m256i w0 = _mm256_cvtepi8_epi16(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k4 * 64)));
      const __m256i w1 = _mm256_cvtepi8_epi16(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k4 * 64 + 16)));
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        int64_t xv;
        std::memcpy(&xv, xs + r * ldxs + 4 * k4, 8);
        const __m256i b = _mm256_set1_epi64x(xv);
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(w0, b));
        acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(w1, b));
      }
    }
    if (kQ4) {
      const __m256 d = _mm256_loadu_ps(o.q4_scales + blk * 16);
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Reduce8(acc[r][0], acc[r][1])), d, facc[r]);
        acc[r][0] = acc[r][1] = _mm256_setzero_si256();
      }
    }
  }
  const __m256 bias =
      o.bias != nullptr ? Load8f(o.bias, o.valid) : _mm256_setzero_ps();
  if (kQ4) {
    const __m256 xscale = _mm256_set1_ps(o.x_scale);
    for (int r = 0; r < MR; ++r) {
      Store8f(o.y + static_cast<size_t>(r) * o.ld,
              Finish(_mm256_fmadd_ps(facc[r], xscale, bias), o), o.valid);
    }
    return;
  }
  if (o.acc != nullptr) {
    for (int r = 0; r < MR; ++r) {
      const __m256i s = Reduce8(acc[r][0], acc[r][1]);
      alignas(32) int32_t t[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(t), s);
      std::memcpy(o.acc + static_cast<size_t>(r) * o.ld, t, sizeof(int32_t) * o.valid);
    }
    return;
  }
  const __m256 s = _mm256_mul_ps(_mm256_set1_ps(o.x_scale), _mm256_loadu_ps(o.scales));
  for (int r = 0; r < MR; ++r) {
    const __m256 v = _mm256_cvtepi32_ps(Reduce8(acc[r][0], acc[r][1]));
    Store8f(o.y + static_cast<size_t>(r) * o.ld, Finish(_mm256_fmadd_ps(v, s, bias), o),
            o.valid);
  }
}

template <bool kQ4>
void RunKernel(int mr, const int16_t* xs, int ldxs, const int8_t* w, int k4n,
               const HalfOut& o) {
  switch (mr) {
    case 1: return Kernel<1, kQ4>(xs, ldxs, w, k4n, o);
    case 2: return Kernel<2, kQ4>(xs, ldxs, w, k4n, o);
    case 3: return Kernel<3, kQ4>(xs, ldxs, w, k4n, o);
    default: return Kernel<4, kQ4>(xs, ldxs, w, k4n, o);
  }
}

// Widens rows [i0, i0 + mr) of x (first 4·k4n values) to s16.
void WidenRows(const QuantizedActivations& x, int i0, int mr, int k4n, int16_t* xs, int ldxs) {
  for (int r = 0; r < mr; ++r) {
    const int8_t* src = x.row(i0 + r);
    int16_t* dst = xs + r * ldxs;
    int c = 0;
    for (; c + 16 <= 4 * k4n; c += 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c),
                          _mm256_cvtepi8_epi16(
                              _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c))));
    }
    for (; c < 4 * k4n; ++c) dst[c] = src[c];
  }
}

}  // namespace

void QGemmS8_avx2(const QuantizedActivations& x, const PackedWeightsS8& w, const Epilogue* epi,
                  float* y, int32_t* acc, int ld) {
  const int m = x.m, n = w.n, k4n = (x.k + 3) / 4;
  if (m == 0 || n == 0) return;
  const int ldxs = 4 * k4n + 16;
  static thread_local Scratch scratch;
  int16_t* xs = static_cast<int16_t*>(scratch.Get(sizeof(int16_t) * kMr * ldxs));
  const size_t pstride = static_cast<size_t>(w.k_padded) * PackedWeightsS8::kPanel;
  for (int i0 = 0; i0 < m; i0 += kMr) {
    const int mr = std::min(kMr, m - i0);
    WidenRows(x, i0, mr, k4n, xs, ldxs);
    for (int j0 = 0; j0 < n; j0 += 8) {
      HalfOut o;
      o.y = y != nullptr ? y + static_cast<size_t>(i0) * ld + j0 : nullptr;
      o.acc = acc != nullptr ? acc + static_cast<size_t>(i0) * ld + j0 : nullptr;
      o.ld = ld;
      o.scales = w.scales.data() + j0;
      o.bias = epi != nullptr && epi->bias != nullptr ? epi->bias + j0 : nullptr;
      o.x_scale = x.scale;
      o.relu = epi != nullptr && epi->relu;
      o.valid = std::min(8, n - j0);
      o.q4_scales = nullptr;
      const int8_t* wp = w.packed.data() + (j0 / 16) * pstride + (j0 % 16) * 4;
      RunKernel<false>(mr, xs, ldxs, wp, k4n, o);
    }
  }
}

void QGemmQ4_avx2(const QuantizedActivations& x, const PackedWeightsQ4& w, const Epilogue& epi,
                  float* y, int ldy) {
  const int m = x.m, n = w.n, k4n = (x.k + 3) / 4;
  if (m == 0 || n == 0) return;
  const int ldxs = 4 * k4n + 16;
  const size_t pstride = Q4PanelBytes(w.k_padded);
  static thread_local Scratch scratch;
  int16_t* xs = static_cast<int16_t*>(scratch.Get(sizeof(int16_t) * kMr * ldxs));
  const int8_t* wq = w.packed.data();
  const int nb = w.blocks_per_row();
  for (int i0 = 0; i0 < m; i0 += kMr) {
    const int mr = std::min(kMr, m - i0);
    WidenRows(x, i0, mr, k4n, xs, ldxs);
    for (int j0 = 0; j0 < n; j0 += 8) {
      const int panel = j0 / 16, half = (j0 % 16) / 8;
      HalfOut o;
      o.y = y + static_cast<size_t>(i0) * ldy + j0;
      o.acc = nullptr;
      o.ld = ldy;
      o.scales = nullptr;
      o.bias = epi.bias != nullptr ? epi.bias + j0 : nullptr;
      o.x_scale = x.scale;
      o.relu = epi.relu;
      o.valid = std::min(8, n - j0);
      o.q4_scales = w.scales.data() + static_cast<size_t>(panel) * nb * 16 + half * 8;
      RunKernel<true>(mr, xs, ldxs, wq + panel * pstride + half * 32, k4n, o);
    }
  }
}

}  // namespace fedge::kernels::qdetail

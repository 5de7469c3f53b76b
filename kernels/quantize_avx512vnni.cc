// AVX-512 activation quantization (built with FEDGE_AVX512_FLAGS). Bit-exact with the scalar
// definition: vdivps is the IEEE division, vmaxps/vminps clamp like ClampQ8, vcvtps2dq rounds
// half to even (the default MXCSR mode, as std::nearbyint does).
#include <immintrin.h>

#include <cstring>

#include "kernels/qkernels_isa.h"

namespace fedge::kernels::qdetail {

float MaxAbs_avx512vnni(const float* x, int m, int k, int ldx) {
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  __m512 mx0 = _mm512_setzero_ps(), mx1 = _mm512_setzero_ps();
  for (int i = 0; i < m; ++i) {
    const float* r = x + static_cast<size_t>(i) * ldx;
    int j = 0;
    for (; j + 32 <= k; j += 32) {
      // max(a, mx) = a > mx ? a : mx: NaNs never enter.
      mx0 = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(r + j), abs_mask), mx0);
      mx1 = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(r + j + 16), abs_mask), mx1);
    }
    for (; j < k; j += 16) {
      const __mmask16 mask = k - j >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (k - j)) - 1);
      mx0 = _mm512_max_ps(_mm512_and_ps(_mm512_maskz_loadu_ps(mask, r + j), abs_mask), mx0);
    }
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(mx0, mx1));
}

void QuantizeRows_avx512vnni(const float* x, int m, int k, int ldx, float scale, int8_t* q,
                             int ldq, int kpad) {
  const __m512 s = _mm512_set1_ps(scale);
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  for (int i = 0; i < m; ++i) {
    const float* r = x + static_cast<size_t>(i) * ldx;
    int8_t* o = q + static_cast<size_t>(i) * ldq;
    int j = 0;
    for (; j + 16 <= k; j += 16) {
      __m512 t = _mm512_div_ps(_mm512_loadu_ps(r + j), s);
      t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + j),
                       _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t)));
    }
    if (j < k) {
      const __mmask16 mask = static_cast<__mmask16>((1u << (k - j)) - 1);
      __m512 t = _mm512_div_ps(_mm512_maskz_loadu_ps(mask, r + j), s);
      t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
      _mm_mask_storeu_epi8(o + j, mask, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t)));
    }
    if (kpad > k) std::memset(o + k, 0, kpad - k);
  }
}

}  // namespace fedge::kernels::qdetail

#define FEDGE_QPACK_VARIANT(name) name##_avx512vnni
#include "kernels/quantize_pack.inc"

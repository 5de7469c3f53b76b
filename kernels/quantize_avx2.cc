// AVX2 activation quantization (built with FEDGE_AVX2_FLAGS); bit-exact with the scalar
// definition (see quantize_avx512vnni.cc).
#include <immintrin.h>

#include <cstring>

#include "kernels/qkernels_isa.h"

namespace fedge::kernels::qdetail {

float MaxAbs_avx2(const float* x, int m, int k, int ldx) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 mx0 = _mm256_setzero_ps(), mx1 = _mm256_setzero_ps();
  float tail = 0.0f;
  for (int i = 0; i < m; ++i) {
    const float* r = x + static_cast<size_t>(i) * ldx;
    int j = 0;
    for (; j + 16 <= k; j += 16) {
      mx0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(r + j), abs_mask), mx0);
      mx1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(r + j + 8), abs_mask), mx1);
    }
    for (; j < k; ++j) {
      const float a = r[j] < 0 ? -r[j] : r[j];
      tail = a > tail ? a : tail;
    }
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(mx0, mx1));
  float mx = tail;
  for (float v : lanes) mx = v > mx ? v : mx;
  return mx;
}

void QuantizeRows_avx2(const float* x, int m, int k, int ldx, float scale, int8_t* q, int ldq,
                       int kpad) {
  const __m256 s = _mm256_set1_ps(scale);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  for (int i = 0; i < m; ++i) {
    const float* r = x + static_cast<size_t>(i) * ldx;
    int8_t* o = q + static_cast<size_t>(i) * ldq;
    int j = 0;
    for (; j + 16 <= k; j += 16) {
      __m256 t0 = _mm256_div_ps(_mm256_loadu_ps(r + j), s);
      __m256 t1 = _mm256_div_ps(_mm256_loadu_ps(r + j + 8), s);
      t0 = _mm256_min_ps(_mm256_max_ps(t0, lo), hi);
      t1 = _mm256_min_ps(_mm256_max_ps(t1, lo), hi);
      const __m256i i16 = _mm256_packs_epi32(_mm256_cvtps_epi32(t0), _mm256_cvtps_epi32(t1));
      // packs works per 128-bit lane: [a0..3 b0..3 | a4..7 b4..7] → fix the order.
      const __m256i ord = _mm256_permute4x64_epi64(i16, 0xD8);
      const __m128i i8 = _mm_packs_epi16(_mm256_castsi256_si128(ord),
                                         _mm256_extracti128_si256(ord, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + j), i8);
    }
    for (; j < k; ++j) {
      o[j] = static_cast<int8_t>(_mm_cvtss_si32(_mm_set_ss(ClampQ8(r[j] / scale))));
    }
    if (kpad > k) std::memset(o + k, 0, kpad - k);
  }
}

}  // namespace fedge::kernels::qdetail

#define FEDGE_QPACK_VARIANT(name) name##_avx2
#include "kernels/quantize_pack.inc"

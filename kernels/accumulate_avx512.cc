// AVX-512 WeightedAccumulate (built with FEDGE_AVX512_FLAGS; uses AVX-512F only). Bit-exact
// with WeightedAccumulate_ref: vmulps then vaddps (no fma), masked adds for held bits.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/accumulate.h"

namespace fedge::kernels {
namespace {

// The running value a block starts from: the array's, or 0 for WeightedSum (not read).
inline __m512 Start(bool from_zero, const float* p) {
  return from_zero ? _mm512_setzero_ps() : _mm512_loadu_ps(p);
}

}  // namespace

void WeightedAccumulate_avx512(const AccumulateTerm* terms, int k, int64_t begin, int64_t end,
                               float* acc, float* cover, bool from_zero) {
  constexpr int64_t kBlock = 64;  // one mask word, four zmm registers
  constexpr int64_t kPrefetch = 512;  // floats ahead (2 KB) per stream
  const int64_t head_end = std::min<int64_t>(end, (begin + kBlock - 1) / kBlock * kBlock);
  WeightedAccumulate_ref(terms, k, begin, head_end, acc, cover, from_zero);
  int64_t i = head_end;
  bool any_mask = false;
  for (int j = 0; j < k; ++j) any_mask |= terms[j].held != nullptr;

  if (!any_mask) {
    if (from_zero && cover != nullptr) {  // no term counts here: the weight sums are 0
      const int64_t blocks_end = i + (end - i) / kBlock * kBlock;
      std::memset(cover + i, 0, static_cast<size_t>(blocks_end - i) * sizeof(float));
    }
    // The dense path: the one the round's bulk of data takes.
    for (; i + kBlock <= end; i += kBlock) {
      __m512 a0 = Start(from_zero, acc + i);
      __m512 a1 = Start(from_zero, acc + i + 16);
      __m512 a2 = Start(from_zero, acc + i + 32);
      __m512 a3 = Start(from_zero, acc + i + 48);
      for (int j = 0; j < k; ++j) {
        const __m512 w = _mm512_set1_ps(terms[j].weight);
        const float* u = terms[j].values + i;
        // With up to 16 input streams plus the sum, the hardware prefetchers fall behind;
        // fetch each stream's block kPrefetch floats ahead (a hint: never faults).
        for (int line = 0; line < 4; ++line) {
          _mm_prefetch(reinterpret_cast<const char*>(u + kPrefetch + 16 * line), _MM_HINT_T0);
        }
        a0 = _mm512_add_ps(a0, _mm512_mul_ps(w, _mm512_loadu_ps(u)));
        a1 = _mm512_add_ps(a1, _mm512_mul_ps(w, _mm512_loadu_ps(u + 16)));
        a2 = _mm512_add_ps(a2, _mm512_mul_ps(w, _mm512_loadu_ps(u + 32)));
        a3 = _mm512_add_ps(a3, _mm512_mul_ps(w, _mm512_loadu_ps(u + 48)));
      }
      _mm512_storeu_ps(acc + i, a0);
      _mm512_storeu_ps(acc + i + 16, a1);
      _mm512_storeu_ps(acc + i + 32, a2);
      _mm512_storeu_ps(acc + i + 48, a3);
    }
  } else {
    for (; i + kBlock <= end; i += kBlock) {
      __m512 a0 = Start(from_zero, acc + i);
      __m512 a1 = Start(from_zero, acc + i + 16);
      __m512 a2 = Start(from_zero, acc + i + 32);
      __m512 a3 = Start(from_zero, acc + i + 48);
      __m512 c0 = Start(from_zero, cover + i);
      __m512 c1 = Start(from_zero, cover + i + 16);
      __m512 c2 = Start(from_zero, cover + i + 32);
      __m512 c3 = Start(from_zero, cover + i + 48);
      for (int j = 0; j < k; ++j) {
        const __m512 w = _mm512_set1_ps(terms[j].weight);
        const float* u = terms[j].values + i;
        const __m512 p0 = _mm512_mul_ps(w, _mm512_loadu_ps(u));
        const __m512 p1 = _mm512_mul_ps(w, _mm512_loadu_ps(u + 16));
        const __m512 p2 = _mm512_mul_ps(w, _mm512_loadu_ps(u + 32));
        const __m512 p3 = _mm512_mul_ps(w, _mm512_loadu_ps(u + 48));
        if (terms[j].held == nullptr) {
          a0 = _mm512_add_ps(a0, p0);
          a1 = _mm512_add_ps(a1, p1);
          a2 = _mm512_add_ps(a2, p2);
          a3 = _mm512_add_ps(a3, p3);
        } else {
          const uint64_t bits = terms[j].held[i >> 6];
          const __mmask16 m0 = static_cast<__mmask16>(bits);
          const __mmask16 m1 = static_cast<__mmask16>(bits >> 16);
          const __mmask16 m2 = static_cast<__mmask16>(bits >> 32);
          const __mmask16 m3 = static_cast<__mmask16>(bits >> 48);
          a0 = _mm512_mask_add_ps(a0, m0, a0, p0);
          a1 = _mm512_mask_add_ps(a1, m1, a1, p1);
          a2 = _mm512_mask_add_ps(a2, m2, a2, p2);
          a3 = _mm512_mask_add_ps(a3, m3, a3, p3);
          c0 = _mm512_mask_add_ps(c0, m0, c0, w);
          c1 = _mm512_mask_add_ps(c1, m1, c1, w);
          c2 = _mm512_mask_add_ps(c2, m2, c2, w);
          c3 = _mm512_mask_add_ps(c3, m3, c3, w);
        }
      }
      _mm512_storeu_ps(acc + i, a0);
      _mm512_storeu_ps(acc + i + 16, a1);
      _mm512_storeu_ps(acc + i + 32, a2);
      _mm512_storeu_ps(acc + i + 48, a3);
      _mm512_storeu_ps(cover + i, c0);
      _mm512_storeu_ps(cover + i + 16, c1);
      _mm512_storeu_ps(cover + i + 32, c2);
      _mm512_storeu_ps(cover + i + 48, c3);
    }
  }
  WeightedAccumulate_ref(terms, k, i, end, acc, cover, from_zero);
}

bool AllFinite_avx512(const float* x, int64_t begin, int64_t end) {
  // Exponent all ones <=> NaN or ±Inf: compare the masked exponent field, 64 values a step.
  const __m512i exp_mask = _mm512_set1_epi32(0x7f800000);
  int64_t i = begin;
  for (; i + 64 <= end; i += 64) {
    // (_mm512_max_epu32 would do too, but GCC 12 warns about its undefined passthrough.)
    const __mmask16 bad =
        _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i), exp_mask), exp_mask) |
        _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i + 16), exp_mask),
                                exp_mask) |
        _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i + 32), exp_mask),
                                exp_mask) |
        _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_loadu_si512(x + i + 48), exp_mask),
                                exp_mask);
    if (bad != 0) return false;
  }
  return AllFinite_ref(x, i, end);
}

float MaxAbs_avx512(const float* x, int64_t begin, int64_t end) {
  // The largest magnitude bits (sign cleared), as unsigned integers: the order of the floats,
  // with ±Inf and NaN above every finite value.
  const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
  __m512i m0 = _mm512_setzero_si512(), m1 = m0, m2 = m0, m3 = m0;
  int64_t i = begin;
  for (; i + 64 <= end; i += 64) {
    // (The masked form with an explicit source: GCC 12 warns about the plain form's
    // undefined passthrough.)
    m0 = _mm512_mask_max_epu32(m0, 0xFFFF, m0,
                               _mm512_and_si512(_mm512_loadu_si512(x + i), magnitude));
    m1 = _mm512_mask_max_epu32(m1, 0xFFFF, m1,
                               _mm512_and_si512(_mm512_loadu_si512(x + i + 16), magnitude));
    m2 = _mm512_mask_max_epu32(m2, 0xFFFF, m2,
                               _mm512_and_si512(_mm512_loadu_si512(x + i + 32), magnitude));
    m3 = _mm512_mask_max_epu32(m3, 0xFFFF, m3,
                               _mm512_and_si512(_mm512_loadu_si512(x + i + 48), magnitude));
  }
  m0 = _mm512_mask_max_epu32(m0, 0xFFFF, m0, m1);
  m2 = _mm512_mask_max_epu32(m2, 0xFFFF, m2, m3);
  m0 = _mm512_mask_max_epu32(m0, 0xFFFF, m0, m2);
  alignas(64) uint32_t lanes[16];
  _mm512_store_si512(lanes, m0);
  uint32_t m = 0;
  for (uint32_t v : lanes) m = std::max(m, v);
  float block_max = 0.0f;
  if (m >= 0x7f800000u) return std::numeric_limits<float>::infinity();
  std::memcpy(&block_max, &m, sizeof(block_max));
  return std::max(block_max, MaxAbs_ref(x, i, end));
}

}  // namespace fedge::kernels

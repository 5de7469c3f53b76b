// AVX2 WeightedAccumulate (built with FEDGE_AVX2_FLAGS). Bit-exact with WeightedAccumulate_ref:
// vmulps then vaddps (no fma); held bits become lane masks for a blend.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/accumulate.h"

namespace fedge::kernels {
namespace {

// The running value a block starts from: the array's, or 0 for WeightedSum (not read).
inline __m256 Start(bool from_zero, const float* p) {
  return from_zero ? _mm256_setzero_ps() : _mm256_loadu_ps(p);
}

// Lane t of the result is all ones when bit t of `byte` is set.
inline __m256 LaneMask(uint64_t byte) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i b = _mm256_set1_epi32(static_cast<int>(byte & 0xFF));
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, bit), bit));
}

}  // namespace

void WeightedAccumulate_avx2(const AccumulateTerm* terms, int k, int64_t begin, int64_t end,
                             float* acc, float* cover, bool from_zero) {
  constexpr int64_t kBlock = 32;  // four ymm registers
  // Align to the mask words' 64 so that a block's 32 bits never straddle two words.
  const int64_t head_end = std::min<int64_t>(end, (begin + 63) / 64 * 64);
  WeightedAccumulate_ref(terms, k, begin, head_end, acc, cover, from_zero);
  int64_t i = head_end;
  bool any_mask = false;
  for (int j = 0; j < k; ++j) any_mask |= terms[j].held != nullptr;

  if (!any_mask) {
    if (from_zero && cover != nullptr) {  // no term counts here: the weight sums are 0
      const int64_t blocks_end = i + (end - i) / kBlock * kBlock;
      std::memset(cover + i, 0, static_cast<size_t>(blocks_end - i) * sizeof(float));
    }
    for (; i + kBlock <= end; i += kBlock) {
      __m256 a0 = Start(from_zero, acc + i);
      __m256 a1 = Start(from_zero, acc + i + 8);
      __m256 a2 = Start(from_zero, acc + i + 16);
      __m256 a3 = Start(from_zero, acc + i + 24);
      for (int j = 0; j < k; ++j) {
        const __m256 w = _mm256_set1_ps(terms[j].weight);
        const float* u = terms[j].values + i;
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(w, _mm256_loadu_ps(u)));
        a1 = _mm256_add_ps(a1, _mm256_mul_ps(w, _mm256_loadu_ps(u + 8)));
        a2 = _mm256_add_ps(a2, _mm256_mul_ps(w, _mm256_loadu_ps(u + 16)));
        a3 = _mm256_add_ps(a3, _mm256_mul_ps(w, _mm256_loadu_ps(u + 24)));
      }
      _mm256_storeu_ps(acc + i, a0);
      _mm256_storeu_ps(acc + i + 8, a1);
      _mm256_storeu_ps(acc + i + 16, a2);
      _mm256_storeu_ps(acc + i + 24, a3);
    }
  } else {
    for (; i + kBlock <= end; i += kBlock) {
      __m256 a[4], c[4];
      for (int r = 0; r < 4; ++r) {
        a[r] = Start(from_zero, acc + i + 8 * r);
        c[r] = Start(from_zero, cover + i + 8 * r);
      }
      for (int j = 0; j < k; ++j) {
        const __m256 w = _mm256_set1_ps(terms[j].weight);
        const float* u = terms[j].values + i;
        if (terms[j].held == nullptr) {
          for (int r = 0; r < 4; ++r) {
            a[r] = _mm256_add_ps(a[r], _mm256_mul_ps(w, _mm256_loadu_ps(u + 8 * r)));
          }
        } else {
          const uint64_t bits = terms[j].held[i >> 6] >> (i & 63);
          for (int r = 0; r < 4; ++r) {
            const __m256 m = LaneMask(bits >> (8 * r));
            const __m256 p = _mm256_mul_ps(w, _mm256_loadu_ps(u + 8 * r));
            a[r] = _mm256_blendv_ps(a[r], _mm256_add_ps(a[r], p), m);
            c[r] = _mm256_blendv_ps(c[r], _mm256_add_ps(c[r], w), m);
          }
        }
      }
      for (int r = 0; r < 4; ++r) {
        _mm256_storeu_ps(acc + i + 8 * r, a[r]);
        _mm256_storeu_ps(cover + i + 8 * r, c[r]);
      }
    }
  }
  WeightedAccumulate_ref(terms, k, i, end, acc, cover, from_zero);
}

bool AllFinite_avx2(const float* x, int64_t begin, int64_t end) {
  // Exponent all ones <=> NaN or ±Inf: compare the masked exponent field, 32 values a step.
  const __m256i exp_mask = _mm256_set1_epi32(0x7f800000);
  const __m256i* p = nullptr;
  int64_t i = begin;
  for (; i + 32 <= end; i += 32) {
    p = reinterpret_cast<const __m256i*>(x + i);
    const __m256i e0 = _mm256_and_si256(_mm256_loadu_si256(p), exp_mask);
    const __m256i e1 = _mm256_and_si256(_mm256_loadu_si256(p + 1), exp_mask);
    const __m256i e2 = _mm256_and_si256(_mm256_loadu_si256(p + 2), exp_mask);
    const __m256i e3 = _mm256_and_si256(_mm256_loadu_si256(p + 3), exp_mask);
    const __m256i mx = _mm256_max_epu32(_mm256_max_epu32(e0, e1), _mm256_max_epu32(e2, e3));
    if (_mm256_movemask_epi8(_mm256_cmpeq_epi32(mx, exp_mask)) != 0) return false;
  }
  return AllFinite_ref(x, i, end);
}

float MaxAbs_avx2(const float* x, int64_t begin, int64_t end) {
  // The largest magnitude bits (sign cleared), as unsigned integers: the order of the floats,
  // with ±Inf and NaN above every finite value.
  const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
  __m256i m0 = _mm256_setzero_si256(), m1 = m0, m2 = m0, m3 = m0;
  int64_t i = begin;
  for (; i + 32 <= end; i += 32) {
    const __m256i* p = reinterpret_cast<const __m256i*>(x + i);
    m0 = _mm256_max_epu32(m0, _mm256_and_si256(_mm256_loadu_si256(p), magnitude));
    m1 = _mm256_max_epu32(m1, _mm256_and_si256(_mm256_loadu_si256(p + 1), magnitude));
    m2 = _mm256_max_epu32(m2, _mm256_and_si256(_mm256_loadu_si256(p + 2), magnitude));
    m3 = _mm256_max_epu32(m3, _mm256_and_si256(_mm256_loadu_si256(p + 3), magnitude));
  }
  m0 = _mm256_max_epu32(_mm256_max_epu32(m0, m1), _mm256_max_epu32(m2, m3));
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), m0);
  uint32_t m = 0;
  for (uint32_t v : lanes) m = std::max(m, v);
  if (m >= 0x7f800000u) return std::numeric_limits<float>::infinity();
  float block_max;
  std::memcpy(&block_max, &m, sizeof(block_max));
  return std::max(block_max, MaxAbs_ref(x, i, end));
}

}  // namespace fedge::kernels

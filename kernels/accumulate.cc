// WeightedAccumulate: scalar reference, portable variant, and the run-time dispatcher. The
// AVX2 and AVX-512 variants live in accumulate_avx2.cc / accumulate_avx512.cc, the only files
// built with those flags.
#include "kernels/accumulate.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

namespace fedge::kernels {
namespace {

inline bool Held(const uint64_t* held, int64_t i) {
  return held == nullptr || ((held[i >> 6] >> (i & 63)) & 1u) != 0;
}

// The best variant at or below `isa` that this CPU runs (kPortable and kRef always run).
}  // namespace

void WeightedAccumulate_ref(const AccumulateTerm* terms, int k, int64_t begin, int64_t end,
                            float* acc, float* cover, bool from_zero) {
  for (int64_t i = begin; i < end; ++i) {
    if (from_zero) {
      acc[i] = 0.0f;
      if (cover != nullptr) cover[i] = 0.0f;
    }
    for (int j = 0; j < k; ++j) {
      const AccumulateTerm& t = terms[j];
      if (!Held(t.held, i)) continue;
      const float product = t.weight * t.values[i];
      acc[i] = acc[i] + product;
      if (t.held != nullptr) cover[i] = cover[i] + t.weight;
    }
  }
}

void WeightedAccumulate_portable(const AccumulateTerm* terms, int k, int64_t begin,
                                 int64_t end, float* acc, float* cover, bool from_zero) {
  // Blocks of 64 coordinates aligned to the mask words; the block's partial sums stay in a
  // small local array (registers after vectorization) while the k terms stream through.
  constexpr int kBlock = 64;
  int64_t i = begin;
  const int64_t head_end = std::min<int64_t>(end, (begin + kBlock - 1) / kBlock * kBlock);
  WeightedAccumulate_ref(terms, k, i, head_end, acc, cover, from_zero);
  i = head_end;
  for (; i + kBlock <= end; i += kBlock) {
    float a[kBlock];
    for (int t = 0; t < kBlock; ++t) a[t] = from_zero ? 0.0f : acc[i + t];
    bool any_mask = false;
    for (int j = 0; j < k; ++j) {
      const float w = terms[j].weight;
      const float* u = terms[j].values + i;
      const uint64_t* held = terms[j].held;
      if (held == nullptr) {
        for (int t = 0; t < kBlock; ++t) a[t] = a[t] + w * u[t];
      } else {
        any_mask = true;
        const uint64_t bits = held[i >> 6];
        for (int t = 0; t < kBlock; ++t) {
          const float p = w * u[t];
          a[t] = ((bits >> t) & 1u) ? a[t] + p : a[t];
        }
      }
    }
    for (int t = 0; t < kBlock; ++t) acc[i + t] = a[t];
    if (any_mask) {
      float c[kBlock];
      for (int t = 0; t < kBlock; ++t) c[t] = from_zero ? 0.0f : cover[i + t];
      for (int j = 0; j < k; ++j) {
        if (terms[j].held == nullptr) continue;
        const float w = terms[j].weight;
        const uint64_t bits = terms[j].held[i >> 6];
        for (int t = 0; t < kBlock; ++t) c[t] = ((bits >> t) & 1u) ? c[t] + w : c[t];
      }
      for (int t = 0; t < kBlock; ++t) cover[i + t] = c[t];
    } else if (from_zero && cover != nullptr) {
      std::memset(cover + i, 0, kBlock * sizeof(float));
    }
  }
  WeightedAccumulate_ref(terms, k, i, end, acc, cover, from_zero);
}

bool AllFinite_ref(const float* x, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

bool AllFinite_portable(const float* x, int64_t begin, int64_t end) {
  // A float is NaN or ±Inf exactly when its exponent bits are all ones, i.e. when
  // (bits & 0x7f800000) + 0x00800000 reaches 0x80000000. OR-reduce that over 64-value blocks
  // (integer ops the auto-vectorizer turns into SSE2) and stop at the first bad block.
  constexpr int kBlock = 64;
  int64_t i = begin;
  for (; i + kBlock <= end; i += kBlock) {
    uint32_t bits[kBlock];
    std::memcpy(bits, x + i, sizeof(bits));
    uint32_t bad = 0;
    for (int t = 0; t < kBlock; ++t) bad |= (bits[t] & 0x7f800000u) + 0x00800000u;
    if (bad & 0x80000000u) return false;
  }
  return AllFinite_ref(x, i, end);
}

float MaxAbs_ref(const float* x, int64_t begin, int64_t end) {
  float m = 0.0f;
  for (int64_t i = begin; i < end; ++i) {
    if (!std::isfinite(x[i])) return std::numeric_limits<float>::infinity();
    m = std::max(m, std::fabs(x[i]));
  }
  return m;
}

namespace {

float MaxAbsFromBits(uint32_t bits) {
  // Magnitude bits: ≥ 0x7f800000 is ±Inf or NaN; below, the order of the floats.
  if (bits >= 0x7f800000u) return std::numeric_limits<float>::infinity();
  float m;
  std::memcpy(&m, &bits, sizeof(m));
  return m;
}

}  // namespace

float MaxAbs_portable(const float* x, int64_t begin, int64_t end) {
  constexpr int kBlock = 64;
  uint32_t m = 0;
  int64_t i = begin;
  for (; i + kBlock <= end; i += kBlock) {
    uint32_t bits[kBlock];
    std::memcpy(bits, x + i, sizeof(bits));
    for (int t = 0; t < kBlock; ++t) m = std::max(m, bits[t] & 0x7fffffffu);
  }
  return std::max(MaxAbsFromBits(m), MaxAbs_ref(x, i, end));
}

float MaxAbs(const float* x, int64_t begin, int64_t end, Isa isa) {
  assert(begin >= 0 && begin <= end);
  FEDGE_KERNEL_DISPATCH(MaxAbs, x, begin, end)
}

bool AllFinite(const float* x, int64_t begin, int64_t end, Isa isa) {
  assert(begin >= 0 && begin <= end);
  FEDGE_KERNEL_DISPATCH(AllFinite, x, begin, end)
}

namespace {

void Dispatch(const AccumulateTerm* terms, int k, int64_t begin, int64_t end, float* acc,
              float* cover, bool from_zero, Isa isa) {
  assert(k > 0 && k <= kMaxAccumulateTerms && begin >= 0 && begin <= end);
  FEDGE_KERNEL_DISPATCH(WeightedAccumulate, terms, k, begin, end, acc, cover, from_zero)
}

}  // namespace

void WeightedAccumulate(const AccumulateTerm* terms, int k, int64_t begin, int64_t end,
                        float* acc, float* cover, Isa isa) {
  Dispatch(terms, k, begin, end, acc, cover, /*from_zero=*/false, isa);
}

void WeightedSum(const AccumulateTerm* terms, int k, int64_t begin, int64_t end, float* acc,
                 float* cover, Isa isa) {
  Dispatch(terms, k, begin, end, acc, cover, /*from_zero=*/true, isa);
}

}  // namespace fedge::kernels

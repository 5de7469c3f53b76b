// The hot loop of federated averaging: acc[i] += w_j · u_j[i] over a few client updates at
// once, with optional per-coordinate "held" bitmasks for sub-model updates (HeteroFL,
// Federated Dropout: a client only contributes to, and is only counted for, the coordinates
// its sub-model held).
//
// Exact operation order (every variant is bit-exact with WeightedAccumulate_ref): for each
// coordinate i, for j = 0 .. k-1 in order, when term j holds i:
//     acc[i] = acc[i] + (w_j * u_j[i])      -- one rounded multiply, one rounded add
//     cover[i] = cover[i] + w_j             -- only for terms that carry a mask
// We use an unfused multiply-add rather than fma on purpose: baseline x86-64 has no fma
// instruction (std::fma is a libm call there), and with -ffp-contract=off the portable
// variant then vectorizes with SSE2 and still rounds exactly as the reference. The loop is
// memory-bound, so fma would buy nothing. Because the order per coordinate is fixed, calling
// this once with terms {a, b} gives the same bits as calling it with {a} then {b}: callers
// may group updates freely (to read acc once per group instead of once per update).
//
// WeightedSum is the same operation started from acc = cover = 0 without reading either
// (a batch into an empty aggregate): bit for bit what WeightedAccumulate gives on zeroed
// arrays, for one memory stream less, and the arrays may hold anything before the call.
#ifndef FEDGE_KERNELS_ACCUMULATE_H_
#define FEDGE_KERNELS_ACCUMULATE_H_

#include <cstdint>

#include "kernels/cpu.h"

namespace fedge::kernels {

// One weighted input. Pointers are indexed by absolute coordinate (values[i], bit i % 64 of
// held[i / 64]), so that a caller can split [0, n) into ranges (threads, tiles) and pass the
// same terms to every call.
struct AccumulateTerm {
  const float* values = nullptr;
  const uint64_t* held = nullptr;  // nullptr: every coordinate is held (a dense update)
  float weight = 0.0f;
};

// The most terms one call takes; callers with more split them into groups (same result).
inline constexpr int kMaxAccumulateTerms = 16;

// For i in [begin, end), applies the k terms in order as described above.
// REQUIRES: 0 < k ≤ kMaxAccumulateTerms; 0 ≤ begin ≤ end; cover != nullptr when any term
// has a mask; acc and cover do not alias any term's values. Single-threaded; distinct
// ranges of the same arrays may run concurrently on different threads.
void WeightedAccumulate(const AccumulateTerm* terms, int k, int64_t begin, int64_t end,
                        float* acc, float* cover, Isa isa = BestIsa());
// As WeightedAccumulate on acc[begin, end) = 0 and (when cover != nullptr) cover[begin, end)
// = 0, writing both without reading them. Same REQUIRES.
void WeightedSum(const AccumulateTerm* terms, int k, int64_t begin, int64_t end, float* acc,
                 float* cover, Isa isa = BestIsa());

// The variants, for tests and benchmarks (from_zero: WeightedSum). Call only those the CPU
// supports.
void WeightedAccumulate_ref(const AccumulateTerm* terms, int k, int64_t begin, int64_t end,
                            float* acc, float* cover, bool from_zero = false);
void WeightedAccumulate_portable(const AccumulateTerm* terms, int k, int64_t begin,
                                 int64_t end, float* acc, float* cover, bool from_zero = false);
void WeightedAccumulate_avx2(const AccumulateTerm* terms, int k, int64_t begin, int64_t end,
                             float* acc, float* cover, bool from_zero = false);
void WeightedAccumulate_avx512(const AccumulateTerm* terms, int k, int64_t begin, int64_t end,
                               float* acc, float* cover, bool from_zero = false);

// True when no value of x[begin, end) is NaN or ±Inf (the check every client update passes
// before it may enter a sum). Memory-bound like WeightedAccumulate; exact in every variant.
bool AllFinite(const float* x, int64_t begin, int64_t end, Isa isa = BestIsa());
bool AllFinite_ref(const float* x, int64_t begin, int64_t end);
bool AllFinite_portable(const float* x, int64_t begin, int64_t end);
bool AllFinite_avx2(const float* x, int64_t begin, int64_t end);
bool AllFinite_avx512(const float* x, int64_t begin, int64_t end);

// The largest |x[i]| over [begin, end) (0 for an empty range), or +Inf when any value is NaN
// or ±Inf: the finite check and the bound a sum of such values needs, in one read. Exact in
// every variant (a max of magnitudes, compared as integers).
float MaxAbs(const float* x, int64_t begin, int64_t end, Isa isa = BestIsa());
float MaxAbs_ref(const float* x, int64_t begin, int64_t end);
float MaxAbs_portable(const float* x, int64_t begin, int64_t end);
float MaxAbs_avx2(const float* x, int64_t begin, int64_t end);
float MaxAbs_avx512(const float* x, int64_t begin, int64_t end);

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_ACCUMULATE_H_

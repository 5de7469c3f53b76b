#include "kernels/accumulate.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "base/rng.h"
#include "gtest/gtest.h"
#include "kernels/cpu.h"

namespace fedge::kernels {
namespace {

using Fn = void (*)(const AccumulateTerm*, int, int64_t, int64_t, float*, float*, bool);

struct Variant {
  const char* name;
  Isa isa;
  Fn fn;
};

const Variant kVariants[] = {
    {"ref", Isa::kRef, WeightedAccumulate_ref},
    {"portable", Isa::kPortable, WeightedAccumulate_portable},
    {"avx2", Isa::kAvx2, WeightedAccumulate_avx2},
    {"avx512", Isa::kAvx512Vnni, WeightedAccumulate_avx512},
};

std::vector<float> RandomValues(base::Rng& rng, int64_t n) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.Normal());
  return v;
}

std::vector<uint64_t> RandomMask(base::Rng& rng, int64_t n) {
  std::vector<uint64_t> m((n + 63) / 64);
  for (auto& w : m) w = rng.NextU64();
  return m;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b, int64_t* where) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      *where = static_cast<int64_t>(i);
      return false;
    }
  }
  return true;
}

// Sizes below, at and above the 16/32/64-coordinate blocks, odd ranges and offsets.
TEST(WeightedAccumulateTest, EveryVariantIsBitExactWithRef) {
  const int64_t kSizes[] = {1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 4099};
  const int kTerms[] = {1, 2, 3, 8, kMaxAccumulateTerms};
  base::Rng rng(7);
  for (const Variant& v : kVariants) {
    if (!CpuSupports(v.isa)) continue;
    for (int64_t n : kSizes) {
      for (int k : kTerms) {
        for (int masks = 0; masks < 3; ++masks) {  // none, every other term, all terms
          std::vector<std::vector<float>> values;
          std::vector<std::vector<uint64_t>> held;
          std::vector<AccumulateTerm> terms(k);
          for (int j = 0; j < k; ++j) {
            values.push_back(RandomValues(rng, n));
            held.push_back(RandomMask(rng, n));
          }
          for (int j = 0; j < k; ++j) {
            terms[j].values = values[j].data();
            terms[j].weight = static_cast<float>(1 + rng.UniformInt(5000)) * 0.37f;
            const bool masked = masks == 2 || (masks == 1 && j % 2 == 1);
            terms[j].held = masked ? held[j].data() : nullptr;
            // Values a masked term does not hold must be ignored, even NaN.
            if (masked && n > 3) values[j][3] = ((held[j][0] >> 3) & 1u) ? values[j][3]
                                                  : std::numeric_limits<float>::quiet_NaN();
          }
          const std::vector<float> acc0 = RandomValues(rng, n);
          std::vector<float> cover0(n);
          for (auto& c : cover0) c = static_cast<float>(rng.UniformInt(100));
          // Whole range, and an unaligned sub-range [b, e).
          const int64_t b = n > 5 ? 5 : 0, e = n > 9 ? n - 3 : n;
          for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, n}, {b, e}}) {
            std::vector<float> acc_ref = acc0, cover_ref = cover0;
            std::vector<float> acc = acc0, cover = cover0;
            WeightedAccumulate_ref(terms.data(), k, lo, hi, acc_ref.data(), cover_ref.data());
            v.fn(terms.data(), k, lo, hi, acc.data(), cover.data(), false);
            int64_t where = -1;
            EXPECT_TRUE(SameBits(acc, acc_ref, &where))
                << v.name << " n=" << n << " k=" << k << " masks=" << masks << " range [" << lo
                << "," << hi << ") acc differs at " << where;
            EXPECT_TRUE(SameBits(cover, cover_ref, &where))
                << v.name << " n=" << n << " k=" << k << " masks=" << masks << " range [" << lo
                << "," << hi << ") cover differs at " << where;
            // WeightedSum (from_zero): the result on zeroed arrays, without reading them
            // (they start as NaN here, which would show through any read); nothing outside
            // [lo, hi) is written.
            const float nan = std::numeric_limits<float>::quiet_NaN();
            std::vector<float> acc_zero(n, nan), cover_zero(n, nan);
            std::vector<float> acc_expect(n, nan), cover_expect(n, nan);
            std::fill(acc_expect.begin() + lo, acc_expect.begin() + hi, 0.0f);
            std::fill(cover_expect.begin() + lo, cover_expect.begin() + hi, 0.0f);
            WeightedAccumulate_ref(terms.data(), k, lo, hi, acc_expect.data(),
                                   cover_expect.data());
            v.fn(terms.data(), k, lo, hi, acc_zero.data(), cover_zero.data(), true);
            EXPECT_TRUE(SameBits(acc_zero, acc_expect, &where))
                << v.name << " WeightedSum n=" << n << " k=" << k << " masks=" << masks
                << " range [" << lo << "," << hi << ") acc differs at " << where;
            EXPECT_TRUE(SameBits(cover_zero, cover_expect, &where))
                << v.name << " WeightedSum n=" << n << " k=" << k << " masks=" << masks
                << " range [" << lo << "," << hi << ") cover differs at " << where;
          }
        }
      }
    }
  }
}

TEST(WeightedAccumulateTest, RefMatchesHandComputation) {
  const float u0[] = {1.0f, 2.0f, 3.0f, 4.0f};
  const float u1[] = {10.0f, 20.0f, 30.0f, 40.0f};
  const uint64_t held1 = 0b0101;  // term 1 holds coordinates 0 and 2
  const AccumulateTerm terms[] = {{u0, nullptr, 2.0f}, {u1, &held1, 0.5f}};
  float acc[] = {100.0f, 100.0f, 100.0f, 100.0f};
  float cover[] = {0.0f, 0.0f, 0.0f, 0.0f};
  WeightedAccumulate_ref(terms, 2, 0, 4, acc, cover);
  EXPECT_EQ(acc[0], 100.0f + 2.0f + 5.0f);
  EXPECT_EQ(acc[1], 100.0f + 4.0f);
  EXPECT_EQ(acc[2], 100.0f + 6.0f + 15.0f);
  EXPECT_EQ(acc[3], 100.0f + 8.0f);
  EXPECT_EQ(cover[0], 0.5f);
  EXPECT_EQ(cover[1], 0.0f);
  EXPECT_EQ(cover[2], 0.5f);
  EXPECT_EQ(cover[3], 0.0f);
}

// Grouping does not change the result: {a, b} in one call == a then b.
TEST(WeightedAccumulateTest, OneCallWithTwoTermsEqualsTwoCalls) {
  base::Rng rng(3);
  const int64_t n = 777;
  const std::vector<float> a = RandomValues(rng, n), b = RandomValues(rng, n);
  const std::vector<uint64_t> mb = RandomMask(rng, n);
  const AccumulateTerm terms[] = {{a.data(), nullptr, 3.0f}, {b.data(), mb.data(), 0.25f}};
  std::vector<float> acc1 = RandomValues(rng, n), cover1(n, 0.0f);
  std::vector<float> acc2 = acc1, cover2 = cover1;
  WeightedAccumulate(terms, 2, 0, n, acc1.data(), cover1.data());
  WeightedAccumulate(&terms[0], 1, 0, n, acc2.data(), cover2.data());
  WeightedAccumulate(&terms[1], 1, 0, n, acc2.data(), cover2.data());
  int64_t where = -1;
  EXPECT_TRUE(SameBits(acc1, acc2, &where)) << where;
  EXPECT_TRUE(SameBits(cover1, cover2, &where)) << where;
}

TEST(AllFiniteTest, EveryVariantFindsNanAndInfAnywhere) {
  using FiniteFn = bool (*)(const float*, int64_t, int64_t);
  const std::pair<Isa, FiniteFn> variants[] = {{Isa::kRef, AllFinite_ref},
                                                {Isa::kPortable, AllFinite_portable},
                                                {Isa::kAvx2, AllFinite_avx2},
                                                {Isa::kAvx512Vnni, AllFinite_avx512}};
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(),
                              -std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()};
  base::Rng rng(11);
  for (auto [isa, fn] : variants) {
    if (!CpuSupports(isa)) continue;
    for (int64_t n : {1, 31, 32, 33, 64, 65, 200}) {
      std::vector<float> x = RandomValues(rng, n);
      x[0] = std::numeric_limits<float>::max();  // large but finite
      if (n > 1) x[1] = std::numeric_limits<float>::denorm_min();
      EXPECT_TRUE(fn(x.data(), 0, n)) << IsaName(isa) << " n=" << n;
      for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
        for (float bad : bad_values) {
          std::vector<float> y = x;
          y[pos] = bad;
          EXPECT_FALSE(fn(y.data(), 0, n)) << IsaName(isa) << " n=" << n << " pos=" << pos;
          // Outside the range it is not looked at.
          if (pos == n - 1) {
            EXPECT_TRUE(fn(y.data(), 0, n - 1)) << IsaName(isa) << " n=" << n;
          }
        }
      }
    }
  }
}

TEST(MaxAbsTest, EveryVariantMatchesRefAndFlagsNanAndInfAnywhere) {
  using MaxFn = float (*)(const float*, int64_t, int64_t);
  const std::pair<Isa, MaxFn> variants[] = {{Isa::kRef, MaxAbs_ref},
                                            {Isa::kPortable, MaxAbs_portable},
                                            {Isa::kAvx2, MaxAbs_avx2},
                                            {Isa::kAvx512Vnni, MaxAbs_avx512}};
  const float inf = std::numeric_limits<float>::infinity();
  base::Rng rng(11);
  for (const auto& [isa, fn] : variants) {
    if (!CpuSupports(isa)) continue;
    EXPECT_EQ(fn(nullptr, 0, 0), 0.0f) << IsaName(isa);
    for (int64_t n : {1, 31, 32, 33, 63, 64, 65, 200, 1000}) {
      std::vector<float> x = RandomValues(rng, n);
      x[0] = -0.0f;
      // The largest magnitude, negative, at a varying place; a denormal somewhere.
      const int64_t at = static_cast<int64_t>(rng.UniformInt(static_cast<int>(n)));
      x[at] = -1e30f;
      if (n > 2) x[n / 2] = 1e-41f;
      EXPECT_EQ(fn(x.data(), 0, n), 1e30f) << IsaName(isa) << " n=" << n;
      EXPECT_EQ(fn(x.data(), 0, n), MaxAbs_ref(x.data(), 0, n)) << IsaName(isa);
      if (n > 3) {
        // A sub-range that excludes the big value sees the next largest.
        const int64_t lo = at + 1;
        EXPECT_EQ(fn(x.data(), lo, n), MaxAbs_ref(x.data(), lo, n)) << IsaName(isa);
      }
      for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
        for (float bad : {std::numeric_limits<float>::quiet_NaN(), inf, -inf}) {
          std::vector<float> y = x;
          y[pos] = bad;
          EXPECT_EQ(fn(y.data(), 0, n), inf) << IsaName(isa) << " n=" << n << " pos=" << pos;
        }
      }
    }
  }
}

}  // namespace
}  // namespace fedge::kernels

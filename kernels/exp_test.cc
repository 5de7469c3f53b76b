#include "kernels/exp.h"

#include <cmath>
#include <limits>
#include <vector>

#include "base/rng.h"
#include "gtest/gtest.h"

namespace fedge::kernels {
namespace {

const int64_t kSizes[] = {0, 1, 7, 15, 16, 17, 33, 100, 4099};

std::vector<float> Uniform(base::Rng& rng, int64_t n, float lo, float hi) {
  std::vector<float> v(n);
  for (float& x : v) x = lo + (hi - lo) * rng.UniformFloat();
  return v;
}

class ExpVariantTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam())) GTEST_SKIP() << "CPU lacks " << IsaName(GetParam());
  }
};

// Within 2e-7 relative of std::exp, except below e^−87, where both are below 2e−38.
TEST_P(ExpVariantTest, ExpShiftSumMatchesStdExp) {
  base::Rng rng(1);
  for (int64_t n : kSizes) {
    const std::vector<float> x = Uniform(rng, n, -100.0f, 20.0f);
    const float shift = 12.5f;
    std::vector<float> want(n + 1, 7.0f), got(want);
    const float sum_want = ExpShiftSum_ref(x.data(), n, shift, want.data());
    const float sum_got = ExpShiftSum(x.data(), n, shift, got.data(), GetParam());
    for (int64_t i = 0; i < n; ++i) {
      if (x[i] - shift < -87.0f) {
        ASSERT_LE(got[i], 2e-38f) << i;
        ASSERT_LE(want[i], 2e-38f) << i;
      } else {
        ASSERT_NEAR(got[i], want[i], 2e-7f * want[i]) << "x=" << x[i] << " n=" << n;
      }
    }
    EXPECT_EQ(got[n], 7.0f);  // nothing written past n
    EXPECT_NEAR(sum_got, sum_want, 1e-6f * sum_want + 1e-30f) << "n=" << n;
  }
}

TEST_P(ExpVariantTest, ExpIsExactAtZeroAndFiniteAtTheClamps) {
  const std::vector<float> x = {0.0f, -1000.0f, 1000.0f, 88.0f, -87.0f, 1.0f};
  std::vector<float> y(x.size());
  ExpShiftSum(x.data(), static_cast<int64_t>(x.size()), 0.0f, y.data(), GetParam());
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_GT(y[1], 0.0f);
  EXPECT_LT(y[1], 2e-38f);
  EXPECT_TRUE(std::isfinite(y[2]));
  EXPECT_NEAR(y[3], std::exp(88.0f), 2e-7f * std::exp(88.0f));
  EXPECT_NEAR(y[5], 2.7182817f, 1e-6f);
}

// A NaN (from a model whose activations overflowed) comes out as NaN, without converting
// NaN to an integer on the way (undefined behaviour; found by the language-model fuzzer).
// UBSan builds (scripts/fuzz.sh) trap it; elsewhere the output is checked.
TEST_P(ExpVariantTest, NaNComesThroughAsNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x(40, 1.0f);
  x[3] = nan;
  x[37] = nan;  // in the vector body and the tail
  std::vector<float> y(x.size());
  const float sum = ExpShiftSum(x.data(), static_cast<int64_t>(x.size()), 0.0f, y.data(), GetParam());
  EXPECT_TRUE(std::isnan(y[3]));
  EXPECT_TRUE(std::isnan(y[37]));
  EXPECT_NEAR(y[0], 2.7182817f, 1e-6f);
  EXPECT_TRUE(std::isnan(sum));
  std::vector<float> a(40, 0.5f), b(40, 2.0f), out(40);
  a[5] = nan;
  SiluMul(a.data(), b.data(), 40, out.data(), GetParam());
  EXPECT_TRUE(std::isnan(out[5]));
  EXPECT_FALSE(std::isnan(out[4]));
}

TEST_P(ExpVariantTest, SiluGateAndItsGradientMatchTheReference) {
  base::Rng rng(2);
  for (int64_t n : kSizes) {
    const std::vector<float> a = Uniform(rng, n, -30.0f, 30.0f);
    const std::vector<float> b = Uniform(rng, n, -3.0f, 3.0f);
    const std::vector<float> dy = Uniform(rng, n, -1.0f, 1.0f);
    std::vector<float> want(n + 1, 7.0f), got(want);
    SiluMul_ref(a.data(), b.data(), n, want.data());
    SiluMul(a.data(), b.data(), n, got.data(), GetParam());
    std::vector<float> da_want(n + 1, 7.0f), da_got(da_want), db_want(da_want), db_got(da_want);
    SiluMulBackward_ref(a.data(), b.data(), dy.data(), n, da_want.data(), db_want.data());
    SiluMulBackward(a.data(), b.data(), dy.data(), n, da_got.data(), db_got.data(), GetParam());
    for (int64_t i = 0; i < n + 1; ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-6f * std::fabs(want[i]) + 1e-30f) << "a=" << a[i];
      ASSERT_NEAR(da_got[i], da_want[i], 1e-5f * std::fabs(da_want[i]) + 1e-12f) << "a=" << a[i];
      ASSERT_NEAR(db_got[i], db_want[i], 1e-6f * std::fabs(db_want[i]) + 1e-30f) << "a=" << a[i];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ExpVariantTest,
                         ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni),
                         [](const ::testing::TestParamInfo<Isa>& i) {
                           return std::string(IsaName(i.param));
                         });

}  // namespace
}  // namespace fedge::kernels

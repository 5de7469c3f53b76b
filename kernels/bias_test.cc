#include "kernels/bias.h"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "base/rng.h"
#include "gtest/gtest.h"
#include "kernels/cpu.h"

namespace fedge::kernels {
namespace {

// Rows around the grouping of BiasAddGrad (groups of up to 16 rows, at least two groups),
// columns below, at and above the vector widths, the zoo's layer widths (6, 16, 84, 120),
// and widths whose groups pass the 1024-float lane buffer.
const int64_t kRows[] = {0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 1025};
const int kCols[] = {1, 2, 3, 5, 6, 7, 8, 10, 15, 16, 17, 32, 33, 64, 84, 120, 513, 1030};

std::vector<float> Normals(base::Rng& rng, int64_t n) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.Normal());
  return v;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string Describe(int64_t rows, int cols) {
  return "rows=" + std::to_string(rows) + " cols=" + std::to_string(cols);
}

class BiasVariantTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam())) GTEST_SKIP() << "CPU lacks " << IsaName(GetParam());
  }
};

TEST_P(BiasVariantTest, BiasAddIsBitExactWithRef) {
  base::Rng rng(1);
  for (int64_t rows : kRows) {
    for (int cols : kCols) {
      const std::vector<float> y0 = Normals(rng, rows * cols), bias = Normals(rng, cols);
      std::vector<float> want(y0), got(y0);
      BiasAdd_ref(want.data(), rows, cols, bias.data());
      BiasAdd(got.data(), rows, cols, bias.data(), GetParam());
      ASSERT_TRUE(SameBits(want, got)) << Describe(rows, cols);
    }
  }
}

TEST_P(BiasVariantTest, BiasAddTransposedIsBitExactWithRef) {
  base::Rng rng(2);
  for (int64_t rows : kRows) {
    for (int cols : kCols) {
      std::vector<float> yt = Normals(rng, rows * cols);
      if (!yt.empty()) yt[0] = -0.0f;  // + 0.0f without a bias makes it +0
      const std::vector<float> bias = Normals(rng, cols);
      for (bool with_bias : {false, true}) {
        const float* b = with_bias ? bias.data() : nullptr;
        std::vector<float> want(rows * cols, 7.0f), got(want);
        BiasAddTransposed_ref(yt.data(), rows, cols, b, want.data());
        BiasAddTransposed(yt.data(), rows, cols, b, got.data(), GetParam());
        ASSERT_TRUE(SameBits(want, got)) << Describe(rows, cols) << " bias=" << with_bias;
      }
    }
  }
}

// BiasAddGrad sums in a different order than the reference (bias.h): within
// 2·rows·ε·Σ|dy| of it, and bit-exact with the portable variant.
TEST_P(BiasVariantTest, BiasAddGradIsWithinTheSummationBoundOfRef) {
  base::Rng rng(3);
  for (int64_t rows : kRows) {
    for (int cols : kCols) {
      SCOPED_TRACE(Describe(rows, cols));
      const std::vector<float> dy = Normals(rng, rows * cols), db0 = Normals(rng, cols);
      std::vector<float> want(db0), got(db0), portable(db0);
      BiasAddGrad_ref(dy.data(), rows, cols, want.data());
      BiasAddGrad(dy.data(), rows, cols, got.data(), GetParam());
      BiasAddGrad_portable(dy.data(), rows, cols, portable.data());
      ASSERT_TRUE(SameBits(portable, got));
      for (int j = 0; j < cols; ++j) {
        double abs_sum = std::fabs(db0[j]);
        for (int64_t r = 0; r < rows; ++r) abs_sum += std::fabs(dy[r * cols + j]);
        ASSERT_LE(std::fabs(static_cast<double>(got[j]) - want[j]),
                  2.0 * (rows + 1) * FLT_EPSILON * abs_sum)
            << "column " << j;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, BiasVariantTest,
                         ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

TEST(BiasRefTest, BiasAddGradAccumulatesColumnSums) {
  const float dy[] = {1, 2, 3, 4, 5, 6};  // 3 rows × 2 columns
  float db[] = {10, 20};
  BiasAddGrad_ref(dy, 3, 2, db);
  EXPECT_EQ(db[0], 19.0f);
  EXPECT_EQ(db[1], 32.0f);
}

TEST(BiasRefTest, BiasAddGradSumsIntegersExactlyInEveryVariant) {
  // Small integers: every order of summation is exact, so all variants agree with the ref.
  base::Rng rng(4);
  const int64_t rows = 333;
  const int cols = 6;
  std::vector<float> dy(rows * cols);
  for (float& v : dy) v = static_cast<float>(static_cast<int>(rng.UniformInt(21)) - 10);
  std::vector<float> want(cols, 0.0f);
  BiasAddGrad_ref(dy.data(), rows, cols, want.data());
  for (Isa isa : {Isa::kRef, Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni}) {
    std::vector<float> got(cols, 0.0f);
    BiasAddGrad(dy.data(), rows, cols, got.data(), isa);
    EXPECT_EQ(got, want) << IsaName(isa);
  }
}

}  // namespace
}  // namespace fedge::kernels

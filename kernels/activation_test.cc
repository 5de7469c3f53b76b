#include "kernels/activation.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "base/rng.h"
#include "gtest/gtest.h"
#include "kernels/cpu.h"

namespace fedge::kernels {
namespace {

// Below, at and above the 4-, 8- and 16-float vectors and their unrolled multiples; odd.
const int64_t kSizes[] = {0,  1,  3,  4,  5,  7,  8,   9,   15,  16,   17,
                          31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 4099};

// Normals with special values mixed in: ±0, ±Inf, NaN, subnormals, and large magnitudes
// (e^−x overflows).
std::vector<float> Values(base::Rng& rng, int64_t n) {
  const float specials[] = {0.0f,
                            -0.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::denorm_min(),
                            -std::numeric_limits<float>::denorm_min(),
                            100.0f,
                            -100.0f};
  std::vector<float> v(n);
  for (float& x : v) {
    x = rng.UniformInt(8) == 0 ? specials[rng.UniformInt(sizeof(specials) / sizeof(float))]
                               : static_cast<float>(3 * rng.Normal());
  }
  return v;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class ActivationVariantTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam())) GTEST_SKIP() << "CPU lacks " << IsaName(GetParam());
  }
};

TEST_P(ActivationVariantTest, ReluIsBitExactWithRef) {
  base::Rng rng(1);
  for (int64_t n : kSizes) {
    const std::vector<float> x = Values(rng, n), dy = Values(rng, n);
    std::vector<float> want(n + 1, 7.0f), got(want);  // the extra element: not written
    Relu_ref(x.data(), n, want.data());
    Relu(x.data(), n, got.data(), GetParam());
    ASSERT_TRUE(SameBits(want, got)) << "n=" << n;
    std::vector<float> dx_want(n + 1, 7.0f), dx_got(dx_want);
    ReluBackward_ref(want.data(), dy.data(), n, dx_want.data());
    ReluBackward(want.data(), dy.data(), n, dx_got.data(), GetParam());
    ASSERT_TRUE(SameBits(dx_want, dx_got)) << "n=" << n;
  }
}

TEST_P(ActivationVariantTest, LeakyReluIsBitExactWithRef) {
  base::Rng rng(2);
  for (float slope : {0.2f, 0.01f, 0.0f, 1.5f}) {
    for (int64_t n : kSizes) {
      const std::vector<float> x = Values(rng, n), dy = Values(rng, n);
      std::vector<float> want(n + 1, 7.0f), got(want);
      LeakyRelu_ref(x.data(), n, slope, want.data());
      LeakyRelu(x.data(), n, slope, got.data(), GetParam());
      ASSERT_TRUE(SameBits(want, got)) << "n=" << n << " slope=" << slope;
      std::vector<float> dx_want(n + 1, 7.0f), dx_got(dx_want);
      LeakyReluBackward_ref(x.data(), dy.data(), n, slope, dx_want.data());
      LeakyReluBackward(x.data(), dy.data(), n, slope, dx_got.data(), GetParam());
      ASSERT_TRUE(SameBits(dx_want, dx_got)) << "n=" << n << " slope=" << slope;
    }
  }
}

TEST_P(ActivationVariantTest, SigmoidIsBitExactWithRef) {
  base::Rng rng(3);
  for (int64_t n : kSizes) {
    const std::vector<float> x = Values(rng, n), dy = Values(rng, n);
    std::vector<float> want(n + 1, 7.0f), got(want);
    Sigmoid_ref(x.data(), n, want.data());
    Sigmoid(x.data(), n, got.data(), GetParam());
    ASSERT_TRUE(SameBits(want, got)) << "n=" << n;
    std::vector<float> dx_want(n + 1, 7.0f), dx_got(dx_want);
    SigmoidBackward_ref(want.data(), dy.data(), n, dx_want.data());
    SigmoidBackward(want.data(), dy.data(), n, dx_got.data(), GetParam());
    ASSERT_TRUE(SameBits(dx_want, dx_got)) << "n=" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ActivationVariantTest,
                         ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

TEST(ActivationRefTest, ReluKeepsNegativeZeroAndNaNLikeStdMax) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float x[] = {-1.0f, -0.0f, 0.0f, 2.0f, nan};
  float y[5];
  Relu_ref(x, 5, y);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_TRUE(std::signbit(y[1]));
  EXPECT_FALSE(std::signbit(y[2]));
  EXPECT_EQ(y[3], 2.0f);
  EXPECT_TRUE(std::isnan(y[4]));
}

TEST(ActivationRefTest, BackwardPassesFollowTheDefinitions) {
  const float x[] = {-2.0f, 0.0f, 3.0f};
  const float dy[] = {1.0f, 1.0f, 4.0f};
  float dx[3];
  LeakyReluBackward_ref(x, dy, 3, 0.25f, dx);
  EXPECT_EQ(std::vector<float>(dx, dx + 3), (std::vector<float>{0.25f, 0.25f, 4.0f}));
  const float y[] = {0.5f, 0.0f, 1.0f};
  SigmoidBackward_ref(y, dy, 3, dx);
  EXPECT_EQ(std::vector<float>(dx, dx + 3), (std::vector<float>{0.25f, 0.0f, 0.0f}));
}

}  // namespace
}  // namespace fedge::kernels

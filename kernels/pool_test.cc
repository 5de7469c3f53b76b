#include "kernels/pool.h"

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

PoolGeometry Geometry(int h, int w, int c, int k, int stride) {
  PoolGeometry g;
  g.height = h;
  g.width = w;
  g.channels = c;
  g.kernel = k;
  g.stride = stride;
  g.out_height = PoolOutputSize(h, k, stride);
  g.out_width = PoolOutputSize(w, k, stride);
  return g;
}

std::string Describe(const PoolGeometry& g, int batch) {
  return "h=" + std::to_string(g.height) + " w=" + std::to_string(g.width) +
         " c=" + std::to_string(g.channels) + " k=" + std::to_string(g.kernel) +
         " stride=" + std::to_string(g.stride) + " batch=" + std::to_string(batch);
}

// 2×2 / stride 2 (the specialized path) at the channel counts it unrolls (6, 16, 32, 64) and
// around them, tiling and not (odd sizes leave a row and a column no window reaches);
// overlapping windows (stride < kernel), gaps (stride > kernel), 1×1, and channel counts
// below, at and above the vector widths and the backward's 256-channel blocks.
std::vector<PoolGeometry> Geometries() {
  std::vector<PoolGeometry> out;
  for (int c : {1, 3, 6, 7, 8, 15, 16, 17, 32, 33, 64, 65}) {
    out.push_back(Geometry(24, 24, c, 2, 2));
    out.push_back(Geometry(8, 8, c, 2, 2));
    out.push_back(Geometry(7, 9, c, 2, 2));
    out.push_back(Geometry(9, 7, c, 3, 2));
    out.push_back(Geometry(6, 6, c, 3, 3));
    out.push_back(Geometry(5, 8, c, 2, 1));
    out.push_back(Geometry(7, 7, c, 2, 3));
    out.push_back(Geometry(3, 4, c, 1, 1));
    out.push_back(Geometry(4, 4, c, 4, 4));
  }
  for (int c : {255, 256, 257, 300, 513}) {
    out.push_back(Geometry(4, 4, c, 2, 2));
    out.push_back(Geometry(5, 5, c, 3, 2));
    out.push_back(Geometry(6, 6, c, 3, 3));
  }
  return out;
}

// Either random normals, or small integers (−2 .. 2) so that windows hold ties and both
// zero signs.
std::vector<float> Input(base::Rng& rng, size_t n, bool ties) {
  std::vector<float> v(n);
  for (float& x : v) {
    if (ties) {
      x = static_cast<float>(static_cast<int>(rng.UniformInt(5)) - 2);
      if (x == 0.0f && rng.UniformInt(2) == 0) x = -0.0f;
    } else {
      x = static_cast<float>(rng.Normal());
    }
  }
  return v;
}

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

class PoolVariantTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam())) GTEST_SKIP() << "CPU lacks " << IsaName(GetParam());
  }
};

TEST_P(PoolVariantTest, MaxPoolForwardIsBitExactWithRef) {
  const Isa isa = GetParam();
  base::Rng rng(1);
  for (const PoolGeometry& g : Geometries()) {
    for (int batch : {1, 3}) {
      for (bool ties : {false, true}) {
        SCOPED_TRACE(Describe(g, batch) + (ties ? " ties" : ""));
        const std::vector<float> x = Input(rng, batch * g.input_size(), ties);
        std::vector<float> want(batch * g.output_size(), 99.0f), got(want);
        MaxPoolForward_ref(g, x.data(), batch, want.data());
        MaxPoolForward(g, x.data(), batch, got.data(), isa);
        ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0);
      }
    }
  }
}

// Bit-exact except that a position that receives no gradient may hold −0 instead of +0
// (pool.h).
TEST_P(PoolVariantTest, MaxPoolBackwardMatchesRef) {
  const Isa isa = GetParam();
  base::Rng rng(2);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const PoolGeometry& g : Geometries()) {
    for (int batch : {1, 3}) {
      for (bool ties : {false, true}) {
        SCOPED_TRACE(Describe(g, batch) + (ties ? " ties" : ""));
        const std::vector<float> x = Input(rng, batch * g.input_size(), ties);
        std::vector<float> y(batch * g.output_size());
        MaxPoolForward_ref(g, x.data(), batch, y.data());
        const std::vector<float> dy = Input(rng, y.size(), false);
        // dx starts as NaN: every element must be written.
        std::vector<float> want(x.size(), nan), got(x.size(), nan);
        MaxPoolBackward_ref(g, x.data(), y.data(), dy.data(), batch, want.data());
        MaxPoolBackward(g, x.data(), y.data(), dy.data(), batch, got.data(), isa);
        for (size_t i = 0; i < x.size(); ++i) {
          ASSERT_TRUE(SameBits(want[i], got[i]) || (want[i] == 0.0f && got[i] == 0.0f))
              << "dx[" << i << "]: ref " << want[i] << ", got " << got[i];
        }
      }
    }
  }
}

TEST_P(PoolVariantTest, AvgPoolIsBitExactWithRef) {
  const Isa isa = GetParam();
  base::Rng rng(3);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const PoolGeometry& g : Geometries()) {
    for (int batch : {1, 3}) {
      SCOPED_TRACE(Describe(g, batch));
      const std::vector<float> x = Input(rng, batch * g.input_size(), false);
      std::vector<float> want(batch * g.output_size(), nan), got(want);
      AvgPoolForward_ref(g, x.data(), batch, want.data());
      AvgPoolForward(g, x.data(), batch, got.data(), isa);
      ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0);
      const std::vector<float> dy = Input(rng, want.size(), false);
      std::vector<float> dx_want(x.size(), nan), dx_got(x.size(), nan);
      AvgPoolBackward_ref(g, dy.data(), batch, dx_want.data());
      AvgPoolBackward(g, dy.data(), batch, dx_got.data(), isa);
      ASSERT_EQ(std::memcmp(dx_want.data(), dx_got.data(), x.size() * sizeof(float)), 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, PoolVariantTest,
                         ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

TEST(PoolRefTest, MaxPoolRoutesTheGradientToTheFirstMaximum) {
  // One 2×2 window over a 2×2 input with 1 channel; two equal maxima.
  const PoolGeometry g = Geometry(2, 2, 1, 2, 2);
  const float x[] = {1, 3, 3, 2};
  float y = 0;
  MaxPoolForward_ref(g, x, 1, &y);
  EXPECT_EQ(y, 3.0f);
  const float dy = 5;
  float dx[4];
  MaxPoolBackward_ref(g, x, &y, &dy, 1, dx);
  EXPECT_EQ(std::vector<float>(dx, dx + 4), (std::vector<float>{0, 5, 0, 0}));
}

TEST(PoolRefTest, AvgPoolSpreadsTheGradientAndLeavesUncoveredRowsZero) {
  // 3×3 input, 2×2 windows, stride 2: one window; the last row and column get nothing.
  const PoolGeometry g = Geometry(3, 3, 1, 2, 2);
  const float x[] = {1, 2, 0, 3, 6, 0, 0, 0, 0};
  float y = 0;
  AvgPoolForward_ref(g, x, 1, &y);
  EXPECT_EQ(y, 3.0f);
  const float dy = 8;
  float dx[9];
  AvgPoolBackward_ref(g, &dy, 1, dx);
  EXPECT_EQ(std::vector<float>(dx, dx + 9), (std::vector<float>{2, 2, 0, 2, 2, 0, 0, 0, 0}));
}

// Whatever the CPU: every cap runs some variant that agrees with the reference.
TEST(PoolDispatchTest, DispatcherMatchesRefAtEveryCap) {
  const PoolGeometry g = Geometry(24, 24, 6, 2, 2);
  base::Rng rng(4);
  const int batch = 2;
  const std::vector<float> x = Input(rng, batch * g.input_size(), false);
  std::vector<float> want(batch * g.output_size());
  MaxPoolForward_ref(g, x.data(), batch, want.data());
  for (Isa isa : {Isa::kRef, Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni}) {
    std::vector<float> got(want.size());
    MaxPoolForward(g, x.data(), batch, got.data(), isa);
    EXPECT_EQ(got, want) << IsaName(isa);
  }
}

}  // namespace
}  // namespace fedge::kernels

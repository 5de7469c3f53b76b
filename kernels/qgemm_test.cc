#include "kernels/qgemm.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "base/rng.h"
#include "gtest/gtest.h"
#include "kernels/cpu.h"
#include "kernels/quantize.h"

namespace fedge::kernels {
namespace {

std::vector<float> RandomMatrix(base::Rng& rng, int rows, int cols, float stddev) {
  std::vector<float> v(static_cast<size_t>(rows) * cols);
  for (float& x : v) x = stddev * static_cast<float>(rng.Normal());
  return v;
}

struct Operands {
  QuantizedActivations x;
  PackedWeightsS8 w;
  std::vector<float> bias;
};

Operands MakeOperands(base::Rng& rng, int m, int n, int k) {
  Operands o;
  std::vector<float> x = RandomMatrix(rng, m, k, 1.0f);
  std::vector<float> w = RandomMatrix(rng, n, k, 0.05f);
  if (m > 1) std::fill(x.begin() + k, x.begin() + 2 * k, 0.0f);  // an all-zero row
  if (n > 2) std::fill(w.begin() + 2 * k, w.begin() + 3 * k, 0.0f);
  QuantizeActivations(x.data(), m, k, k, &o.x, Isa::kRef);
  QuantizeWeightsS8(w.data(), n, k, k, &o.w);
  o.bias = RandomMatrix(rng, 1, n, 0.5f);
  return o;
}

class QGemmS8VariantTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam())) GTEST_SKIP() << "CPU lacks " << IsaName(GetParam());
  }

  // Checks int32 and every epilogue against the reference, including that nothing is
  // written between n and the row stride.
  void Check(const Operands& o) {
    const Isa isa = GetParam();
    const int m = o.x.m, n = o.w.n, ld = n + 3;
    const std::string where = std::string(IsaName(isa)) + " m=" + std::to_string(m) +
                              " n=" + std::to_string(n) + " k=" + std::to_string(o.x.k);
    std::vector<int32_t> want(static_cast<size_t>(m) * ld, -7), got(want);
    QGemmS8Int32_ref(o.x, o.w, want.data(), ld);
    QGemmS8Int32(o.x, o.w, got.data(), ld, isa);
    ASSERT_EQ(got, want) << where;
    for (int variant = 0; variant < 4; ++variant) {
      Epilogue epi;
      epi.bias = (variant & 1) ? o.bias.data() : nullptr;
      epi.relu = (variant & 2) != 0;
      std::vector<float> yw(static_cast<size_t>(m) * ld, 99.0f), yg(yw);
      QGemmS8_ref(o.x, o.w, epi, yw.data(), ld);
      QGemmS8(o.x, o.w, epi, yg.data(), ld, isa);
      ASSERT_EQ(std::memcmp(yw.data(), yg.data(), yw.size() * sizeof(float)), 0)
          << where << " bias=" << (variant & 1) << " relu=" << (variant >> 1);
    }
  }
};

TEST_P(QGemmS8VariantTest, BitExactWithReferenceOverShapeSweep) {
  base::Rng rng(21);
  // Tiles: 6 (AVX-512) or 4 (AVX2, portable) rows; 16-channel panels, up to 4 per tile; K in
  // steps of 4 and padded to 64.
  for (int m : {1, 3, 4, 5, 6, 7, 11, 12, 13}) {
    for (int n : {1, 8, 15, 16, 17, 31, 33, 64, 65, 80, 200}) {
      for (int k : {1, 3, 4, 5, 63, 64, 65, 129}) {
        Check(MakeOperands(rng, m, n, k));
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_P(QGemmS8VariantTest, BitExactWithReferenceOnModelShapes) {
  base::Rng rng(22);
  const int shapes[][3] = {{64, 200, 784}, {64, 200, 200}, {64, 10, 200}, {1000, 6, 25},
                           {300, 16, 150},  {64, 120, 256}, {25, 7, 200}};
  for (const auto& s : shapes) {
    Check(MakeOperands(rng, s[0], s[1], s[2]));
    if (HasFatalFailure()) return;
  }
}

TEST_P(QGemmS8VariantTest, BitExactWithReferenceLarge) {
  base::Rng rng(23);
  Check(MakeOperands(rng, 512, 512, 512));
}

TEST_P(QGemmS8VariantTest, ExtremeValuesDoNotOverflowTheShiftedAccumulation) {
  // All ±127: the u8 = s8 + 128 trick reaches its largest intermediate sums.
  const int m = 7, n = 33, k = 4000;
  Operands o;
  std::vector<float> x(static_cast<size_t>(m) * k), w(static_cast<size_t>(n) * k);
  for (size_t i = 0; i < x.size(); ++i) x[i] = (i % 3 == 0) ? -1.0f : 1.0f;
  for (size_t i = 0; i < w.size(); ++i) w[i] = (i % 5 == 0) ? 1.0f : -1.0f;
  QuantizeActivations(x.data(), m, k, k, &o.x, Isa::kRef);
  QuantizeWeightsS8(w.data(), n, k, k, &o.w);
  o.bias.assign(n, 0.25f);
  Check(o);
}

INSTANTIATE_TEST_SUITE_P(Variants, QGemmS8VariantTest,
                         ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni,
                                           Isa::kNeonDot, Isa::kNeonI8mm),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

TEST(QGemmS8RefTest, MatchesDoubleProductOfDequantizedOperands) {
  base::Rng rng(24);
  const int m = 9, n = 21, k = 300;
  Operands o = MakeOperands(rng, m, n, k);
  std::vector<float> xd(m * k), wd(n * k), y(m * n);
  DequantizeActivations(o.x, xd.data(), k);
  DequantizeWeightsS8(o.w, wd.data(), k);
  Epilogue epi;
  epi.bias = o.bias.data();
  QGemmS8_ref(o.x, o.w, epi, y.data(), n);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double s = o.bias[j], mag = std::fabs(o.bias[j]);
      for (int kk = 0; kk < k; ++kk) {
        s += static_cast<double>(xd[i * k + kk]) * wd[j * k + kk];
        mag += std::fabs(static_cast<double>(xd[i * k + kk]) * wd[j * k + kk]);
      }
      EXPECT_NEAR(y[i * n + j], s, 1e-6 * mag + 1e-7) << i << "," << j;
    }
  }
}

TEST(QGemmS8RefTest, ReluClampsNegativeOutputsToPositiveZero) {
  const float x[] = {1.0f, -1.0f};
  const float w[] = {-1.0f, 1.0f};  // y = -2 before relu
  QuantizedActivations q;
  PackedWeightsS8 p;
  QuantizeActivations(x, 1, 2, 2, &q);
  QuantizeWeightsS8(w, 1, 2, 2, &p);
  Epilogue epi;
  epi.relu = true;
  float y = -5.0f;
  QGemmS8_ref(q, p, epi, &y, 1);
  EXPECT_EQ(y, 0.0f);
  EXPECT_FALSE(std::signbit(y));
}

}  // namespace
}  // namespace fedge::kernels

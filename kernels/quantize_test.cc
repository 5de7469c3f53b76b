#include "kernels/quantize.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "base/rng.h"
#include "gtest/gtest.h"
#include "kernels/cpu.h"

namespace fedge::kernels {
namespace {

constexpr Isa kAllIsas[] = {Isa::kRef, Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni,
                             Isa::kNeonDot, Isa::kNeonI8mm};

std::vector<float> RandomMatrix(base::Rng& rng, int rows, int cols, int ld, float stddev) {
  std::vector<float> v(static_cast<size_t>(rows) * ld, std::numeric_limits<float>::quiet_NaN());
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) v[static_cast<size_t>(i) * ld + j] = stddev * rng.Normal();
  }
  return v;
}

TEST(QuantizeActivationsTest, ScaleIsMaxAbsOver127AndRoundTripWithinHalfStep) {
  base::Rng rng(1);
  const int m = 7, k = 93, ldx = 101;  // NaNs between k and ldx must be ignored
  std::vector<float> x = RandomMatrix(rng, m, k, ldx, 3.0f);
  x[2 * ldx + 5] = -20.0f;  // the largest magnitude, negative
  QuantizedActivations q;
  QuantizeActivations(x.data(), m, k, ldx, &q);
  EXPECT_EQ(q.m, m);
  EXPECT_EQ(q.k, k);
  EXPECT_EQ(q.k_padded, 128);
  EXPECT_EQ(q.scale, 20.0f / 127.0f);
  EXPECT_EQ(q.row(2)[5], -127);
  std::vector<float> back(m * k);
  DequantizeActivations(q, back.data(), k);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < k; ++j) {
      EXPECT_LE(std::fabs(x[i * ldx + j] - back[i * k + j]), q.scale * (0.5f + 1e-4f))
          << i << "," << j;
    }
    for (int j = k; j < q.k_padded; ++j) EXPECT_EQ(q.row(i)[j], 0) << "padding " << i << "," << j;
  }
}

TEST(QuantizeActivationsTest, RoundsHalfToEven) {
  // max |x| = 127 makes the scale exactly 1.
  const float x[] = {127.0f, 2.5f, 3.5f, -2.5f, -3.5f, 0.5f, -0.5f, 1.5f, -127.0f, 126.5f};
  for (Isa isa : kAllIsas) {
    if (!CpuSupports(isa)) continue;
    QuantizedActivations q;
    QuantizeActivations(x, 1, 10, 10, &q, isa);
    ASSERT_EQ(q.scale, 1.0f);
    const int8_t want[] = {127, 2, 4, -2, -4, 0, 0, 2, -127, 126};
    for (int j = 0; j < 10; ++j) EXPECT_EQ(q.row(0)[j], want[j]) << IsaName(isa) << " " << j;
  }
}

TEST(QuantizeActivationsTest, AllZeroTensorHasScaleOneAndZeroValues) {
  std::vector<float> x(3 * 70, 0.0f);
  x[5] = -0.0f;
  for (Isa isa : kAllIsas) {
    if (!CpuSupports(isa)) continue;
    QuantizedActivations q;
    QuantizeActivations(x.data(), 3, 70, 70, &q, isa);
    EXPECT_EQ(q.scale, 1.0f);
    for (int8_t v : q.data) EXPECT_EQ(v, 0);
  }
}

TEST(QuantizeActivationsTest, EmptyTensor) {
  QuantizedActivations q;
  QuantizeActivations(nullptr, 0, 10, 10, &q);
  EXPECT_EQ(q.m, 0);
  EXPECT_TRUE(q.data.empty());
  EXPECT_EQ(q.scale, 1.0f);
}

TEST(QuantizeActivationsTest, EveryIsaMatchesReferenceBitForBit) {
  base::Rng rng(2);
  for (int k : {1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 784}) {
    for (int m : {1, 2, 5}) {
      const int ldx = k + 3;
      std::vector<float> x = RandomMatrix(rng, m, k, ldx, 0.7f);
      // Exact ties: multiples of scale/2 after forcing max = 127 (scale 1).
      x[0] = 127.0f;
      if (k > 2) x[1] = 4.5f, x[2] = -5.5f;
      QuantizedActivations want;
      QuantizeActivations(x.data(), m, k, ldx, &want, Isa::kRef);
      for (Isa isa : kAllIsas) {
        if (!CpuSupports(isa)) continue;
        QuantizedActivations got;
        QuantizeActivations(x.data(), m, k, ldx, &got, isa);
        EXPECT_EQ(got.scale, want.scale) << IsaName(isa) << " k=" << k;
        EXPECT_EQ(got.data, want.data) << IsaName(isa) << " m=" << m << " k=" << k;
      }
    }
  }
}

TEST(QuantizeActivationsTest, ReusedOutputKeepsItsStorage) {
  base::Rng rng(3);
  std::vector<float> x = RandomMatrix(rng, 4, 50, 50, 1.0f);
  QuantizedActivations q;
  QuantizeActivations(x.data(), 4, 50, 50, &q);
  const int8_t* p = q.data.data();
  for (float& v : x) v *= 2;
  QuantizeActivations(x.data(), 4, 50, 50, &q);
  EXPECT_EQ(q.data.data(), p);
}

TEST(QuantizeWeightsS8Test, PerChannelScalesRoundTripAndRowSums) {
  base::Rng rng(4);
  const int n = 37, k = 70, ldw = 75;
  std::vector<float> w = RandomMatrix(rng, n, k, ldw, 0.1f);
  for (int kk = 0; kk < k; ++kk) w[3 * ldw + kk] = 0.0f;  // an all-zero channel
  w[5 * ldw + 9] = 8.0f;                                  // one channel with a large weight
  PackedWeightsS8 p;
  QuantizeWeightsS8(w.data(), n, k, ldw, &p);
  EXPECT_EQ(p.n, n);
  EXPECT_EQ(p.k, k);
  EXPECT_EQ(p.k_padded, 128);
  EXPECT_EQ(p.n_padded, 48);
  ASSERT_EQ(p.packed.size(), static_cast<size_t>(48 * 128));
  ASSERT_EQ(p.scales.size(), 48u);
  ASSERT_EQ(p.row_sums.size(), 48u);
  EXPECT_EQ(p.scales[3], 1.0f);
  EXPECT_EQ(p.scales[5], 8.0f / 127.0f);
  EXPECT_EQ(p.at(5, 9), 127);
  for (int j = 0; j < p.n_padded; ++j) {
    float max_abs = 0;
    for (int kk = 0; kk < k && j < n; ++kk) max_abs = std::max(max_abs, std::fabs(w[j * ldw + kk]));
    if (j < n && max_abs > 0) {
      EXPECT_EQ(p.scales[j], max_abs / 127.0f) << j;
    }
    if (j >= n) {
      EXPECT_EQ(p.scales[j], 1.0f) << "padding channel " << j;
    }
    int32_t sum = 0;
    for (int kk = 0; kk < p.k_padded; ++kk) {
      const int8_t q = p.at(j, kk);
      sum += q;
      if (j >= n || kk >= k) {
        EXPECT_EQ(q, 0) << "padding at " << j << "," << kk;
      } else {
        EXPECT_LE(std::fabs(w[j * ldw + kk] - q * p.scales[j]), p.scales[j] * (0.5f + 1e-4f))
            << j << "," << kk;
        EXPECT_EQ(q, static_cast<int8_t>(std::nearbyint(w[j * ldw + kk] / p.scales[j])));
      }
    }
    EXPECT_EQ(p.row_sums[j], sum) << j;
  }
}

TEST(QuantizeWeightsS8Test, PackedLayoutIsTheDocumentedVnniLayout) {
  base::Rng rng(5);
  const int n = 20, k = 9;
  std::vector<float> w = RandomMatrix(rng, n, k, k, 1.0f);
  PackedWeightsS8 p;
  QuantizeWeightsS8(w.data(), n, k, k, &p);
  for (int j = 0; j < n; ++j) {
    for (int kk = 0; kk < k; ++kk) {
      const size_t off = static_cast<size_t>(j / 16) * p.k_padded * 16 + (kk / 4) * 64 +
                         (j % 16) * 4 + kk % 4;
      EXPECT_EQ(p.packed[off],
                static_cast<int8_t>(std::nearbyint(w[j * k + kk] / p.scales[j])));
    }
  }
}

TEST(QuantizeWeightsS8Test, DequantizeMatchesAt) {
  base::Rng rng(6);
  const int n = 17, k = 65;
  std::vector<float> w = RandomMatrix(rng, n, k, k, 1.0f);
  PackedWeightsS8 p;
  QuantizeWeightsS8(w.data(), n, k, k, &p);
  const int ldo = k + 2;
  std::vector<float> out(n * ldo, -1.0f);
  DequantizeWeightsS8(p, out.data(), ldo);
  for (int j = 0; j < n; ++j) {
    for (int kk = 0; kk < k; ++kk) EXPECT_EQ(out[j * ldo + kk], p.at(j, kk) * p.scales[j]);
    EXPECT_EQ(out[j * ldo + k], -1.0f) << "wrote past k";
  }
}

TEST(QuantizeWeightsS8Test, FusedDequantizedOutputMatchesDequantize) {
  base::Rng rng(16);
  const int n = 19, k = 70;
  std::vector<float> w = RandomMatrix(rng, n, k, k, 2.0f);
  PackedWeightsS8 p;
  const int ldd = k + 3;
  std::vector<float> fused(n * ldd, -1.0f), separate(n * ldd, -1.0f);
  QuantizeWeightsS8(w.data(), n, k, k, &p, fused.data(), ldd);
  DequantizeWeightsS8(p, separate.data(), ldd);
  EXPECT_EQ(fused, separate);
}

TEST(PackTransposedActivationsS8Test, IsTheTransposeWithItsScaleAndColumnSums) {
  base::Rng rng(21);
  PackedWeightsS8 t;  // reused across shapes, larger first
  for (const auto& [m, k] : std::vector<std::pair<int, int>>{{70, 130}, {64, 784}, {5, 9}, {1, 1}, {64, 200}, {13, 16}}) {
    std::vector<float> x = RandomMatrix(rng, m, k, k, 1.0f);
    QuantizedActivations a;
    QuantizeActivations(x.data(), m, k, k, &a);
    PackTransposedActivationsS8(a, 0.25f, &t);
    ASSERT_EQ(t.n, k);
    ASSERT_EQ(t.k, m);
    ASSERT_EQ(t.k_padded, PadK(m));
    ASSERT_EQ(t.n_padded, (k + 15) / 16 * 16);
    ASSERT_EQ(t.packed.size(), static_cast<size_t>(t.n_padded) * t.k_padded);
    for (int i = 0; i < t.n_padded; ++i) {
      int32_t sum = 0;
      for (int b = 0; b < t.k_padded; ++b) {
        const int8_t want = i < k && b < m ? a.row(b)[i] : 0;
        ASSERT_EQ(t.at(i, b), want) << "m=" << m << " k=" << k << " at " << i << "," << b;
        sum += want;
      }
      EXPECT_EQ(t.row_sums[i], sum);
      EXPECT_EQ(t.scales[i], 0.25f);
    }
  }
}

TEST(QuantizeWeightsS8Test, RequantizingIntoReusedOutputGivesTheSameResult) {
  base::Rng rng(7);
  std::vector<float> a = RandomMatrix(rng, 40, 100, 100, 1.0f);
  std::vector<float> b = RandomMatrix(rng, 5, 7, 7, 1.0f);
  PackedWeightsS8 fresh, reused;
  QuantizeWeightsS8(a.data(), 40, 100, 100, &reused);
  QuantizeWeightsS8(b.data(), 5, 7, 7, &reused);
  QuantizeWeightsS8(b.data(), 5, 7, 7, &fresh);
  EXPECT_EQ(reused.packed, fresh.packed);
  EXPECT_EQ(reused.scales, fresh.scales);
  EXPECT_EQ(reused.row_sums, fresh.row_sums);
}

}  // namespace
}  // namespace fedge::kernels

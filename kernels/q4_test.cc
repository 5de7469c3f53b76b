#include "kernels/q4.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FEDGE_Q4_TEST_X86 1
#endif

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "base/rng.h"
#include "gtest/gtest.h"
#include "kernels/cpu.h"

namespace fedge::kernels {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

#ifdef FEDGE_Q4_TEST_X86
bool HasF16c() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("f16c");
}

__attribute__((target("f16c"))) uint16_t HwFloatToHalf(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

__attribute__((target("f16c"))) float HwHalfToFloat(uint16_t h) { return _cvtsh_ss(h); }
#else
// No F16C off x86: the tests against the hardware conversion skip.
bool HasF16c() { return false; }
uint16_t HwFloatToHalf(float) { return 0; }
float HwHalfToFloat(uint16_t) { return 0.0f; }
#endif

TEST(HalfTest, BlockIs18Bytes) { EXPECT_EQ(sizeof(BlockQ4), 18u); }

TEST(HalfTest, KnownValues) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);  // the tie above the largest half goes to inf
  EXPECT_EQ(FloatToHalf(1e10f), 0x7C00);
  EXPECT_EQ(FloatToHalf(-INFINITY), 0xFC00);
  EXPECT_EQ(FloatToHalf(0x1p-24f), 0x0001);     // smallest subnormal
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);     // tie, to even (zero)
  EXPECT_EQ(FloatToHalf(0x1.8p-24f), 0x0002);   // tie, to even (2)
  EXPECT_EQ(FloatToHalf(0x1.000002p-25f), 0x0001);
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3C00);           // tie, to even
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3C02);       // tie, to even
  EXPECT_EQ(FloatToHalf(0x1.ffcp-15f), 0x0400);  // tie above the largest subnormal, to even
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(NAN))));
  EXPECT_EQ(HalfToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0xFC00), -INFINITY);
}

TEST(HalfTest, HalfToFloatExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_EQ(FloatToHalf(f) & 0x7DFF, h & 0x7DFF) << h;  // same sign and payload, quiet
    } else {
      EXPECT_EQ(FloatToHalf(f), h) << h;
    }
  }
}

TEST(HalfTest, HalfToFloatExhaustiveAgainstF16c) {
  if (!HasF16c()) GTEST_SKIP() << "CPU lacks F16C (or is not x86)";
  for (uint32_t h = 0; h < 65536; ++h) {
    EXPECT_EQ(Bits(HalfToFloat(static_cast<uint16_t>(h))),
              Bits(HwHalfToFloat(static_cast<uint16_t>(h))))
        << std::hex << h;
  }
}

TEST(HalfTest, FloatToHalfAgainstF16c) {
  if (!HasF16c()) GTEST_SKIP() << "CPU lacks F16C (or is not x86)";
  // Every float whose low 12 mantissa bits are 0x000, 0x001, 0x7FF, 0x800, 0x801 or 0xFFF
  // (ties and their neighbours at every exponent), plus random bit patterns.
  const uint32_t lows[] = {0x000, 0x001, 0xFFF, 0x1000, 0x1001, 0x0FFF, 0x1FFF};
  for (uint32_t hi = 0; hi < (1u << 19); ++hi) {
    for (uint32_t low : lows) {
      const uint32_t u = (hi << 13) | low;
      const float f = FromBits(u);
      ASSERT_EQ(FloatToHalf(f), HwFloatToHalf(f)) << std::hex << u;
    }
  }
  base::Rng rng(31);
  for (int i = 0; i < 2000000; ++i) {
    const float f = FromBits(static_cast<uint32_t>(rng.NextU64()));
    ASSERT_EQ(FloatToHalf(f), HwFloatToHalf(f)) << std::hex << Bits(f);
  }
}

int QAt(const BlockQ4& b, int t) { return t < 16 ? (b.qs[t] & 15) : (b.qs[t - 16] >> 4); }

TEST(QuantizeRowQ4Test, PacksNibblesAndScaleAsDocumented) {
  float x[32];
  for (int t = 0; t < 32; ++t) x[t] = 0.25f * (t - 15);  // largest magnitude: 4 at t = 31
  BlockQ4 b;
  QuantizeRowQ4(x, 32, &b);
  const float d = 4.0f / -8.0f;
  EXPECT_EQ(b.d, FloatToHalf(d));
  for (int t = 0; t < 32; ++t) {
    const float r = std::nearbyint(x[t] / d) + 8.0f;
    const int want = static_cast<int>(r < 0 ? 0 : r > 15 ? 15 : r);
    EXPECT_EQ(QAt(b, t), want) << t;
  }
  EXPECT_EQ(b.qs[0] & 15, QAt(b, 0));
  EXPECT_EQ(b.qs[0] >> 4, QAt(b, 16));
  EXPECT_EQ(QAt(b, 31), 0);  // x = a maps to q - 8 = -8
}

// A NaN in a block maps to q = 0 (no NaN-to-integer conversion, which is undefined; found
// by the language-model fuzzer under UBSan); the block's other values as usual.
TEST(QuantizeRowQ4Test, ANaNValueMapsToZeroWithoutUndefinedBehaviour) {
  float x[32];
  for (int t = 0; t < 32; ++t) x[t] = 0.25f * (t - 15);
  x[7] = std::nanf("");
  BlockQ4 b;
  QuantizeRowQ4(x, 32, &b);
  EXPECT_EQ(b.d, FloatToHalf(4.0f / -8.0f));
  EXPECT_EQ(QAt(b, 7), 0);
  EXPECT_EQ(QAt(b, 31), 0);
  EXPECT_EQ(QAt(b, 15), 8);
}

TEST(QuantizeRowQ4Test, AllZeroBlockHasZeroScaleAndQ8) {
  float x[64] = {};
  BlockQ4 b[2];
  QuantizeRowQ4(x, 64, b);
  for (const BlockQ4& blk : b) {
    EXPECT_EQ(HalfToFloat(blk.d), 0.0f);  // d = 0 / -8 = -0
    for (int t = 0; t < 32; ++t) EXPECT_EQ(QAt(blk, t), 8);
  }
  float back[64];
  DequantizeRowQ4(b, 64, back);
  for (float v : back) EXPECT_EQ(v, 0.0f);
}

TEST(QuantizeRowQ4Test, RoundTripErrorWithinHalfStep) {
  base::Rng rng(32);
  const int count = 32 * 50;
  std::vector<float> x(count), back(count);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  std::vector<BlockQ4> blocks(count / 32);
  QuantizeRowQ4(x.data(), count, blocks.data());
  DequantizeRowQ4(blocks.data(), count, back.data());
  for (int b = 0; b < count / 32; ++b) {
    float a = 0;
    for (int t = 0; t < 32; ++t) a = std::max(a, std::fabs(x[b * 32 + t]));
    const float d = a / 8.0f, dh = std::fabs(HalfToFloat(blocks[b].d));
    for (int t = 0; t < 32; ++t) {
      const float v = x[b * 32 + t];
      // Step |d|, rounded to half precision; the clamp at q = 15 costs up to one step for
      // values near -a (when a > 0) or +a (a < 0).
      const float err = std::fabs(v - back[b * 32 + t]);
      const float bound = std::fabs(v / d) <= 7.5f ? d / 2 + 8 * std::fabs(d - dh) + 1e-6f
                                                   : d + 8 * std::fabs(d - dh) + 1e-6f;
      EXPECT_LE(err, bound) << b << "," << t;
    }
  }
}

TEST(QuantizeWeightsQ4Test, BlocksPackedFormAndDequantization) {
  base::Rng rng(33);
  const int n = 19, k = 100, ldw = 103;
  std::vector<float> w(n * ldw);
  for (float& v : w) v = static_cast<float>(rng.Normal());
  PackedWeightsQ4 p;
  QuantizeWeightsQ4(w.data(), n, k, ldw, &p);
  EXPECT_EQ(p.k_padded, 128);
  EXPECT_EQ(p.blocks_per_row(), 4);
  ASSERT_EQ(p.blocks.size(), static_cast<size_t>(n * 4));
  EXPECT_EQ(p.blocks.size() * sizeof(BlockQ4), static_cast<size_t>(n) * 4 * 18);
  // Each row quantizes like QuantizeRowQ4 of the zero-padded row.
  for (int j = 0; j < n; ++j) {
    std::vector<float> row(128, 0.0f);
    std::copy(w.begin() + j * ldw, w.begin() + j * ldw + k, row.begin());
    BlockQ4 want[4];
    QuantizeRowQ4(row.data(), 128, want);
    EXPECT_EQ(std::memcmp(want, &p.blocks[j * 4], sizeof(want)), 0) << j;
    // Padding k: q = 8 (the block 100..127 is partly padding).
    for (int kk = k; kk < 128; ++kk) EXPECT_EQ(QAt(p.blocks[j * 4 + kk / 32], kk % 32), 8);
  }
  std::vector<float> deq(n * k);
  DequantizeWeightsQ4(p, deq.data(), k);
  for (int j = 0; j < n; ++j) {
    float row[128];
    DequantizeRowQ4(&p.blocks[j * 4], 128, row);
    for (int kk = 0; kk < k; ++kk) EXPECT_EQ(deq[j * k + kk], row[kk]);
  }
  // PackQ4 rebuilds the GEMM form from the blocks alone.
  PackedWeightsQ4 again;
  again.n = p.n;
  again.k = p.k;
  again.k_padded = p.k_padded;
  again.blocks = p.blocks;
  PackQ4(&again);
  EXPECT_EQ(again.packed, p.packed);
  EXPECT_EQ(again.scales, p.scales);
  EXPECT_EQ(again.sums, p.sums);
}

struct Q4Operands {
  QuantizedActivations x;
  PackedWeightsQ4 w;
  std::vector<float> bias;
};

Q4Operands MakeQ4Operands(base::Rng& rng, int m, int n, int k) {
  Q4Operands o;
  std::vector<float> x(static_cast<size_t>(m) * k), w(static_cast<size_t>(n) * k);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  for (float& v : w) v = 0.05f * static_cast<float>(rng.Normal());
  if (m > 1) std::fill(x.begin() + k, x.begin() + 2 * k, 0.0f);
  if (n > 2) std::fill(w.begin() + 2 * k, w.begin() + 3 * k, 0.0f);
  QuantizeActivations(x.data(), m, k, k, &o.x, Isa::kRef);
  QuantizeWeightsQ4(w.data(), n, k, k, &o.w);
  o.bias.resize(n);
  for (float& v : o.bias) v = 0.5f * static_cast<float>(rng.Normal());
  return o;
}

class QGemmQ4VariantTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam())) GTEST_SKIP() << "CPU lacks " << IsaName(GetParam());
  }

  void Check(const Q4Operands& o) {
    const Isa isa = GetParam();
    const int m = o.x.m, n = o.w.n, ld = n + 3;
    for (int variant = 0; variant < 4; ++variant) {
      Epilogue epi;
      epi.bias = (variant & 1) ? o.bias.data() : nullptr;
      epi.relu = (variant & 2) != 0;
      std::vector<float> yw(static_cast<size_t>(m) * ld, 99.0f), yg(yw);
      QGemmQ4_ref(o.x, o.w, epi, yw.data(), ld);
      QGemmQ4(o.x, o.w, epi, yg.data(), ld, isa);
      ASSERT_EQ(std::memcmp(yw.data(), yg.data(), yw.size() * sizeof(float)), 0)
          << IsaName(isa) << " m=" << m << " n=" << n << " k=" << o.x.k
          << " bias=" << (variant & 1) << " relu=" << (variant >> 1);
    }
  }
};

TEST_P(QGemmQ4VariantTest, BitExactWithReferenceOverShapeSweep) {
  base::Rng rng(34);
  for (int m : {1, 3, 4, 5, 6, 7, 9, 13}) {
    for (int n : {1, 8, 15, 16, 17, 33, 47, 48, 49, 65, 200}) {
      for (int k : {1, 5, 31, 32, 33, 63, 64, 65, 100, 129}) {
        Check(MakeQ4Operands(rng, m, n, k));
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_P(QGemmQ4VariantTest, BitExactWithReferenceOnModelShapes) {
  base::Rng rng(35);
  const int shapes[][3] = {{64, 200, 784}, {64, 10, 200}, {700, 6, 25}, {300, 16, 150},
                           {64, 120, 256}, {128, 128, 512}};
  for (const auto& s : shapes) {
    Check(MakeQ4Operands(rng, s[0], s[1], s[2]));
    if (HasFatalFailure()) return;
  }
}

TEST_P(QGemmQ4VariantTest, BitExactWithReferenceLarge) {
  base::Rng rng(36);
  Check(MakeQ4Operands(rng, 512, 512, 512));
}

INSTANTIATE_TEST_SUITE_P(Variants, QGemmQ4VariantTest,
                         ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni,
                                           Isa::kNeonDot, Isa::kNeonI8mm),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

TEST(QGemmQ4RefTest, MatchesDoubleProductOfDequantizedOperands) {
  base::Rng rng(37);
  const int m = 7, n = 13, k = 300;
  Q4Operands o = MakeQ4Operands(rng, m, n, k);
  std::vector<float> xd(m * k), wd(n * k), y(m * n);
  DequantizeActivations(o.x, xd.data(), k);
  DequantizeWeightsQ4(o.w, wd.data(), k);
  Epilogue epi;
  epi.bias = o.bias.data();
  QGemmQ4_ref(o.x, o.w, epi, y.data(), n);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double s = o.bias[j], mag = std::fabs(o.bias[j]);
      for (int kk = 0; kk < k; ++kk) {
        s += static_cast<double>(xd[i * k + kk]) * wd[j * k + kk];
        mag += std::fabs(static_cast<double>(xd[i * k + kk]) * wd[j * k + kk]);
      }
      EXPECT_NEAR(y[i * n + j], s, 1e-5 * mag + 1e-7) << i << "," << j;
    }
  }
}

}  // namespace
}  // namespace fedge::kernels

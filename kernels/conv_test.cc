#include "kernels/conv.h"

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

ConvGeometry Geometry(int h, int w, int c, int k, int stride, int pad) {
  ConvGeometry g;
  g.height = h;
  g.width = w;
  g.channels = c;
  g.kernel = k;
  g.stride = stride;
  g.padding = pad;
  g.out_height = ConvOutputSize(h, k, stride, pad);
  g.out_width = ConvOutputSize(w, k, stride, pad);
  return g;
}

std::string Describe(const ConvGeometry& g, int batch, int64_t ldx, int64_t ldc) {
  return "h=" + std::to_string(g.height) + " w=" + std::to_string(g.width) +
         " c=" + std::to_string(g.channels) + " k=" + std::to_string(g.kernel) +
         " stride=" + std::to_string(g.stride) + " pad=" + std::to_string(g.padding) +
         " batch=" + std::to_string(batch) + " ldx=" + std::to_string(ldx) +
         " ldc=" + std::to_string(ldc);
}

// Geometries around the vector widths (8 and 16 floats, 32 and 64 bytes) and the 32-byte
// copy blocks of the optimized im2col: odd sizes, kernels wider than the stride and the
// reverse, padding up to kernel − 1 (windows that start and end outside the input), 1×1
// kernels, and the zoo's convolutions (28×28×1 and 12×12×6, 5×5).
std::vector<ConvGeometry> Geometries() {
  std::vector<ConvGeometry> out = {
      Geometry(28, 28, 1, 5, 1, 0),  Geometry(12, 12, 6, 5, 1, 0), Geometry(28, 28, 1, 5, 1, 2),
      Geometry(8, 8, 16, 3, 1, 1),   Geometry(7, 9, 3, 3, 2, 1),   Geometry(5, 5, 8, 1, 1, 0),
      Geometry(1, 1, 1, 1, 1, 0),    Geometry(1, 1, 3, 3, 1, 1),   Geometry(4, 4, 2, 4, 3, 3),
      Geometry(16, 16, 32, 3, 2, 1), Geometry(9, 7, 17, 2, 2, 0),  Geometry(6, 11, 33, 3, 3, 2),
  };
  base::Rng rng(11);
  const int kChannels[] = {1, 2, 3, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33};
  while (out.size() < 150) {
    const int k = 1 + static_cast<int>(rng.UniformInt(5));
    const int stride = 1 + static_cast<int>(rng.UniformInt(3));
    const int pad = static_cast<int>(rng.UniformInt(k));
    const int h = 1 + static_cast<int>(rng.UniformInt(13));
    const int w = 1 + static_cast<int>(rng.UniformInt(13));
    const int c = kChannels[rng.UniformInt(sizeof(kChannels) / sizeof(kChannels[0]))];
    if (h + 2 * pad < k || w + 2 * pad < k) continue;
    out.push_back(Geometry(h, w, c, k, stride, pad));
  }
  return out;
}

template <typename T>
std::vector<T> RandomInput(base::Rng& rng, size_t n);

template <>
std::vector<float> RandomInput<float>(base::Rng& rng, size_t n) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.Normal());
  return v;
}

template <>
std::vector<int8_t> RandomInput<int8_t>(base::Rng& rng, size_t n) {
  std::vector<int8_t> v(n);
  for (int8_t& x : v) x = static_cast<int8_t>(static_cast<int>(rng.UniformInt(255)) - 127);
  return v;
}

// The optimized variants, each checked against the *_ref functions through the dispatcher.
class ConvVariantTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!CpuSupports(GetParam())) GTEST_SKIP() << "CPU lacks " << IsaName(GetParam());
  }
};

template <typename T>
void CheckIm2Col(Isa isa) {
  base::Rng rng(3);
  for (const ConvGeometry& g : Geometries()) {
    for (int batch : {1, 3}) {
      const int64_t k = g.k();
      // ldx: dense, and rows padded as the int8 convolution's quantized input is.
      for (int64_t ldx : {g.input_size(), g.input_size() + 13}) {
        // ldc: exactly K (the transposed convolution, int4), K rounded up to 16 (fp32
        // convolution) or 64 (int8), and an odd stride.
        for (int64_t ldc : {k, (k + 15) / 16 * 16, (k + 63) / 64 * 64, k + 7}) {
          SCOPED_TRACE(std::string(IsaName(isa)) + " " + Describe(g, batch, ldx, ldc));
          const std::vector<T> x = RandomInput<T>(rng, static_cast<size_t>(batch) * ldx);
          const int64_t rows = batch * g.rows();
          // One guard row past the matrix: no variant may write there.
          std::vector<T> want((rows + 1) * ldc, T(99)), got((rows + 1) * ldc, T(99));
          Im2Col_ref(g, x.data(), batch, ldx, want.data(), ldc);
          Im2Col(g, x.data(), batch, ldx, got.data(), ldc, isa);
          int64_t bad = -1;
          for (int64_t r = 0; r < rows && bad < 0; ++r) {
            if (std::memcmp(want.data() + r * ldc, got.data() + r * ldc, k * sizeof(T)) != 0) {
              bad = r;
            }
          }
          EXPECT_EQ(bad, -1) << "first row that differs in columns [0, K)";
          for (int64_t i = rows * ldc; i < (rows + 1) * ldc; ++i) {
            ASSERT_EQ(got[i], T(99)) << "wrote past the last row at " << i;
          }
        }
      }
    }
  }
}

TEST_P(ConvVariantTest, Im2ColIsBitExactWithRefFp32) { CheckIm2Col<float>(GetParam()); }

TEST_P(ConvVariantTest, Im2ColIsBitExactWithRefInt8) { CheckIm2Col<int8_t>(GetParam()); }

TEST(Im2ColTest, RefLaysOutWindowsWithZeroPadding) {
  // 2×3 input with 1 channel, values 1..6; 2×2 kernel, stride 1, padding 1: a 3×4 output.
  const ConvGeometry g = Geometry(2, 3, 1, 2, 1, 1);
  ASSERT_EQ(g.out_height, 3);
  ASSERT_EQ(g.out_width, 4);
  const float x[] = {1, 2, 3, 4, 5, 6};
  std::vector<float> cols(12 * 4, -1.0f);
  Im2Col_ref(g, x, 1, 6, cols.data(), 4);
  // Row (oh = 0, ow = 0): window rows −1 and 0, columns −1 and 0.
  EXPECT_EQ(std::vector<float>(cols.begin(), cols.begin() + 4), (std::vector<float>{0, 0, 0, 1}));
  // Row (oh = 1, ow = 2): window rows 0..1, columns 1..2.
  EXPECT_EQ(std::vector<float>(cols.begin() + 6 * 4, cols.begin() + 7 * 4),
            (std::vector<float>{2, 3, 5, 6}));
  // Row (oh = 2, ow = 3): window rows 1..2, columns 2..3.
  EXPECT_EQ(std::vector<float>(cols.begin() + 11 * 4, cols.begin() + 12 * 4),
            (std::vector<float>{6, 0, 0, 0}));
}

TEST_P(ConvVariantTest, Col2ImIsBitExactWithRef) {
  base::Rng rng(5);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Isa isa = GetParam();
  for (const ConvGeometry& g : Geometries()) {
    for (int batch : {1, 2}) {
      const int64_t k = g.k();
      for (int64_t ldc : {k, (k + 15) / 16 * 16, k + 5}) {
        SCOPED_TRACE(std::string(IsaName(isa)) + " " + Describe(g, batch, g.input_size(), ldc));
        const int64_t rows = batch * g.rows();
        // Columns [K, ldc) hold NaN: they must not reach dx.
        std::vector<float> cols(rows * ldc, nan);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < k; ++j) cols[r * ldc + j] = static_cast<float>(rng.Normal());
        }
        // dx starts as NaN: Col2Im zeroes it.
        std::vector<float> want(batch * g.input_size(), nan), got(want.size(), nan);
        Col2Im_ref(g, cols.data(), batch, ldc, want.data());
        Col2Im(g, cols.data(), batch, ldc, got.data(), isa);
        ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0);
      }
    }
  }
}

// Col2Im is the adjoint of Im2Col: ⟨Im2Col(x), c⟩ = ⟨x, Col2Im(c)⟩ for any x and c.
TEST(Col2ImTest, RefIsTheAdjointOfIm2Col) {
  base::Rng rng(9);
  for (const ConvGeometry& g : Geometries()) {
    const int batch = 2;
    const int64_t k = g.k(), rows = batch * g.rows();
    std::vector<float> x(batch * g.input_size()), c(rows * k);
    for (float& v : x) v = static_cast<float>(rng.Normal());
    for (float& v : c) v = static_cast<float>(rng.Normal());
    std::vector<float> cols(rows * k), dx(x.size());
    Im2Col_ref(g, x.data(), batch, g.input_size(), cols.data(), k);
    Col2Im_ref(g, c.data(), batch, k, dx.data());
    double lhs = 0, rhs = 0, scale = 0;
    for (size_t i = 0; i < cols.size(); ++i) {
      lhs += static_cast<double>(cols[i]) * c[i];
      scale += std::abs(static_cast<double>(cols[i]) * c[i]);
    }
    for (size_t i = 0; i < x.size(); ++i) rhs += static_cast<double>(x[i]) * dx[i];
    EXPECT_NEAR(lhs, rhs, 1e-5 * (1 + scale)) << Describe(g, batch, g.input_size(), k);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ConvVariantTest,
                         ::testing::Values(Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

// Whatever the CPU: every cap runs some variant that agrees with the reference.
TEST(ConvDispatchTest, DispatcherMatchesRefAtEveryCap) {
  const ConvGeometry g = Geometry(12, 12, 6, 5, 1, 0);
  base::Rng rng(1);
  const int batch = 2;
  const int64_t ldc = (g.k() + 15) / 16 * 16, rows = batch * g.rows();
  const std::vector<float> x = RandomInput<float>(rng, batch * g.input_size());
  std::vector<float> want(rows * ldc), dx_want(x.size());
  Im2Col_ref(g, x.data(), batch, g.input_size(), want.data(), ldc);
  Col2Im_ref(g, want.data(), batch, ldc, dx_want.data());
  for (Isa isa : {Isa::kRef, Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni}) {
    SCOPED_TRACE(IsaName(isa));
    std::vector<float> got(rows * ldc), dx(x.size());
    Im2Col(g, x.data(), batch, g.input_size(), got.data(), ldc, isa);
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_EQ(std::memcmp(want.data() + r * ldc, got.data() + r * ldc, g.k() * sizeof(float)), 0);
    }
    Col2Im(g, want.data(), batch, ldc, dx.data(), isa);
    EXPECT_EQ(dx, dx_want);
  }
}

}  // namespace
}  // namespace fedge::kernels

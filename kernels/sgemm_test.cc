#include "kernels/sgemm.h"

#include <cmath>
#include <vector>

#include "base/rng.h"
#include "gtest/gtest.h"
#include "kernels/cpu.h"

namespace fedge::kernels {
namespace {

// Plain triple loop in double: the reference every variant is checked against.
void SgemmRef(Trans ta, Trans tb, int m, int n, int k, float alpha, const float* a, int lda,
              const float* b, int ldb, float beta, float* c, int ldc) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int p = 0; p < k; ++p) {
        const float av = ta == Trans::kYes ? a[p * lda + i] : a[i * lda + p];
        const float bv = tb == Trans::kYes ? b[j * ldb + p] : b[p * ldb + j];
        s += static_cast<double>(av) * bv;
      }
      const double prev = beta == 0.0f ? 0.0 : beta * static_cast<double>(c[i * ldc + j]);
      c[i * ldc + j] = static_cast<float>(alpha * s + prev);
    }
  }
}

struct Variant {
  const char* name;
  Isa isa;
  sgemm_detail::SgemmFn fn;
};

class SgemmVariantTest : public ::testing::TestWithParam<Variant> {};

TEST_P(SgemmVariantTest, MatchesReferenceOverShapesAndTransposes) {
  const Variant v = GetParam();
  if (!CpuSupports(v.isa)) GTEST_SKIP() << "CPU lacks " << IsaName(v.isa);
  base::Rng rng(11);
  const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {16, 16, 16}, {17, 33, 65}, {64, 200, 784}};
  for (const auto& s : shapes) {
    const int m = s[0], n = s[1], k = s[2];
    for (Trans ta : {Trans::kNo, Trans::kYes}) {
      for (Trans tb : {Trans::kNo, Trans::kYes}) {
        for (float beta : {0.0f, 0.5f}) {
          const int lda = (ta == Trans::kYes ? m : k) + 3;
          const int ldb = (tb == Trans::kYes ? k : n) + 1;
          const int ldc = n + 2;
          std::vector<float> a((ta == Trans::kYes ? k : m) * lda), b((tb == Trans::kYes ? n : k) * ldb);
          std::vector<float> c(m * ldc), want;
          for (float& x : a) x = static_cast<float>(rng.Normal());
          for (float& x : b) x = static_cast<float>(rng.Normal());
          for (float& x : c) x = beta == 0.0f ? NAN : static_cast<float>(rng.Normal());
          want = c;
          SgemmRef(ta, tb, m, n, k, 1.5f, a.data(), lda, b.data(), ldb, beta, want.data(), ldc);
          v.fn(ta, tb, m, n, k, 1.5f, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
          for (int i = 0; i < m; ++i) {
            for (int j = 0; j < n; ++j) {
              ASSERT_NEAR(c[i * ldc + j], want[i * ldc + j], 1e-4 * std::sqrt(k) * 4)
                  << v.name << " m=" << m << " n=" << n << " k=" << k << " at " << i << "," << j;
            }
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, SgemmVariantTest,
    ::testing::Values(Variant{"sse2", Isa::kPortable, sgemm_detail::Sgemm_sse2},
                      Variant{"avx2", Isa::kAvx2, sgemm_detail::Sgemm_avx2},
                      Variant{"avx512", Isa::kAvx512Vnni, sgemm_detail::Sgemm_avx512}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace fedge::kernels

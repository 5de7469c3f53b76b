#include "base/rng.h"

#include <cmath>
#include <numeric>

#include "gtest/gtest.h"

namespace fedge::base {
namespace {

TEST(RngTest, SameSeedSameSequence) {
  Rng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const uint64_t x = a.NextU64();
    EXPECT_EQ(x, b.NextU64());
    differs |= x != c.NextU64();
  }
  EXPECT_TRUE(differs);
}

TEST(RngTest, StreamsAreIndependent) {
  Rng a(7, 1), b(7, 2);
  int equal = 0;
  for (int i = 0; i < 100; ++i) equal += a.NextU64() == b.NextU64();
  EXPECT_EQ(equal, 0);
}

TEST(RngTest, UniformMomentsAndRange) {
  Rng rng(1);
  const int n = 200000;
  double sum = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    const double u = rng.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    sq += u * u;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  EXPECT_NEAR(sq / n - (sum / n) * (sum / n), 1.0 / 12, 0.002);
}

TEST(RngTest, NormalMoments) {
  Rng rng(2);
  const int n = 200000;
  double sum = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    const double x = rng.Normal();
    sum += x;
    sq += x * x;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sq / n, 1.0, 0.02);
}

TEST(RngTest, GammaMeanEqualsShape) {
  for (double shape : {0.3, 1.0, 2.5}) {
    Rng rng(3);
    const int n = 100000;
    double sum = 0;
    for (int i = 0; i < n; ++i) sum += rng.Gamma(shape);
    EXPECT_NEAR(sum / n, shape, 0.03 * shape + 0.01) << "shape " << shape;
  }
}

TEST(RngTest, DirichletSumsToOne) {
  Rng rng(4);
  for (int t = 0; t < 100; ++t) {
    const std::vector<double> p = rng.Dirichlet(0.5, 10);
    ASSERT_EQ(p.size(), 10u);
    EXPECT_NEAR(std::accumulate(p.begin(), p.end(), 0.0), 1.0, 1e-12);
    for (double x : p) EXPECT_GE(x, 0.0);
  }
}

TEST(RngTest, UniformIntCoversRangeWithoutBias) {
  Rng rng(5);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 70000; ++i) ++counts[rng.UniformInt(7)];
  for (int c : counts) EXPECT_NEAR(c, 10000, 400);
}

}  // namespace
}  // namespace fedge::base

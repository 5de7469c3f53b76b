#include "privacy/rdp_accountant.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::privacy {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

constexpr double kInf = std::numeric_limits<double>::infinity();

// TF Privacy, tensorflow_privacy/privacy/analysis/rdp_accountant_test.py,
// testComputeRdpScalar: compute_rdp(0.1, 2, 10, 5) == 0.07737 (5 places).
TEST(RdpAccountantTest, TfPrivacyScalarCase) {
  auto rdp = ComputeRdp(0.1, 2.0, 10, std::vector<double>{5.0});
  ASSERT_THAT(rdp, IsOk());
  EXPECT_NEAR((*rdp)[0], 0.07737, 5e-6);
}

// TF Privacy rdp_accountant_test.py test_compute_rdp_sequence: q = 0.01, σ = 2.5, 50 steps,
// integer and fractional orders → [0.00065, 0.001085, 0.00218075, 0.023846, 167.416307, ∞]
// (absolute delta 1e-5 there, which we keep, plus the 1% relative acceptance bar).
TEST(RdpAccountantTest, TfPrivacySequenceCaseIntegerAndFractionalOrders) {
  const std::vector<double> orders = {1.5, 2.5, 5, 50, 100, kInf};
  const std::vector<double> expected = {0.00065, 0.001085, 0.00218075, 0.023846, 167.416307,
                                        kInf};
  auto rdp = ComputeRdp(0.01, 2.5, 50, orders);
  ASSERT_THAT(rdp, IsOk());
  for (size_t k = 0; k + 1 < orders.size(); ++k) {
    EXPECT_NEAR((*rdp)[k], expected[k], 1e-5) << "order " << orders[k];
    EXPECT_NEAR((*rdp)[k], expected[k], 0.01 * expected[k]) << "order " << orders[k];
  }
  EXPECT_EQ((*rdp).back(), kInf);
}

// google/differential-privacy dp_accounting rdp_privacy_accountant_test.py,
// test_compute_rdp_poisson_sampled_gaussian: the same case with dp_accounting's |C(α,i)|
// series, rtol 1e-4. Integer orders agree with the signed series; α = 1.5, 2.5 come out higher.
TEST(RdpAccountantTest, DpAccountingSequenceCaseWithAbsoluteSeries) {
  const std::vector<double> orders = {1.5, 2.5, 5, 50, 100};
  const std::vector<double> expected = {6.70579741e-04, 1.08548710e-03, 2.18075656e-03,
                                        2.38460375e-02, 1.67416308e02};
  for (size_t k = 0; k < orders.size(); ++k) {
    auto r = SampledGaussianRdp(0.01, 2.5, orders[k], FractionalSeries::kAbsolute);
    ASSERT_THAT(r, IsOk());
    EXPECT_NEAR(50 * *r, expected[k], 1e-4 * expected[k]) << "order " << orders[k];
  }
  EXPECT_GT(*SampledGaussianRdp(0.01, 2.5, 1.5, FractionalSeries::kAbsolute),
            *SampledGaussianRdp(0.01, 2.5, 1.5, FractionalSeries::kSigned));
}

// dp_accounting test_compute_epsilon_delta_pure_dp: orders 2..32, RDP 1.1 at every order,
// δ = 1e-5 → ε = 1.32783806176 at order 32 (computed by hand there).
TEST(RdpAccountantTest, DpAccountingPureDpConversion) {
  std::vector<double> orders, rdp;
  for (int a = 2; a <= 32; ++a) {
    orders.push_back(a);
    rdp.push_back(1.1);
  }
  auto e = EpsilonFromRdp(orders, rdp, 1e-5);
  ASSERT_THAT(e, IsOk());
  EXPECT_NEAR(e->epsilon, 1.32783806176, 1e-9);
  EXPECT_EQ(e->order, 32.0);
}

// dp_accounting test_compute_epsilon_delta_gaussian: q = 1, σ = 4.530877117 is exactly
// (1, 1e-6)-DP over orders 1.000, 1.001, …, 99.999.
TEST(RdpAccountantTest, DpAccountingGaussianIsOneEpsilon) {
  std::vector<double> orders;
  for (int i = 1000; i < 100000; ++i) orders.push_back(0.001 * i);
  auto rdp = ComputeRdp(1.0, 4.530877117, 1, std::vector<double>(orders.begin() + 1,
                                                                  orders.end()));
  ASSERT_THAT(rdp, IsOk());
  rdp->insert(rdp->begin(), 0.0);  // order 1.0 is excluded by the conversion (ε = ∞ there)
  rdp->front() = 1e9;
  auto e = EpsilonFromRdp(orders, *rdp, 1e-6);
  ASSERT_THAT(e, IsOk());
  EXPECT_NEAR(e->epsilon, 1.0, 1e-6);
}

// Opacus opacus/tests/accountants_test.py test_rdp_accountant: σ = 1.5, q = 0.04,
// int(90/0.04) = 2250 steps, δ = 1e-5, default alphas → ε = 7.32911117143.
TEST(RdpAccountantTest, OpacusAccountantCase) {
  RdpAccountant acc;
  for (int i = 0; i < 2250; ++i) ASSERT_THAT(acc.Compose(0.04, 1.5), IsOk());
  auto e = acc.Epsilon(1e-5);
  ASSERT_THAT(e, IsOk());
  EXPECT_NEAR(e->epsilon, 7.32911117143, 0.01 * 7.32911117143);  // the 1% acceptance bar
  EXPECT_NEAR(e->epsilon, 7.32911117143, 1e-6);                   // what we actually get
  EXPECT_GT(e->order, 1.0);
  EXPECT_EQ(acc.steps(), 2250);
}

// Opacus test_get_noise_multiplier: ε = 8, δ = 1e-5, q = 0.04, 90 epochs (2250 steps)
// → 1.425307617 (Opacus bisects to ε tolerance 0.01, so its σ is a touch above the exact one).
TEST(RdpAccountantTest, OpacusNoiseMultiplierCase) {
  auto z = NoiseMultiplierForEpsilon(8.0, 1e-5, 0.04, 2250, DefaultRdpOrders());
  ASSERT_THAT(z, IsOk());
  EXPECT_NEAR(*z, 1.425307617, 0.01 * 1.425307617);
  EXPECT_LE(*z, 1.425307617 + 1e-9);
  // The returned σ meets the target, and 0.1% less noise does not.
  auto at = ComputeRdp(0.04, *z, 2250, DefaultRdpOrders());
  ASSERT_THAT(at, IsOk());
  EXPECT_LE(EpsilonFromRdp(DefaultRdpOrders(), *at, 1e-5)->epsilon, 8.0);
  auto below = ComputeRdp(0.04, *z * 0.999, 2250, DefaultRdpOrders());
  EXPECT_GT(EpsilonFromRdp(DefaultRdpOrders(), *below, 1e-5)->epsilon, 8.0);
}

TEST(RdpAccountantTest, FractionalSeriesMeetsIntegerSeriesAtIntegers) {
  for (double q : {0.001, 0.05, 0.3, 0.9}) {
    for (double sigma : {0.7, 1.0, 4.0}) {
      for (double a : {2.0, 3.0, 8.0, 32.0}) {
        auto exact = SampledGaussianRdp(q, sigma, a);
        auto frac = SampledGaussianRdp(q, sigma, a + 1e-9);
        ASSERT_THAT(exact, IsOk());
        ASSERT_THAT(frac, IsOk());
        EXPECT_NEAR(*frac, *exact, 1e-6 * *exact + 1e-12)
            << "q=" << q << " sigma=" << sigma << " order=" << a;
      }
    }
  }
}

TEST(RdpAccountantTest, SpecialCases) {
  EXPECT_EQ(*SampledGaussianRdp(0.0, 1.0, 3.0), 0.0);
  EXPECT_EQ(*SampledGaussianRdp(0.1, 0.0, 3.0), kInf);
  EXPECT_NEAR(*SampledGaussianRdp(1.0, 2.0, 3.0), 3.0 / 8.0, 1e-15);  // α/(2σ²)
  // Subsampling amplifies: q < 1 gives strictly less RDP than the full Gaussian.
  EXPECT_LT(*SampledGaussianRdp(0.5, 2.0, 3.0), 3.0 / 8.0);
  // More noise, less RDP; higher rate, more RDP.
  EXPECT_LT(*SampledGaussianRdp(0.1, 3.0, 10.0), *SampledGaussianRdp(0.1, 2.0, 10.0));
  EXPECT_LT(*SampledGaussianRdp(0.1, 2.0, 10.0), *SampledGaussianRdp(0.2, 2.0, 10.0));
}

TEST(RdpAccountantTest, ComposesHeterogeneousRoundsAdditively) {
  auto acc = RdpAccountant::Create({1.5, 2.0, 7.5, 32.0});
  ASSERT_THAT(acc, IsOk());
  ASSERT_THAT(acc->Compose(0.01, 1.1, 3), IsOk());
  ASSERT_THAT(acc->Compose(0.05, 0.8, 2), IsOk());
  auto a = ComputeRdp(0.01, 1.1, 3, acc->orders());
  auto b = ComputeRdp(0.05, 0.8, 2, acc->orders());
  for (size_t k = 0; k < acc->orders().size(); ++k) {
    EXPECT_NEAR(acc->rdp()[k], (*a)[k] + (*b)[k], 1e-12);
  }
  EXPECT_EQ(acc->steps(), 5);
  // Each further round raises ε.
  const double before = acc->Epsilon(1e-5)->epsilon;
  ASSERT_THAT(acc->Compose(0.01, 1.1), IsOk());
  EXPECT_GT(acc->Epsilon(1e-5)->epsilon, before);
  // Restore gives the same answer.
  auto restored = RdpAccountant::Restore(acc->orders(), acc->rdp());
  ASSERT_THAT(restored, IsOk());
  EXPECT_EQ(restored->Epsilon(1e-5)->epsilon, acc->Epsilon(1e-5)->epsilon);
}

TEST(RdpAccountantTest, NothingComposedIsZeroEpsilon) {
  RdpAccountant acc;
  auto e = acc.Epsilon(1e-5);
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(e->epsilon, 0.0);
}

TEST(RdpAccountantTest, RejectsBadArguments) {
  EXPECT_THAT(SampledGaussianRdp(1.5, 1.0, 2.0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sampling rate")));
  EXPECT_THAT(SampledGaussianRdp(0.1, -1.0, 2.0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("noise multiplier")));
  EXPECT_THAT(SampledGaussianRdp(0.1, 1.0, 1.0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("order")));
  EXPECT_THAT(RdpAccountant::Create({}), StatusIs(absl::StatusCode::kInvalidArgument, "RdpAccountant: no orders"));
  EXPECT_THAT(RdpAccountant::Create({2.0, 0.5}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("order")));
  EXPECT_THAT(EpsilonFromRdp(std::vector<double>{2.0}, std::vector<double>{1.0}, 0.0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("delta")));
  EXPECT_THAT(EpsilonFromRdp(std::vector<double>{2.0, 3.0}, std::vector<double>{1.0}, 1e-5),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("RDP values")));
  EXPECT_THAT(RdpAccountant::Restore({2.0}, {-1.0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(">= 0")));
  RdpAccountant acc;
  EXPECT_THAT(acc.Compose(0.1, 1.0, -1), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("steps")));
  EXPECT_EQ(acc.steps(), 0);
  EXPECT_THAT(NoiseMultiplierForEpsilon(0.0, 1e-5, 0.1, 10, DefaultRdpOrders()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("target epsilon")));
}

}  // namespace
}  // namespace fedge::privacy

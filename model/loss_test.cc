#include "model/loss.h"

#include <cmath>
#include <functional>
#include <vector>

#include "base/rng.h"
#include "gtest/gtest.h"

namespace fedge::model {
namespace {

// Central differences of a scalar function of `x`, compared with `grad`.
void CheckAgainstFiniteDifferences(std::vector<float> x, const std::vector<float>& grad,
                                   const std::function<float(const std::vector<float>&)>& f) {
  const float eps = 1e-2f;
  for (size_t i = 0; i < x.size(); ++i) {
    const float saved = x[i];
    x[i] = saved + eps;
    const double lp = f(x);
    x[i] = saved - eps;
    const double lm = f(x);
    x[i] = saved;
    const double numeric = (lp - lm) / (2 * eps);
    EXPECT_NEAR(grad[i], numeric, 1e-4 + 1e-2 * std::fabs(numeric)) << "at " << i;
  }
}

TEST(LossTest, BinaryCrossEntropyWithLogitsValueGradientAndLargeLogits) {
  const std::vector<float> logits = {0.3f, -1.5f, 2.0f, 0.0f};
  const std::vector<float> targets = {1.0f, 0.0f, 0.0f, 0.5f};
  std::vector<float> grad(4);
  const float loss =
      BinaryCrossEntropyWithLogits(logits.data(), targets.data(), 4, grad.data());
  double expected = 0;
  for (int i = 0; i < 4; ++i) {
    const double s = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[i])));
    expected -= targets[i] * std::log(s) + (1 - targets[i]) * std::log(1 - s);
  }
  EXPECT_NEAR(loss, expected / 4, 1e-6);
  CheckAgainstFiniteDifferences(logits, grad, [&](const std::vector<float>& x) {
    return BinaryCrossEntropyWithLogits(x.data(), targets.data(), 4, nullptr);
  });
  // No overflow for confident logits: −log σ(−100) = 100.
  const float big = 100.0f, zero = 0.0f;
  float g = 0;
  EXPECT_NEAR(BinaryCrossEntropyWithLogits(&big, &zero, 1, &g), 100.0f, 1e-3);
  EXPECT_NEAR(g, 1.0f, 1e-6);
}

TEST(LossTest, CrossEntropyValueAndGradient) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 0.0f, 3.0f};
  const std::vector<int32_t> labels = {1, 2};
  std::vector<float> grad(6);
  const float loss = SoftmaxCrossEntropy(logits.data(), labels.data(), 2, 3, grad.data());
  // By hand: row 0: lse = log(e + e² + e^0.5); row 1: lse = log(e^-1 + 1 + e³).
  const double l0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(0.5)) - 2.0;
  const double l1 = std::log(std::exp(-1.0) + 1.0 + std::exp(3.0)) - 3.0;
  EXPECT_NEAR(loss, (l0 + l1) / 2, 1e-6);
  CheckAgainstFiniteDifferences(logits, grad, [&](const std::vector<float>& x) {
    return SoftmaxCrossEntropy(x.data(), labels.data(), 2, 3, nullptr);
  });
}

TEST(LossTest, CrossEntropyIsStableForHugeLogits) {
  const std::vector<float> logits = {1000.0f, -1000.0f, 0.0f};
  const int32_t label = 0;
  std::vector<float> grad(3);
  const float loss = SoftmaxCrossEntropy(logits.data(), &label, 1, 3, grad.data());
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(loss, 0.0f, 1e-6);
  for (float g : grad) EXPECT_TRUE(std::isfinite(g));
}

TEST(LossTest, DistillationGradientMatchesFiniteDifferences) {
  base::Rng rng(3);
  const int batch = 3, classes = 5;
  std::vector<float> s(batch * classes), t(batch * classes), grad(batch * classes);
  for (float& v : s) v = static_cast<float>(rng.Normal() * 2);
  for (float& v : t) v = static_cast<float>(rng.Normal() * 2);
  const std::vector<int32_t> labels = {0, 3, 4};
  for (float lambda : {0.0f, 0.5f, 1.0f}) {
    for (float temp : {1.0f, 4.0f}) {
      DistillationLoss(s.data(), t.data(), labels.data(), batch, classes, lambda, temp,
                       grad.data());
      CheckAgainstFiniteDifferences(s, grad, [&](const std::vector<float>& x) {
        return DistillationLoss(x.data(), t.data(), labels.data(), batch, classes, lambda, temp,
                                nullptr);
      });
    }
  }
}

TEST(LossTest, DistillationReducesToCrossEntropyAndKl) {
  const std::vector<float> s = {0.3f, -0.2f, 1.5f}, t = {0.3f, -0.2f, 1.5f};
  const int32_t label = 2;
  // λ = 0: plain CE.
  EXPECT_NEAR(DistillationLoss(s.data(), t.data(), &label, 1, 3, 0.0f, 3.0f, nullptr),
              SoftmaxCrossEntropy(s.data(), &label, 1, 3, nullptr), 1e-6);
  // λ = 1 with student == teacher: KL = 0.
  EXPECT_NEAR(DistillationLoss(s.data(), t.data(), &label, 1, 3, 1.0f, 3.0f, nullptr), 0.0, 1e-6);
  // KL is positive when they differ, and scaled by T².
  const std::vector<float> t2 = {2.0f, 0.0f, -1.0f};
  const float kl1 = DistillationLoss(s.data(), t2.data(), &label, 1, 3, 1.0f, 1.0f, nullptr);
  EXPECT_GT(kl1, 0.0f);
}

TEST(LossTest, MeanSquaredErrorGradient) {
  const std::vector<float> p = {1.0f, 2.0f, -1.0f, 0.5f}, t = {0.0f, 2.5f, -1.0f, 1.0f};
  std::vector<float> grad(4);
  const float loss = MeanSquaredError(p.data(), t.data(), 4, grad.data());
  EXPECT_NEAR(loss, (1.0 + 0.25 + 0 + 0.25) / 4, 1e-7);
  CheckAgainstFiniteDifferences(p, grad, [&](const std::vector<float>& x) {
    return MeanSquaredError(x.data(), t.data(), 4, nullptr);
  });
}

TEST(LossTest, CountCorrect) {
  const std::vector<float> logits = {0, 1, 0, 5, 0, 0, 0, 0, 2};
  const std::vector<int32_t> labels = {1, 0, 0};
  EXPECT_EQ(CountCorrect(logits.data(), labels.data(), 3, 3), 2);
}

}  // namespace
}  // namespace fedge::model

#include "aggregation/fed_opt.h"

#include <cmath>
#include <memory>
#include <vector>

#include "aggregation/weighted_mean.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::aggregation {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

ModelWeights Model(std::vector<float> w) { return {{"w", {static_cast<int64_t>(w.size())}, w, {}}}; }

ModelDelta Delta(std::vector<float> d) {
  ModelDelta delta;
  delta.tensors.push_back({"w", {static_cast<int64_t>(d.size())}, d, {}});
  delta.num_updates = 1;
  delta.total_weight = 1;
  return delta;
}

TEST(FedAvgTest, AddsTheMeanDeltaScaledByTheServerLearningRate) {
  auto plain = FedAvg::Create().value();
  ModelWeights model = Model({1.0f, 2.0f, 3.0f});
  ASSERT_THAT(plain->Apply(Delta({0.5f, -1.0f, 0.0f}), &model), IsOk());
  EXPECT_THAT(model[0].values, ElementsAre(1.5f, 1.0f, 3.0f));
  auto slow = FedAvg::Create({/*server_learning_rate=*/0.5}).value();
  ASSERT_THAT(slow->Apply(Delta({0.5f, -1.0f, 0.0f}), &model), IsOk());
  EXPECT_THAT(model[0].values, ElementsAre(1.75f, 0.5f, 3.0f));
  EXPECT_THAT(FedAvg::Create({0.0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("server_learning_rate")));
}

TEST(FedAvgTest, EndToEndWithWeightedMeanFromTheDefaultAggregator) {
  auto fedavg = FedAvg::Create().value();
  ModelWeights model = Model({10.0f, 10.0f});
  auto agg = fedavg->CreateAggregator(SpecsOf(model)).value();
  ASSERT_THAT(agg->Accumulate({"a", 1, {{"w", {2}, {1.0f, 2.0f}, {}}}, std::nullopt}), IsOk());
  ASSERT_THAT(agg->Accumulate({"b", 3, {{"w", {2}, {5.0f, 2.0f}, {}}}, std::nullopt}), IsOk());
  auto delta = std::move(*agg).Report();
  ASSERT_THAT(delta, IsOk());
  ASSERT_THAT(fedavg->Apply(*delta, &model), IsOk());
  EXPECT_THAT(model[0].values, ElementsAre(14.0f, 12.0f));
}

TEST(FedAvgTest, MismatchedModelIsAnErrorAndLeavesTheModelUnchanged) {
  auto fedavg = FedAvg::Create().value();
  ModelWeights model = Model({1.0f, 2.0f});
  model.push_back({"v", {1}, {7.0f}, {}});
  ModelDelta delta = Delta({1.0f, 1.0f});
  delta.tensors.push_back({"v", {2}, {1.0f, 1.0f}, {}});  // wrong shape, second tensor
  EXPECT_THAT(fedavg->Apply(delta, &model),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("FedAvg"), HasSubstr("v"))));
  EXPECT_THAT(model[0].values, ElementsAre(1.0f, 2.0f));
  ModelDelta unknown = Delta({1.0f, 1.0f});
  unknown.tensors[0].name = "zzz";
  EXPECT_THAT(fedavg->Apply(unknown, &model),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("zzz")));
}

// Closed form of Reddi et al. Algorithm 2 for two steps on one coordinate.
struct Expected {
  double x, m, v;
};
Expected Step(bool yogi, Expected s, double delta, double eta, double b1, double b2,
              double tau) {
  s.m = b1 * s.m + (1 - b1) * delta;
  const double sq = delta * delta;
  if (yogi) {
    s.v = s.v - (1 - b2) * sq * (s.v > sq ? 1.0 : (s.v < sq ? -1.0 : 0.0));
  } else {
    s.v = b2 * s.v + (1 - b2) * sq;
  }
  s.x = s.x + eta * s.m / (std::sqrt(s.v) + tau);
  return s;
}

TEST(AdaptiveServerOptimizerTest, FedAdamFirstStepsMatchTheClosedForm) {
  const double eta = 0.1, b1 = 0.9, b2 = 0.99, tau = 1e-3;
  auto adam = AdaptiveServerOptimizer::Create(AdaptiveServerOptimizer::Rule::kAdam,
                                              {eta, b1, b2, tau, -1.0})
                  .value();
  EXPECT_EQ(adam->name(), "fedadam");
  ModelWeights model = Model({1.0f});
  // Step 1 by hand: m = 0.1·0.5 = 0.05; v = 0.99·1e-6 + 0.01·0.25 = 0.00250099;
  // x = 1 + 0.1·0.05 / (√0.00250099 + 0.001) = 1.098020...
  ASSERT_THAT(adam->Apply(Delta({0.5f}), &model), IsOk());
  EXPECT_NEAR((*adam->first_moment("w"))[0], 0.05, 1e-12);
  EXPECT_NEAR((*adam->second_moment("w"))[0], 0.00250099, 1e-12);
  EXPECT_NEAR(model[0].values[0], 1.0 + 0.005 / (std::sqrt(0.00250099) + 0.001), 1e-6);
  EXPECT_NEAR(model[0].values[0], 1.098020, 1e-5);
  Expected e = Step(false, {1.0, 0.0, tau * tau}, 0.5, eta, b1, b2, tau);
  e.x = model[0].values[0];  // the model is float; continue from what it holds
  e = Step(false, e, -0.01, eta, b1, b2, tau);
  ASSERT_THAT(adam->Apply(Delta({-0.01f}), &model), IsOk());
  EXPECT_NEAR((*adam->first_moment("w"))[0], e.m, 1e-9);
  EXPECT_NEAR((*adam->second_moment("w"))[0], e.v, 1e-9);
  EXPECT_NEAR(model[0].values[0], e.x, 1e-6);
  EXPECT_EQ(adam->steps(), 2);
}

TEST(AdaptiveServerOptimizerTest, FedYogiFirstStepsMatchTheClosedFormIncludingTheSign) {
  const double eta = 0.1, b1 = 0.9, b2 = 0.99, tau = 1e-3;
  auto yogi = AdaptiveServerOptimizer::Create(AdaptiveServerOptimizer::Rule::kYogi,
                                              {eta, b1, b2, tau, -1.0})
                  .value();
  EXPECT_EQ(yogi->name(), "fedyogi");
  ModelWeights model = Model({1.0f});
  // Step 1: v_{-1} = τ² = 1e-6 < Δ² = 0.25 so sign = −1: v = 1e-6 + 0.0025 = 0.002501.
  ASSERT_THAT(yogi->Apply(Delta({0.5f}), &model), IsOk());
  EXPECT_NEAR((*yogi->second_moment("w"))[0], 0.002501, 1e-12);
  EXPECT_NEAR(model[0].values[0], 1.0 + 0.005 / (std::sqrt(0.002501) + 0.001), 1e-6);
  // Step 2: Δ² = 1e-4 < v so sign = +1: v = 0.002501 − 0.01·1e-4 = 0.0025 (Adam would give
  // 0.99·0.002501 + 1e-6 = 0.00247699: the rules differ here).
  ASSERT_THAT(yogi->Apply(Delta({-0.01f}), &model), IsOk());
  EXPECT_NEAR((*yogi->second_moment("w"))[0], 0.0025, 1e-12);
  const double m2 = 0.9 * 0.05 + 0.1 * static_cast<double>(-0.01f);
  EXPECT_NEAR((*yogi->first_moment("w"))[0], m2, 1e-12);
  const double x1 = 1.0 + 0.005 / (std::sqrt(0.002501) + 0.001);
  EXPECT_NEAR(model[0].values[0], x1 + 0.1 * m2 / (std::sqrt(0.0025) + 0.001), 2e-6);
}

TEST(AdaptiveServerOptimizerTest, CoordinatesNobodyHeldKeepValueAndMoments) {
  auto adam = CreateFedAdam().value();
  ModelWeights model = Model({1.0f, 1.0f});
  ASSERT_THAT(adam->Apply(Delta({0.5f, 0.5f}), &model), IsOk());
  const float x1 = model[0].values[1];
  ModelDelta partial = Delta({0.5f, 0.0f});
  partial.tensors[0].held = CoordinateMask::FromIndices(2, {0}).value();
  ASSERT_THAT(adam->Apply(partial, &model), IsOk());
  EXPECT_EQ(model[0].values[1], x1);  // momentum would have moved it
  EXPECT_GT(model[0].values[0], x1);
}

TEST(AdaptiveServerOptimizerTest, SerializedStateContinuesIdentically) {
  auto a = CreateFedYogi().value();
  ModelWeights ma = Model({1.0f, -2.0f, 0.5f});
  ASSERT_THAT(a->Apply(Delta({0.5f, -0.25f, 0.125f}), &ma), IsOk());
  const std::string state = a->SerializeState().value();
  auto b = CreateFedYogi().value();
  ASSERT_THAT(b->RestoreState(state), IsOk());
  ModelWeights mb = ma;
  ASSERT_THAT(a->Apply(Delta({0.1f, 0.2f, -0.3f}), &ma), IsOk());
  ASSERT_THAT(b->Apply(Delta({0.1f, 0.2f, -0.3f}), &mb), IsOk());
  EXPECT_EQ(ma[0].values, mb[0].values);
  auto adam = CreateFedAdam().value();
  EXPECT_THAT(adam->RestoreState(state),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("other adaptive rule")));
  std::string corrupt = state;
  corrupt[12] ^= 1;
  EXPECT_THAT(b->RestoreState(corrupt), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("CRC")));
}

TEST(AdaptiveServerOptimizerTest, CreateRejectsOutOfRangeOptions) {
  using Rule = AdaptiveServerOptimizer::Rule;
  EXPECT_THAT(AdaptiveServerOptimizer::Create(Rule::kAdam, {0.01, 1.0, 0.99, 1e-3, -1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("FedAdam: beta1")));
  EXPECT_THAT(AdaptiveServerOptimizer::Create(Rule::kYogi, {0.01, 0.9, -0.1, 1e-3, -1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("FedYogi: beta2")));
  EXPECT_THAT(AdaptiveServerOptimizer::Create(Rule::kYogi, {0.01, 0.9, 0.99, 0.0, -1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tau")));
  EXPECT_THAT(AdaptiveServerOptimizer::Create(Rule::kAdam, {-1, 0.9, 0.99, 1e-3, -1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("server_learning_rate")));
}

}  // namespace
}  // namespace fedge::aggregation

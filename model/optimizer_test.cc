#include "model/optimizer.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::model {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

Parameter Scalar(float value, float grad) {
  Parameter p;
  p.name = "w";
  p.shape = {1};
  p.value = {value};
  p.grad = {grad};
  return p;
}

TEST(SgdTest, MomentumAndWeightDecayFollowPyTorch) {
  auto sgd = *Sgd::Create({0.1f, 0.9f, 0.01f, false});
  Parameter p = Scalar(1.0f, 0.5f);
  std::vector<Parameter*> ps = {&p};
  // step 1: d = 0.5 + 0.01·1 = 0.51; v = 0.51; w = 1 − 0.051 = 0.949
  sgd->Step(ps);
  EXPECT_NEAR(p.value[0], 0.949f, 1e-6);
  // step 2: d = 0.5 + 0.00949 = 0.50949; v = 0.9·0.51 + 0.50949 = 0.96849; w = 0.949 − 0.096849
  sgd->Step(ps);
  EXPECT_NEAR(p.value[0], 0.949f - 0.096849f, 1e-6);
  EXPECT_EQ(p.version, 2u);
}

TEST(SgdTest, Nesterov) {
  auto sgd = *Sgd::Create({0.1f, 0.5f, 0.0f, true});
  Parameter p = Scalar(0.0f, 1.0f);
  std::vector<Parameter*> ps = {&p};
  sgd->Step(ps);  // v = 1; w -= 0.1·(1 + 0.5·1)
  EXPECT_NEAR(p.value[0], -0.15f, 1e-7);
}

TEST(AdamTest, FirstStepsMatchTheClosedForm) {
  auto adam = *Adam::Create({0.01f, 0.9f, 0.999f, 1e-8f, 0.0f});
  Parameter p = Scalar(1.0f, 2.0f);
  std::vector<Parameter*> ps = {&p};
  adam->Step(ps);  // bias-corrected m̂ = g, v̂ = g²: step = lr·sign(g)
  EXPECT_NEAR(p.value[0], 0.99f, 1e-6);
  p.grad[0] = -1.0f;
  adam->Step(ps);
  // m = 0.9·0.2 + 0.1·(−1) = 0.08; v = 0.999·0.004 + 0.001·1 = 0.004996
  const double m_hat = 0.08 / (1 - 0.81), v_hat = 0.004996 / (1 - 0.998001);
  EXPECT_NEAR(p.value[0], 0.99 - 0.01 * m_hat / (std::sqrt(v_hat) + 1e-8), 1e-6);
}

// Batch norm's running statistics (trainable = false) are left alone by every optimizer,
// even with weight decay and a (stray) gradient, while the trainable parameter beside them
// moves.
TEST(OptimizerTest, LeavesNonTrainableParametersAlone) {
  auto sgd = *Sgd::Create({0.1f, 0.9f, 0.01f, false});
  auto adam = *Adam::Create({0.01f, 0.9f, 0.999f, 1e-8f, 0.01f});
  for (Optimizer* opt : {static_cast<Optimizer*>(sgd.get()), static_cast<Optimizer*>(adam.get())}) {
    Parameter w = Scalar(1.0f, 0.5f);
    Parameter stat = Scalar(3.0f, 0.5f);
    stat.trainable = false;
    std::vector<Parameter*> ps = {&w, &stat};
    opt->Step(ps);
    opt->Step(ps);
    EXPECT_NE(w.value[0], 1.0f);
    EXPECT_EQ(stat.value[0], 3.0f);
    EXPECT_EQ(stat.version, 0u);
  }
}

TEST(AdamTest, RestoredStateContinuesExactlyAndBadStatesAreRefused) {
  auto a = *Adam::Create({0.01f, 0.9f, 0.999f, 1e-8f, 1e-4f});
  Parameter p = Scalar(1.0f, 0.5f);
  std::vector<Parameter*> ps = {&p};
  for (int i = 0; i < 3; ++i) a->Step(ps);
  Parameter q = p;  // the weights at step 3, for the restored copy
  std::vector<Parameter*> qs = {&q};
  auto b = *Adam::Create({0.01f, 0.9f, 0.999f, 1e-8f, 1e-4f});
  ASSERT_THAT(b->RestoreState(a->state()), IsOk());
  auto fresh = *Adam::Create({0.01f, 0.9f, 0.999f, 1e-8f, 1e-4f});
  Parameter r = p;
  std::vector<Parameter*> rs = {&r};
  for (int i = 0; i < 2; ++i) {
    p.grad[0] = q.grad[0] = r.grad[0] = -0.25f * static_cast<float>(i + 1);
    a->Step(ps);
    b->Step(qs);
    fresh->Step(rs);
  }
  EXPECT_EQ(p.value[0], q.value[0]);  // bit for bit: the moments and step count carried over
  EXPECT_NE(p.value[0], r.value[0]);  // a fresh Adam (step 1 again) lands elsewhere
  EXPECT_EQ(b->state().step, 5);

  Adam::State bad = a->state();
  bad.v[0].push_back(0.0f);
  EXPECT_THAT(b->RestoreState(bad), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("moments m and v of one shape")));
  EXPECT_THAT(b->RestoreState({-1, {}, {}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("step -1")));
  EXPECT_THAT(b->RestoreState({0, {{1.0f}}, {{1.0f}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("step 0, 1 and 1")));
  EXPECT_EQ(b->state().step, 5);  // unchanged by the refusals
}

TEST(OptimizerTest, RejectsBadHyperParameters) {
  EXPECT_THAT(Sgd::Create({-1.0f, 0.0f, 0.0f, false}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Sgd")));
  EXPECT_THAT(Sgd::Create({0.1f, 1.0f, 0.0f, false}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("momentum")));
  EXPECT_THAT(Sgd::Create({0.1f, 0.0f, 0.0f, true}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nesterov")));
  EXPECT_THAT(Adam::Create({0.1f, 0.9f, 1.0f, 1e-8f, 0.0f}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Adam")));
  EXPECT_THAT(Adam::Create({NAN, 0.9f, 0.99f, 1e-8f, 0.0f}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Adam")));
}

}  // namespace
}  // namespace fedge::model

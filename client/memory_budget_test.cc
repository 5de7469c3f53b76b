#include "client/memory_budget.h"

#include <cmath>

#include "gtest/gtest.h"
#include "model/sequential.h"
#include "model/submodel_slicer.h"
#include "model/zoo.h"
#include "tests/status_matchers.h"

namespace fedge::client {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

// The device's estimate is the coordinator's (so a device never refuses the tier it was
// given), plus the teacher and the data copy.
TEST(MemoryBudgetTest, EstimateIsTheCoordinatorsPlusTeacherAndDataCopy) {
  const v1::ModelSpec spec = model::MlpSpec({8, 16, 3});
  const v1::ModelSpec teacher = model::MlpSpec({8, 64, 3});
  LocalTrainingOptions o;
  o.batch_size = 10;
  o.momentum = 0.9f;
  const int64_t params = 8 * 16 + 16 + 16 * 3 + 3;
  TaskMemoryEstimate e = EstimateTaskMemory(spec, nullptr, o, 1000).value();
  EXPECT_EQ(e.round_bytes, model::EstimateDeviceRoundMemoryBytes(spec, 10, false));
  EXPECT_GE(e.round_bytes, 4 * params * 7 + 4 * (8 + 16 + 16 + 3) * 10);
  EXPECT_EQ(e.teacher_bytes, 0);
  EXPECT_EQ(e.data_copy_bytes, 4000);
  o.optimizer = LocalTrainingOptions::Optimizer::kAdam;
  EXPECT_EQ(EstimateTaskMemory(spec, nullptr, o, 0)->round_bytes,
            e.round_bytes + 4 * params);  // one more optimizer slot
  // A teacher: 9 bytes per parameter and a batch of its activations.
  const TaskMemoryEstimate t = EstimateTaskMemory(spec, &teacher, o, 0).value();
  EXPECT_EQ(t.teacher_bytes, 9 * (8 * 64 + 64 + 64 * 3 + 3) + 4 * 10 * (8 + 64 + 64 + 3));
  // Activations grow with the batch.
  o.batch_size = 20;
  EXPECT_GT(EstimateTaskMemory(spec, nullptr, o, 0)->round_bytes,
            EstimateTaskMemory(spec, nullptr, [&] { auto p = o; p.batch_size = 10; return p; }(), 0)
                ->round_bytes);
  // A model the estimate cannot size is refused, not taken as free (before, the -1 was
  // clamped to 0 and any budget check passed).
  o.batch_size = 0;
  EXPECT_EQ(EstimateTaskMemory(spec, nullptr, o, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The estimate refuses what Sequential::Create refuses (a NaN leaky-ReLU slope, a scaler rate
// outside (0, 1]): a spec the device could not build is never estimated as cheap.
TEST(MemoryBudgetTest, EstimateRefusesWhatTheModelBuilderRefuses) {
  LocalTrainingOptions o;
  o.batch_size = 10;
  for (int bad = 0; bad < 3; ++bad) {
    v1::ModelSpec spec = model::MlpSpec({8, 16, 3});
    v1::LayerSpec* l = spec.add_layers();
    l->set_name("odd");
    if (bad == 0) l->mutable_leaky_relu()->set_negative_slope(std::nanf(""));
    if (bad == 1) l->mutable_scaler()->set_rate(0);
    if (bad == 2) l->mutable_scaler()->set_rate(2);
    EXPECT_FALSE(model::Sequential::Create(spec).ok()) << bad;
    EXPECT_FALSE(EstimateTaskMemory(spec, nullptr, o, 0).ok()) << bad;
  }
  v1::ModelSpec fine = model::MlpSpec({8, 16, 3});
  v1::LayerSpec* l = fine.add_layers();
  l->set_name("half");
  l->mutable_scaler()->set_rate(0.5f);
  EXPECT_TRUE(model::Sequential::Create(fine).ok());
  EXPECT_TRUE(EstimateTaskMemory(fine, nullptr, o, 0).ok());
}

TEST(MemoryBudgetTest, CheckRefusesOnlyOverTheBudget) {
  TaskMemoryEstimate e;
  e.round_bytes = 30'000'000;
  e.teacher_bytes = 5'000'000;
  EXPECT_THAT(CheckMemoryBudget(e, 0), IsOk());  // no budget
  EXPECT_THAT(CheckMemoryBudget(e, 35'000'000), IsOk());
  EXPECT_THAT(CheckMemoryBudget(e, 16'000'000),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("budget of 16.0 MB")));
}

TEST(MemoryBudgetTest, PeakRssIsReported) { EXPECT_GT(PeakRssBytes(), 0); }

}  // namespace
}  // namespace fedge::client

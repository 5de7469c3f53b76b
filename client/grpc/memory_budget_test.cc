#include "client/grpc/memory_budget.h"

#include "gtest/gtest.h"
#include "model/zoo.h"
#include "tests/status_matchers.h"

namespace fedge::client {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

TEST(MemoryBudgetTest, EstimateCountsParametersActivationsAndTheDataCopy) {
  auto net = std::move(model::Sequential::Create(model::MlpSpec({8, 16, 3}))).value();
  LocalTrainingOptions o;
  o.batch_size = 10;
  o.momentum = 0.9f;
  const int64_t params = 8 * 16 + 16 + 16 * 3 + 3;
  ASSERT_EQ(net->num_parameters(), params);
  TaskMemoryEstimate e = EstimateTaskMemory(*net, o, 1000);
  EXPECT_EQ(e.parameter_bytes, 4 * params * 7);
  EXPECT_GE(e.activation_bytes, 4 * 3 * (8 + 16 + 3) * 10);
  EXPECT_EQ(e.data_copy_bytes, 4000);
  o.optimizer = LocalTrainingOptions::Optimizer::kAdam;
  EXPECT_EQ(EstimateTaskMemory(*net, o, 0).parameter_bytes, 4 * params * 8);
  // Activations grow with the batch.
  o.batch_size = 20;
  EXPECT_GT(EstimateTaskMemory(*net, o, 0).activation_bytes, e.activation_bytes);
}

TEST(MemoryBudgetTest, CheckRefusesOnlyOverTheBudget) {
  TaskMemoryEstimate e;
  e.parameter_bytes = 30'000'000;
  e.activation_bytes = 5'000'000;
  EXPECT_THAT(CheckMemoryBudget(e, 0), IsOk());  // no budget
  EXPECT_THAT(CheckMemoryBudget(e, 35'000'000), IsOk());
  EXPECT_THAT(CheckMemoryBudget(e, 16'000'000),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("budget of 16.0 MB")));
}

TEST(MemoryBudgetTest, PeakRssIsReported) { EXPECT_GT(PeakRssBytes(), 0); }

}  // namespace
}  // namespace fedge::client

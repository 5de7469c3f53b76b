#include "server/job_strategy.h"

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/zoo.h"
#include "server/job_config.h"
#include "tests/status_matchers.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

v1::JobConfig Job() {
  v1::JobConfig job;
  job.set_name("strategy");
  *job.mutable_model_spec() = model::MlpSpec({8, 16, 3});
  job.set_init_seed(3);
  return job;
}

TEST(JobStrategyTest, EachStrategyWithTheSeededStartingModel) {
  v1::JobConfig job = Job();
  auto fedavg = MakeJobModel(job);
  ASSERT_THAT(fedavg.status(), IsOk());
  EXPECT_EQ(fedavg->strategy->name(), "fedavg");
  EXPECT_EQ(fedavg->num_parameters, 8 * 16 + 16 + 16 * 3 + 3);
  ASSERT_EQ(fedavg->weights.size(), 4u);
  EXPECT_EQ(MakeJobModel(job)->weights[0].values, fedavg->weights[0].values);  // seeded
  job.set_init_seed(4);
  EXPECT_NE(MakeJobModel(job)->weights[0].values, fedavg->weights[0].values);
  job.mutable_strategy()->mutable_fed_adam();
  EXPECT_EQ(MakeJobModel(job)->strategy->name(), "fedadam");
  job.mutable_strategy()->mutable_fed_yogi();
  EXPECT_EQ(MakeJobModel(job)->strategy->name(), "fedyogi");
  job.mutable_strategy()->mutable_fed_prox()->set_mu(0.1);
  EXPECT_EQ(MakeJobModel(job)->strategy->name(), "fedavg");  // μ is the devices' business
}

TEST(JobStrategyTest, FedCgsCentralModelIsTheSharedClassifierAndGenerator) {
  v1::JobConfig job = Job();
  job.clear_model_spec();
  job.set_rounds(2);
  job.mutable_strategy()->mutable_fed_cg();
  absl::StatusOr<v1::JobConfig> valid = ValidateJobConfig(job);
  ASSERT_THAT(valid.status(), IsOk());
  auto m = MakeJobModel(*valid);
  ASSERT_THAT(m.status(), IsOk());
  EXPECT_EQ(m->strategy->name(), "fedcg");
  for (const aggregation::Tensor& t : m->weights) {
    EXPECT_TRUE(absl::StartsWith(t.name, "C.") || absl::StartsWith(t.name, "G.")) << t.name;
  }
  EXPECT_GT(m->num_parameters, 0);
}

TEST(JobStrategyTest, SecureAggregationRefusesModelsTooLargeForOneMessage) {
  v1::JobConfig job = Job();
  *job.mutable_model_spec() = model::MlpSpec({2000, 1001, 10});
  job.mutable_privacy()->set_secure_aggregation_threshold(2);
  EXPECT_THAT(MakeJobModel(job).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 2000000")));
  job.mutable_privacy()->set_secure_aggregation_threshold(0);
  EXPECT_THAT(MakeJobModel(job).status(), IsOk());
}

}  // namespace
}  // namespace fedge::server

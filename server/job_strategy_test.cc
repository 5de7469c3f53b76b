#include "server/job_strategy.h"

#include "absl/strings/match.h"
#include "aggregation/robust_aggregators.h"
#include "aggregation/weighted_mean.h"
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

// The job's aggregation rule decides the strategy's aggregator, the optimizer stays.
TEST(JobStrategyTest, AggregationRuleChoosesTheAggregator) {
  v1::JobConfig job = Job();
  job.mutable_strategy()->mutable_fed_adam();
  auto weighted = MakeJobModel(job);
  ASSERT_THAT(weighted.status(), IsOk());
  auto mean = weighted->strategy->CreateAggregator(aggregation::SpecsOf(weighted->weights));
  ASSERT_THAT(mean.status(), IsOk());
  EXPECT_NE(dynamic_cast<aggregation::WeightedMean*>(mean->get()), nullptr);
  job.mutable_robustness()->set_aggregation_rule(v1::RobustnessConfig::AGGREGATION_RULE_MULTI_KRUM);
  job.mutable_robustness()->set_krum_byzantine(2);
  auto krum_model = MakeJobModel(job);
  ASSERT_THAT(krum_model.status(), IsOk());
  EXPECT_EQ(krum_model->strategy->name(), "fedadam");
  auto krum = krum_model->strategy->CreateAggregator(aggregation::SpecsOf(krum_model->weights));
  ASSERT_THAT(krum.status(), IsOk());
  auto* k = dynamic_cast<aggregation::MultiKrum*>(krum->get());
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->options().byzantine, 2);
  EXPECT_EQ(k->options().max_updates, aggregation::kMaxMultiKrumUpdates);
  job.mutable_robustness()->set_aggregation_rule(
      v1::RobustnessConfig::AGGREGATION_RULE_COORDINATE_MEDIAN);
  auto median =
      MakeJobModel(job)->strategy->CreateAggregator(aggregation::SpecsOf(krum_model->weights));
  ASSERT_THAT(median.status(), IsOk());
  auto* m = dynamic_cast<aggregation::CoordinateMedian*>(median->get());
  ASSERT_NE(m, nullptr);
  // 1 GiB of values of a 195-parameter model.
  EXPECT_EQ(m->options().max_updates, aggregation::kRobustHeldBytes / (4 * 195));
}

// strategy.exact_sums gives the rounds exact (order-independent) weighted means; job
// validation keeps it to the weighted mean rule.
TEST(JobStrategyTest, ExactSumsReachTheRoundsAggregator) {
  v1::JobConfig job = Job();
  job.set_rounds(1);
  job.mutable_strategy()->mutable_fed_adam();
  job.mutable_strategy()->set_exact_sums(true);
  auto validated = ValidateJobConfig(job);
  ASSERT_THAT(validated.status(), IsOk());
  auto model = MakeJobModel(*validated);
  ASSERT_THAT(model.status(), IsOk());
  EXPECT_TRUE(model->strategy->exact_sums());
  auto agg = model->strategy->CreateAggregator(aggregation::SpecsOf(model->weights));
  ASSERT_THAT(agg.status(), IsOk());
  auto* mean = dynamic_cast<aggregation::WeightedMean*>(agg->get());
  ASSERT_NE(mean, nullptr);
  EXPECT_TRUE(mean->exact());
  job.mutable_robustness()->set_aggregation_rule(
      v1::RobustnessConfig::AGGREGATION_RULE_COORDINATE_MEDIAN);
  EXPECT_THAT(ValidateJobConfig(job), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("strategy.exact_sums")));
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

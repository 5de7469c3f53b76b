#include "server/round_planner.h"

#include <memory>
#include <string>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/sequential.h"
#include "model/zoo.h"
#include "tests/status_matchers.h"
#include "tests/tiered_job.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;

constexpr int64_t kMiB = int64_t{1} << 20;

// The tests' tiered job (tests/tiered_job.h) with a shuffle seed.
v1::JobConfig TieredJob() {
  v1::JobConfig job = ::fedge::testing::TieredJob(1, 1);
  job.mutable_local_training()->set_shuffle_seed(9);
  return job;
}

std::shared_ptr<const v1::ModelProto> Central(const v1::JobConfig& job) {
  auto net = std::move(model::Sequential::Create(job.model_spec())).value();
  net->InitParameters(1);
  return std::make_shared<const v1::ModelProto>(net->ToProto());
}

v1::DeviceProfile Budget(int64_t bytes) {
  v1::DeviceProfile p;
  p.set_memory_budget_bytes(bytes);
  return p;
}

int64_t Rows(const v1::ModelProto& m, const std::string& name) {
  for (const v1::TensorProto& p : m.parameters()) {
    if (p.name() == name) return p.shape(0);
  }
  return -1;
}

TEST(RoundPlannerTest, RulesAssignTiersAndLeadingSubModelsAreSharedPerRound) {
  const v1::JobConfig job = TieredJob();
  auto planner = RoundPlanner::Create(job);
  ASSERT_THAT(planner.status(), IsOk());
  ASSERT_EQ((*planner)->tiers().size(), 3u);
  EXPECT_EQ((*planner)->AssignTier(Budget(100 * kMiB)), 0);
  EXPECT_EQ((*planner)->AssignTier(Budget(20 * kMiB)), 1);
  EXPECT_EQ((*planner)->AssignTier(Budget(1 * kMiB)), 2);
  RoundPlanner::RoundModels models(Central(job), 3);
  auto a = (*planner)->PlanClient(models, 1, "a", Budget(20 * kMiB));
  auto b = (*planner)->PlanClient(models, 1, "b", Budget(20 * kMiB));
  auto full = (*planner)->PlanClient(models, 1, "c", Budget(100 * kMiB));
  ASSERT_THAT(a.status(), IsOk());
  ASSERT_THAT(b.status(), IsOk());
  ASSERT_THAT(full.status(), IsOk());
  EXPECT_EQ(a->model.get(), b->model.get());  // one cut per tier and round
  EXPECT_EQ(Rows(*a->model, "fc1.weight"), 8);
  EXPECT_EQ(full->model.get(), models.central().get());
  EXPECT_EQ(full->slicer, nullptr);
  EXPECT_NE(a->slicer, nullptr);
  EXPECT_EQ(a->teacher, nullptr);  // no distillation in this job
}

TEST(RoundPlannerTest, LargestFittingFollowsTheTrainingEstimate) {
  v1::JobConfig job = TieredJob();
  job.mutable_sub_models()->clear_rules();
  job.mutable_sub_models()->clear_default_tier();
  job.mutable_sub_models()->set_assignment(v1::SubModelConfig::ASSIGNMENT_LARGEST_FITTING);
  auto planner = std::move(RoundPlanner::Create(job)).value();
  const auto& tiers = planner->tiers();
  EXPECT_EQ(planner->AssignTier(Budget(tiers[0].training_bytes)), 0);
  EXPECT_EQ(planner->AssignTier(Budget(tiers[0].training_bytes - 1)), 1);
  EXPECT_EQ(planner->AssignTier(Budget(tiers[2].training_bytes)), 2);
  EXPECT_EQ(planner->AssignTier(Budget(1)), 2);  // nothing fits: the smallest
}

TEST(RoundPlannerTest, RandomSubsetsAreThePerClientDrawOfTheRound) {
  v1::JobConfig job = TieredJob();
  job.mutable_sub_models()->set_extraction(v1::SubModelConfig::EXTRACTION_RANDOM_SUBSET);
  job.mutable_sub_models()->set_seed(4);
  auto planner = std::move(RoundPlanner::Create(job)).value();
  RoundPlanner::RoundModels models(Central(job), 3);
  auto a1 = std::move(planner->PlanClient(models, 1, "a", Budget(kMiB))).value();
  auto a1again = std::move(planner->PlanClient(models, 1, "a", Budget(kMiB))).value();
  auto b1 = std::move(planner->PlanClient(models, 1, "b", Budget(kMiB))).value();
  auto a2 = std::move(planner->PlanClient(models, 2, "a", Budget(kMiB))).value();
  EXPECT_EQ(a1.model->SerializeAsString(), a1again.model->SerializeAsString());
  EXPECT_NE(a1.model->SerializeAsString(), b1.model->SerializeAsString());
  EXPECT_NE(a1.model->SerializeAsString(), a2.model->SerializeAsString());
}

TEST(RoundPlannerTest, SmallTiersGetTheLargestTeacherThatFits) {
  v1::JobConfig job = TieredJob();
  job.mutable_distillation()->set_weight(0.5);
  auto planner = std::move(RoundPlanner::Create(job)).value();
  const auto& tiers = planner->tiers();
  RoundPlanner::RoundModels models(Central(job), 3);
  // Unknown budget (0): the central model teaches.
  v1::DeviceProfile unknown;
  auto q = std::move(planner->PlanClient(models, 1, "q", unknown)).value();
  EXPECT_EQ(q.tier, 2);
  EXPECT_EQ(q.teacher.get(), models.central().get());
  // A budget that holds the quarter's training and the half as a teacher, not the full.
  const int64_t half_only = tiers[2].training_bytes + tiers[1].teacher_bytes;
  ASSERT_LT(half_only, tiers[0].teacher_bytes + tiers[2].training_bytes);
  auto h = std::move(planner->PlanClient(models, 1, "h", Budget(half_only))).value();
  EXPECT_EQ(h.tier, 2);
  EXPECT_EQ(h.teacher_tier, 1);
  EXPECT_EQ(Rows(*h.teacher, "fc1.weight"), 8);
  // Nothing larger fits: no teacher.
  auto none = std::move(planner->PlanClient(models, 1, "n", Budget(tiers[2].training_bytes))).value();
  EXPECT_EQ(none.teacher, nullptr);
  // Full-model devices never get one.
  auto f = std::move(planner->PlanClient(models, 1, "f", Budget(100 * kMiB))).value();
  EXPECT_EQ(f.teacher, nullptr);
}

TEST(RoundPlannerTest, TheTaskHeaderSaysWhatTheDeviceMustDo) {
  v1::JobConfig job = TieredJob();
  job.mutable_distillation()->set_weight(0.5);
  job.mutable_distillation()->set_teacher_compute_mode(v1::COMPUTE_MODE_INT4);
  job.mutable_transfer()->set_task_encoding(v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
  job.mutable_transfer()->set_update_encoding(v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
  job.mutable_sub_models()->mutable_tiers(2)->set_compute_mode(v1::COMPUTE_MODE_INT8);
  job.mutable_privacy()->set_clip_norm(2.0);
  auto planner = std::move(RoundPlanner::Create(job)).value();
  RoundPlanner::RoundModels models(Central(job), 3);
  auto plan = std::move(planner->PlanClient(models, 3, "dev", v1::DeviceProfile())).value();
  RoundPlanner::TaskContext ctx;
  ctx.job_id = "job-7";
  ctx.client_id = "dev";
  ctx.round = 3;
  ctx.attempt = 1;
  ctx.deadline = absl::FromUnixMillis(1234567);
  ctx.clip_norm = 0.75;  // adaptive: the round's, not the config's
  const TaskAssignment t = planner->Assign(plan, ctx);
  const v1::TaskHeader& h = t.header;
  EXPECT_EQ(h.task_id(), "job-7/3/1/dev");
  EXPECT_EQ(h.deadline_unix_ms(), 1234567);
  EXPECT_EQ(h.tier(), "quarter");
  EXPECT_EQ(h.width_ratio(), 0.25);
  EXPECT_EQ(h.training().compute_mode(), v1::COMPUTE_MODE_INT8);
  EXPECT_EQ(h.training().shuffle_seed(), 9);
  EXPECT_EQ(h.privacy().clip_norm(), 0.75);
  EXPECT_EQ(h.update_encoding(), v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
  EXPECT_EQ(h.model_spec().SerializeAsString(), plan.model->spec().SerializeAsString());
  EXPECT_EQ(t.model_encoding, v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
  ASSERT_NE(t.teacher, nullptr);
  EXPECT_EQ(t.teacher_encoding, v1::TENSOR_ENCODING_INT4_BLOCK32);
  EXPECT_TRUE(h.has_teacher_spec());
  EXPECT_EQ(h.distillation().weight(), 0.5);
  EXPECT_FALSE(h.has_secure_aggregation());
  // The bytes a task's model takes in each encoding.
  EXPECT_EQ(RoundPlanner::EncodedBytes(*t.model, v1::TENSOR_ENCODING_FLOAT32),
            4 * (8 * 4 + 4 + 4 * 4 + 4 + 3 * 4 + 3));
}

}  // namespace
}  // namespace fedge::server

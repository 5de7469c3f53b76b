#include "server/round_report.h"

#include <filesystem>

#include <memory>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/sequential.h"
#include "model/zoo.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

v1::JobConfig Job(int rounds, int every) {
  v1::JobConfig job;
  job.set_name("report");
  *job.mutable_model_spec() = model::MlpSpec({8, 16, 3}, "tiny");
  job.set_rounds(rounds);
  job.mutable_evaluation()->set_every_rounds(every);
  job.mutable_evaluation()->set_batch_size(32);
  job.mutable_local_training()->set_batch_size(16);
  for (auto [name, r] : {std::pair<const char*, double>{"full", 1.0}, {"half", 0.5}}) {
    v1::SubModelTier* t = job.mutable_sub_models()->add_tiers();
    t->set_name(name);
    t->set_width_ratio(r);
  }
  return job;
}

std::shared_ptr<const data::Dataset> Data(int features = 8) {
  return std::make_shared<const data::Dataset>(::fedge::testing::SeparableData(90, features, 3, 5));
}

v1::ModelProto Model(const v1::JobConfig& job) {
  auto net = std::move(model::Sequential::Create(job.model_spec())).value();
  net->InitParameters(2);
  return net->ToProto();
}

TEST(RoundReportTest, EvaluatesWhenDueWithEachSmallerTierOnItsOwn) {
  const v1::JobConfig job = Job(/*rounds=*/5, /*every=*/2);
  auto planner = std::move(RoundPlanner::Create(job)).value();
  auto report = RoundReport::Create(job, *planner, Data());
  ASSERT_THAT(report.status(), IsOk());
  const v1::ModelProto model = Model(job);
  v1::RoundMetrics skipped;
  ASSERT_THAT((*report)->Evaluate(model, 1, &skipped), IsOk());
  EXPECT_FALSE(skipped.evaluated());
  ASSERT_EQ(skipped.tiers_size(), 2);  // the tiers are listed even without evaluation
  EXPECT_FALSE(skipped.tiers(0).evaluated());
  v1::RoundMetrics due;
  ASSERT_THAT((*report)->Evaluate(model, 2, &due), IsOk());
  EXPECT_TRUE(due.evaluated());
  EXPECT_GT(due.test_loss(), 0);
  EXPECT_GE(due.evaluation_seconds(), 0);
  // The full tier reports the central figures; the half tier its own sub-model's.
  EXPECT_EQ(due.tiers(0).test_accuracy(), due.test_accuracy());
  EXPECT_EQ(due.tiers(0).test_loss(), due.test_loss());
  EXPECT_TRUE(due.tiers(1).evaluated());
  EXPECT_NE(due.tiers(1).test_loss(), due.test_loss());
  // The last round is always evaluated.
  v1::RoundMetrics last;
  ASSERT_THAT((*report)->Evaluate(model, 5, &last), IsOk());
  EXPECT_TRUE(last.evaluated());
  EXPECT_EQ(last.test_loss(), due.test_loss());  // the same model, the same figures
}

TEST(RoundReportTest, ClientsAddToTheirTiers) {
  const v1::JobConfig job = Job(1, 1);
  auto planner = std::move(RoundPlanner::Create(job)).value();
  auto report = std::move(RoundReport::Create(job, *planner, Data())).value();
  v1::RoundMetrics m;
  ASSERT_THAT(report->Evaluate(Model(job), 1, &m), IsOk());
  v1::ClientRoundMetrics accepted;
  accepted.set_client_id("a");
  accepted.set_outcome(v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
  accepted.set_bytes_down(100);
  accepted.set_bytes_up(40);
  v1::ClientRoundMetrics dropped = accepted;
  dropped.set_client_id("b");
  dropped.set_outcome(v1::ClientRoundMetrics::OUTCOME_DROPPED);
  RoundReport::AddClient(accepted, 1, &m);
  RoundReport::AddClient(dropped, 1, &m);
  RoundReport::AddClient(accepted, -1, &m);  // no tier
  EXPECT_EQ(m.clients_size(), 3);
  EXPECT_EQ(m.tiers(1).sampled(), 2);
  EXPECT_EQ(m.tiers(1).participants(), 1);
  EXPECT_EQ(m.tiers(1).bytes_down(), 200);
  EXPECT_EQ(m.tiers(1).bytes_up(), 40);
  EXPECT_EQ(m.tiers(0).sampled(), 0);
}

TEST(RoundReportTest, RefusesEvaluationDataThatDoesNotFitTheModel) {
  const v1::JobConfig job = Job(1, 1);
  auto planner = std::move(RoundPlanner::Create(job)).value();
  EXPECT_THAT(RoundReport::Create(job, *planner, Data(/*features=*/5)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("5 features")));
  v1::JobConfig unknown = job;
  unknown.mutable_evaluation()->set_dataset("imagenet");
  EXPECT_THAT(RoundReport::Create(unknown, *planner, nullptr).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("imagenet")));
}

// A job's data path stays inside the coordinator's data root: relative, no "..", and no
// symbolic link out of it; without a data root no path at all.
TEST(RoundReportTest, DataPathsStayInsideTheDataRoot) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(::testing::TempDir()) / "round_report_data_root";
  fs::remove_all(root);
  fs::create_directories(root / "fmnist");
  fs::create_directories(root.string() + "-sibling");
  fs::create_directory_symlink("/etc", root / "escape");
  auto inside = ResolveDataPath(root.string(), "fmnist");
  ASSERT_THAT(inside.status(), IsOk());
  EXPECT_EQ(*inside, fs::weakly_canonical(root / "fmnist").string());
  EXPECT_THAT(ResolveDataPath(root.string() + "/", "fmnist").status(), IsOk());
  for (const char* bad : {"/etc", "../round_report_data_root-sibling", "fmnist/../../x", "escape",
                          "escape/ssl", ""}) {
    EXPECT_THAT(ResolveDataPath(root.string(), bad).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("data")))
        << bad;
  }
  EXPECT_THAT(ResolveDataPath("", "fmnist").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--data-root")));
  // Errors name the job's field the path came from.
  EXPECT_THAT(ResolveDataPath(root.string(), "../x", "language_model.base_path").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("language_model.base_path '../x'")));
  EXPECT_THAT(ResolveDataPath(root.string(), "/etc").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("evaluation.data_path")));
  // Through the evaluation data: the coordinator never opens the path.
  const v1::JobConfig job = Job(1, 1);
  auto planner = std::move(RoundPlanner::Create(job)).value();
  v1::JobConfig outside = job;
  outside.mutable_evaluation()->set_data_path("/etc");
  EXPECT_THAT(RoundReport::Create(outside, *planner, nullptr, root.string()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("relative to the data root")));
  fs::remove_all(root);
  fs::remove_all(root.string() + "-sibling");
}

TEST(RoundReportTest, WithoutACentralModelNothingIsEvaluated) {
  const v1::JobConfig job = Job(1, 1);
  auto planner = std::move(RoundPlanner::Create(job)).value();
  auto report = RoundReport::WithoutEvaluation(job, *planner);
  v1::RoundMetrics m;
  ASSERT_THAT(report->Evaluate(Model(job), 1, &m), IsOk());
  EXPECT_FALSE(m.evaluated());
}

}  // namespace
}  // namespace fedge::server

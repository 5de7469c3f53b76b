#include "server/open_round.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "aggregation/weighted_mean.h"
#include "base/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/sequential.h"
#include "model/zoo.h"
#include "server/model_weights.h"
#include "tests/status_matchers.h"
#include "tests/tiered_job.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

constexpr int64_t kMiB = int64_t{1} << 20;
const absl::Time kOpened = absl::FromUnixSeconds(1700000000);

v1::JobConfig PlainJob() {
  v1::JobConfig job;
  job.set_name("plain");
  *job.mutable_model_spec() = model::MlpSpec({6, 5, 2});
  job.mutable_local_training()->set_epochs(1);
  job.mutable_local_training()->set_batch_size(4);
  job.mutable_transfer()->set_task_encoding(v1::TENSOR_ENCODING_FLOAT32);
  return job;
}

class OpenRoundTest : public ::testing::Test {
 protected:
  // Opens round 1 (attempt 0) of job "job" for `ids`, each device with `budget` bytes of
  // memory, its deadline 60 s after kOpened.
  void Open(const v1::JobConfig& job, const std::vector<std::string>& ids, int64_t budget = 0,
            std::unique_ptr<SecureRound> secure = nullptr) {
    planner_ = std::move(RoundPlanner::Create(job)).value();
    auto net = std::move(model::Sequential::Create(job.model_spec())).value();
    net->InitParameters(1);
    auto central = std::make_shared<const v1::ModelProto>(net->ToProto());
    weights_ = WeightsFromProto(*central);
    OpenRound::Setup setup;
    setup.job_id = "job";
    setup.number = 1;
    setup.opened = kOpened;
    setup.deadline = kOpened + absl::Seconds(60);
    setup.sampled = ids;
    setup.models = std::make_unique<RoundPlanner::RoundModels>(central, planner_->tiers().size());
    v1::DeviceProfile profile;
    profile.set_memory_budget_bytes(budget);
    for (const std::string& id : ids) {
      setup.plans.push_back(std::move(planner_->PlanClient(*setup.models, 1, id, profile)).value());
    }
    auto mean = std::move(aggregation::WeightedMean::Create(aggregation::SpecsOf(weights_))).value();
    setup.intake = std::make_unique<RoundIntake>(std::move(mean), RoundIntake::Options{});
    setup.max_examples_per_client = 1000;
    setup.phase_timeout = absl::Seconds(10);
    setup.secure = std::move(secure);
    round_.emplace(*planner_, std::move(setup));
  }

  static v1::UpdateHeader Header(const std::string& id, int64_t examples = 10) {
    v1::UpdateHeader h;
    h.set_client_id(id);
    h.set_job_id("job");
    h.set_round(1);
    h.set_task_id(absl::StrCat("job/1/0/", id));
    h.set_num_examples(examples);
    return h;
  }

  // Δ = `value` everywhere in the shapes of `model`, of weight `weight`.
  static aggregation::Update Delta(const aggregation::ModelWeights& model, float value,
                                   double weight) {
    aggregation::Update u;
    u.weight = weight;
    for (const aggregation::Tensor& t : model) {
      u.tensors.push_back({t.name, t.shape, std::vector<float>(t.values.size(), value), {}});
    }
    return u;
  }

  // Each sampled client's figures at the close, in id order.
  static std::vector<v1::ClientRoundMetrics::Outcome> Outcomes(const OpenRound::Closing& c) {
    std::vector<v1::ClientRoundMetrics::Outcome> out;
    for (const auto& [m, tier] : c.clients) out.push_back(m.outcome());
    return out;
  }

  std::unique_ptr<RoundPlanner> planner_;
  aggregation::ModelWeights weights_;
  std::optional<OpenRound> round_;
};

TEST_F(OpenRoundTest, CheckHeaderRefusesOtherRoundsTasksAndClientsNotSampled) {
  Open(PlainJob(), {"a", "b"});
  EXPECT_THAT(round_->CheckHeader(Header("a")), IsOk());
  v1::UpdateHeader later = Header("a");
  later.set_round(2);
  EXPECT_THAT(round_->CheckHeader(later),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("update for round 2, but round 1 is open")));
  EXPECT_THAT(round_->CheckHeader(Header("z")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("client z is not (or no longer) part of round 1")));
  v1::UpdateHeader other_task = Header("a");
  other_task.set_task_id("job/1/0/b");
  EXPECT_THAT(round_->CheckHeader(other_task),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("expected 'job/1/0/a'")));
}

TEST_F(OpenRoundTest, AnAcceptedClientsSecondAnswerIsAlreadyExists) {
  Open(PlainJob(), {"a", "b"});
  ASSERT_THAT(round_->Accept(Header("a"), Delta(weights_, 0.1f, 10), 123, 0.5), IsOk());
  EXPECT_EQ(round_->accepted(), 1u);
  EXPECT_THAT(round_->CheckHeader(Header("a")),
              StatusIs(absl::StatusCode::kAlreadyExists,
                       HasSubstr("client a already sent its update for round 1")));
  EXPECT_THAT(round_->CheckHeader(Header("b")), IsOk());
}

TEST_F(OpenRoundTest, ASealedRoundRefusesEveryDeviceCallBeforeItsCloseRuns) {
  // The coordinator seals under its mutex and closes without it: between the two, a
  // device's header (the one that answered too, whose entry the close may still change) is
  // refused without reading the round's sets, and no task is handed out.
  Open(PlainJob(), {"a", "b"});
  ASSERT_THAT(round_->Accept(Header("a"), Delta(weights_, 0.1f, 10), 100, 0.5), IsOk());
  round_->Seal();
  EXPECT_TRUE(round_->sealed());
  EXPECT_TRUE(round_->settled());
  for (const char* id : {"a", "b"}) {
    EXPECT_THAT(round_->CheckHeader(Header(id)),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("round 1 is closing")));
    EXPECT_FALSE(round_->Task(id).has_value());
  }
  const OpenRound::Closing closing = round_->Close();
  EXPECT_THAT(closing.participants, ElementsAre("a"));
  EXPECT_THAT(Outcomes(closing), ElementsAre(v1::ClientRoundMetrics::OUTCOME_ACCEPTED,
                                             v1::ClientRoundMetrics::OUTCOME_DROPPED));
}

TEST_F(OpenRoundTest, WaitingEmptiesAsClientsAnswerAndEachOutcomeIsRecorded) {
  Open(PlainJob(), {"d", "c", "b", "a"});
  ASSERT_THAT(round_->Accept(Header("a"), Delta(weights_, 0.1f, 10), 100, 0.5), IsOk());
  EXPECT_FALSE(round_->settled());
  EXPECT_THAT(round_->Reject("b", absl::InvalidArgumentError("bad shapes")),
              StatusIs(absl::StatusCode::kInvalidArgument, "bad shapes"));
  round_->Decline("c", "over my memory budget", 4096);
  EXPECT_FALSE(round_->settled());
  round_->Drop("d");
  EXPECT_TRUE(round_->settled());
  // Nobody answers twice: the rejected and declined are no longer part of the round.
  EXPECT_THAT(round_->CheckHeader(Header("b")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no longer")));
  EXPECT_THAT(round_->CheckHeader(Header("c")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no longer")));

  const OpenRound::Closing closing = round_->Close();
  EXPECT_THAT(closing.participants, ElementsAre("a"));
  EXPECT_THAT(Outcomes(closing), ElementsAre(v1::ClientRoundMetrics::OUTCOME_ACCEPTED,
                                             v1::ClientRoundMetrics::OUTCOME_REJECTED,
                                             v1::ClientRoundMetrics::OUTCOME_DECLINED,
                                             v1::ClientRoundMetrics::OUTCOME_DROPPED));
  EXPECT_EQ(closing.clients[0].first.client_id(), "a");
  EXPECT_EQ(closing.clients[1].first.reason(), "bad shapes");
  EXPECT_EQ(closing.clients[2].first.reason(), "over my memory budget");
  EXPECT_EQ(closing.clients[2].first.peak_rss_bytes(), 4096);
  EXPECT_EQ(closing.clients[3].first.reason(), "");
  const v1::RoundMetrics& m = round_->metrics();
  EXPECT_EQ(m.round(), 1);
  EXPECT_EQ(m.sampled(), 4);
  EXPECT_EQ(m.participants(), 1);
  EXPECT_EQ(m.rejected(), 1);
  EXPECT_EQ(m.dropped(), 2);  // declined and silent
  EXPECT_EQ(m.started_unix_ms(), absl::ToUnixMillis(kOpened));
}

TEST_F(OpenRoundTest, RejectKeepsAShortReasonAndNamesAnUnexplainedOne) {
  Open(PlainJob(), {"a", "b"});
  const std::string long_reason(1000, 'x');
  EXPECT_THAT(round_->Reject("a", absl::InvalidArgumentError(long_reason)),
              StatusIs(absl::StatusCode::kInvalidArgument, long_reason));
  EXPECT_THAT(round_->Reject("b", absl::OkStatus()),
              StatusIs(absl::StatusCode::kInvalidArgument, "Coordinator: update rejected"));
  const OpenRound::Closing closing = round_->Close();
  EXPECT_EQ(closing.clients[0].first.reason(), std::string(256, 'x'));
  EXPECT_EQ(closing.clients[1].first.reason(), "Coordinator: update rejected");
  EXPECT_EQ(round_->metrics().rejected(), 2);
  EXPECT_EQ(round_->metrics().dropped(), 0);
}

TEST_F(OpenRoundTest, AnUpdateTheIntakeRefusesRejectsTheClient) {
  Open(PlainJob(), {"a", "b"});
  aggregation::Update wrong = Delta(weights_, 0.1f, 10);
  wrong.tensors[0].name = "nope";
  EXPECT_THAT(round_->Accept(Header("a"), std::move(wrong), 100, 0.5),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(round_->accepted(), 0u);
  EXPECT_THAT(round_->CheckHeader(Header("a")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no longer")));
  const OpenRound::Closing closing = round_->Close();
  EXPECT_EQ(closing.clients[0].first.outcome(), v1::ClientRoundMetrics::OUTCOME_REJECTED);
  EXPECT_EQ(round_->metrics().bytes_up(), 0);
}

TEST_F(OpenRoundTest, DropSilentDropsOnlyTheSilent) {
  Open(PlainJob(), {"a", "b", "c"});
  round_->DropSilent([](const std::string& id) { return id == "b"; });
  EXPECT_FALSE(round_->settled());
  EXPECT_THAT(round_->CheckHeader(Header("b")), IsOk());
  EXPECT_THAT(round_->CheckHeader(Header("a")), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_FALSE(round_->Task("c").has_value());
  round_->Drop("b");
  EXPECT_TRUE(round_->settled());
  EXPECT_EQ(round_->Close().participants.size(), 0u);
  EXPECT_EQ(round_->metrics().dropped(), 3);
}

TEST_F(OpenRoundTest, TasksGoToWaitingClientsAndCountTheirBytesOnce) {
  Open(PlainJob(), {"a", "b"});
  std::optional<TaskAssignment> task = round_->Task("a");
  ASSERT_TRUE(task.has_value());
  EXPECT_EQ(task->header.task_id(), "job/1/0/a");
  EXPECT_EQ(task->header.round(), 1);
  const int64_t bytes = RoundPlanner::EncodedBytes(*task->model, task->model_encoding);
  EXPECT_GT(bytes, 0);
  ASSERT_TRUE(round_->Task("a").has_value());  // a client that lost its task fetches again
  EXPECT_EQ(round_->metrics().bytes_down(), bytes);
  EXPECT_FALSE(round_->Task("z").has_value());
  ASSERT_THAT(round_->Accept(Header("a"), Delta(weights_, 0.1f, 10), 100, 0.5), IsOk());
  EXPECT_FALSE(round_->Task("a").has_value());  // answered
  const OpenRound::Closing closing = round_->Close();
  EXPECT_EQ(closing.clients[0].first.bytes_down(), bytes);
  EXPECT_EQ(closing.clients[1].first.bytes_down(), 0);  // never fetched
}

TEST_F(OpenRoundTest, AcceptedFiguresAddUpForTheRoundAndTheDevicesEvaluation) {
  Open(PlainJob(), {"a", "b", "c"});
  v1::UpdateHeader a = Header("a", 10);
  a.mutable_metrics()->set_train_loss(1.0);
  a.mutable_metrics()->set_train_seconds(2.0);
  a.mutable_metrics()->set_update_norm(0.5);
  a.mutable_metrics()->set_eval_accuracy(0.5);
  a.mutable_metrics()->set_eval_examples(20);
  v1::UpdateHeader b = Header("b", 30);
  b.mutable_metrics()->set_train_loss(2.0);
  b.mutable_metrics()->set_train_seconds(4.0);
  b.mutable_metrics()->set_peak_rss_bytes(-5);  // nonsense: kept as 0
  b.mutable_metrics()->set_eval_accuracy(1.5);  // out of range: not counted
  b.mutable_metrics()->set_eval_examples(20);
  ASSERT_THAT(round_->Accept(a, Delta(weights_, 0.1f, 10), 100, 0.5), IsOk());
  ASSERT_THAT(round_->Accept(b, Delta(weights_, 0.2f, 30), 300, 0.5), IsOk());
  const OpenRound::Closing closing = round_->Close();
  EXPECT_THAT(closing.participants, UnorderedElementsAre("a", "b"));
  const v1::RoundMetrics& m = round_->metrics();
  EXPECT_EQ(m.bytes_up(), 400);
  EXPECT_EQ(m.examples(), 40);
  EXPECT_DOUBLE_EQ(m.train_loss(), (1.0 * 10 + 2.0 * 30) / 40);
  EXPECT_DOUBLE_EQ(m.mean_client_seconds(), 3.0);
  EXPECT_EQ(m.dropped(), 1);
  const v1::ClientRoundMetrics& ma = closing.clients[0].first;
  EXPECT_EQ(ma.bytes_up(), 100);
  EXPECT_EQ(ma.num_examples(), 10);
  EXPECT_DOUBLE_EQ(ma.update_norm(), 0.5);
  EXPECT_DOUBLE_EQ(ma.eval_accuracy(), 0.5);
  EXPECT_EQ(closing.clients[1].first.peak_rss_bytes(), 0);
  EXPECT_EQ(closing.clients[1].first.eval_examples(), 0);
  const aggregation::DeviceEvaluation devices = round_->Devices();
  EXPECT_EQ(devices.clients, 1);
  EXPECT_EQ(devices.examples, 20);
  EXPECT_DOUBLE_EQ(devices.correct, 10.0);
  EXPECT_EQ(devices.model_round, 0);
  // The accepted updates reach the aggregate, weighted by their examples.
  absl::StatusOr<aggregation::ModelDelta> delta = std::move(round_->intake()).Report();
  ASSERT_THAT(delta.status(), IsOk());
  EXPECT_EQ(delta->num_updates, 2);
  EXPECT_NEAR(delta->tensors[0].values[0], (0.1 * 10 + 0.2 * 30) / 40, 1e-6);
}

TEST_F(OpenRoundTest, SubModelUpdatesComeBackInTheFullShapesAndWrongOnesNameTheTier) {
  // 20 MiB devices get the half tier.
  Open(::fedge::testing::TieredJob(1, 2), {"a", "b"}, /*budget=*/20 * kMiB);
  const ExpectedUpdate expected = round_->Expected("a");
  EXPECT_EQ(expected.what, "the task's sub-model (tier 'half', width 0.5)");
  aggregation::Update update = Delta(WeightsFromProto(*expected.model), 0.1f, 10);
  ASSERT_THAT(round_->ToFullShapes("a", update), IsOk());
  ASSERT_EQ(update.tensors.size(), weights_.size());
  EXPECT_EQ(update.tensors[0].shape, weights_[0].shape);
  ASSERT_TRUE(update.tensors[0].held.has_value());
  EXPECT_EQ(update.tensors[0].held->CountHeld(), 8 * 8);  // 8 inputs × 8 of 16 units
  // A full-shaped update from a half-tier client does not fit its sub-model.
  aggregation::Update full = Delta(weights_, 0.1f, 10);
  EXPECT_THAT(round_->ToFullShapes("a", full),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("client a (tier 'half', width 0.5)")));
  const OpenRound::Closing closing = round_->Close();
  EXPECT_EQ(closing.clients[0].first.tier(), "half");
  EXPECT_EQ(closing.clients[0].second, 1);
}

TEST_F(OpenRoundTest, WithoutSecureAggregationSecureStepsAreRefused) {
  Open(PlainJob(), {"a"});
  EXPECT_THAT(round_->CheckInTheClear("a"), IsOk());
  v1::SecAggStepRequest poll;
  poll.set_client_id("a");
  poll.set_poll(0);
  base::ManualClock clock(kOpened);
  EXPECT_THAT(round_->SecureStep(poll, clock, weights_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("round 1 does not use secure aggregation")));
}

class OpenSecureRoundTest : public OpenRoundTest {
 protected:
  void SetUp() override {
    v1::PrivacyConfig privacy;
    privacy.set_clip_norm(1.0);
    privacy.set_secure_aggregation_threshold(2);
    SecureRound::Encoding e;
    e.clip_norm = 1.0;
    const std::vector<std::string> ids = {"a", "b", "c"};
    auto secure = SecureRound::Create(privacy, ids, 40, e);
    ASSERT_THAT(secure.status(), IsOk());
    (*secure)->set_phase_deadline(kOpened + absl::Seconds(60));
    Open(PlainJob(), ids, 0, *std::move(secure));
  }
};

TEST_F(OpenSecureRoundTest, UpdatesInTheClearAreRefused) {
  EXPECT_THAT(round_->CheckInTheClear("a"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("must send its update masked, through SecureAggregationStep")));
  EXPECT_TRUE(round_->Task("a")->header.has_secure_aggregation());
}

TEST_F(OpenSecureRoundTest, ABadMessageRejectsTheClientAndTheRoundGoesOn) {
  base::ManualClock clock(kOpened);
  v1::SecAggStepRequest early;  // a masked input during the keys phase
  early.set_client_id("a");
  early.mutable_masked_input()->set_num_examples(5);
  EXPECT_THAT(round_->SecureStep(early, clock, weights_),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("during the")));
  EXPECT_THAT(round_->CheckHeader(Header("a")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no longer")));
  EXPECT_THAT(round_->CheckHeader(Header("b")), IsOk());
  EXPECT_FALSE(round_->settled());
  const OpenRound::Closing closing = round_->Close();
  EXPECT_EQ(closing.clients[0].first.outcome(), v1::ClientRoundMetrics::OUTCOME_REJECTED);
  EXPECT_THAT(closing.clients[0].first.reason(), HasSubstr("masked input"));
  EXPECT_EQ(round_->metrics().rejected(), 1);
}

TEST_F(OpenSecureRoundTest, WhileUnmaskingNoTaskIsGivenPollsRetryAndMessagesAreLate) {
  base::ManualClock clock(kOpened);
  OpenRound::Unmasking unmasking = round_->BeginUnmasking();
  EXPECT_TRUE(round_->unmasking());
  EXPECT_THAT(unmasking.waiting, UnorderedElementsAre("a", "b", "c"));
  EXPECT_FALSE(round_->Task("a").has_value());
  v1::SecAggStepRequest poll;
  poll.set_client_id("a");
  poll.set_poll(2);
  absl::StatusOr<v1::SecAggStepResponse> r = round_->SecureStep(poll, clock, weights_);
  ASSERT_THAT(r.status(), IsOk());
  EXPECT_EQ(r->retry_after_ms(), 200);
  v1::SecAggStepRequest late;
  late.set_client_id("b");
  late.mutable_unmasking();
  EXPECT_THAT(round_->SecureStep(late, clock, weights_),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("came too late")));
  // Who is left after the phase comes back with it.
  unmasking.waiting.erase("c");
  absl::StatusOr<bool> finished = round_->EndUnmasking(std::move(unmasking));
  ASSERT_THAT(finished.status(), IsOk());
  EXPECT_FALSE(*finished);
  EXPECT_FALSE(round_->unmasking());
  EXPECT_TRUE(round_->Task("a").has_value());
  EXPECT_THAT(round_->CheckHeader(Header("c")), StatusIs(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace fedge::server

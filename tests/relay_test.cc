// Relays, transport-free (docs/relays.md): a root coordinator and relay coordinators in one
// process, as fedge-coordinator runs them over gRPC, with devices that train real tasks.
// The relays' driver (sync, model, part of the round) is done here by hand, step by step,
// so that every step's outcome can be checked.
//  - Equivalence: 3 relays × 4 devices give the central model of 12 devices on one
//    coordinator, bit for bit, with exact sums (plain FedAvg; sub-model tiers with random
//    subsets, whose plans the relays draw themselves).
//  - A relayed device's task and update go through its relay only.
//  - A part that does not fit (another relay's device, a count that differs from the
//    aggregate's, an aggregate that does not load, another round) is refused with the
//    reason and costs only that relay's devices; the round completes from the others.
//  - A relay lost mid-round costs its devices that round; a relay restarted under the same
//    id serves them again once they register again, and the job goes on.
//  - Jobs relays cannot serve (a robust rule) sample only the root's own devices.
#include <initializer_list>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "base/status_macros.h"
#include "aggregation/weighted_mean.h"
#include "client/local_trainer.h"
#include "client/secagg_device.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/zoo.h"
#include "server/coordinator.h"
#include "server/model_weights.h"
#include "server/store.h"
#include "tests/model_compare.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"
#include "tests/temp_dir.h"
#include "tests/tiered_job.h"
#include "tests/update_header.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kToken[] = "enroll-me";
constexpr int64_t kMiB = int64_t{1} << 20;

struct Device {
  std::string id, token, key;
  int64_t budget = 0;
  data::Dataset data;
};

v1::JobConfig PlainJob(int rounds, int per_round, int quorum) {
  v1::JobConfig job;
  job.set_name("relays");
  *job.mutable_model_spec() = model::MlpSpec({8, 16, 3}, "tiny");
  job.set_rounds(rounds);
  job.mutable_selection()->set_clients_per_round(per_round);
  job.mutable_round_policy()->set_quorum(quorum);
  job.mutable_round_policy()->set_deadline_seconds(600);
  job.mutable_local_training()->set_epochs(1);
  job.mutable_local_training()->set_batch_size(16);
  job.mutable_local_training()->set_learning_rate(0.1);
  job.mutable_strategy()->set_exact_sums(true);
  return job;
}

class RelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    eval_ = std::make_shared<const data::Dataset>(::fedge::testing::SeparableData(300, 8, 3, 99));
  }

  CoordinatorOptions Options() {
    CoordinatorOptions o;
    o.clock = &clock_;
    o.enrollment_token = kToken;
    o.evaluation_data = eval_;
    o.accept_requested_client_ids = true;  // the same ids in every setup
    return o;
  }
  std::unique_ptr<Coordinator> MakeRoot() {
    CoordinatorOptions o = Options();
    o.dp_noise_seed = 7;  // the same noise in every setup
    auto c = Coordinator::Create(o, nullptr);
    EXPECT_THAT(c, IsOk());
    return std::move(c).value();
  }
  std::unique_ptr<Coordinator> MakeRelay(Coordinator& root, const std::string& id) {
    CoordinatorOptions o = Options();
    // Secure-aggregation phases wait out the tests' clock jumps past the liveness timeout.
    o.secure_aggregation_phase_timeout = absl::Seconds(300);
    o.accept_requested_client_ids = false;  // the root names devices, not the relay
    o.relay_id = id;
    o.upstream_register = [&root, id](const v1::RegisterRequest& r) {
      return root.RegisterThroughRelay(id, r);
    };
    auto c = Coordinator::Create(o, nullptr);
    EXPECT_THAT(c, IsOk());
    return std::move(c).value();
  }

  // Registers (or registers again, with its key) at `home`: a coordinator or a relay.
  void Enroll(Coordinator& home, Device& d) {
    v1::RegisterRequest r;
    r.set_enrollment_token(kToken);
    r.set_previous_client_id(d.id);
    r.set_device_key(d.key);
    r.mutable_profile()->set_num_examples(64);
    r.mutable_profile()->set_memory_budget_bytes(d.budget);
    absl::StatusOr<v1::RegisterResponse> resp = home.Register(r);
    ASSERT_THAT(resp, IsOk());
    ASSERT_EQ(resp->client_id(), d.id);
    d.token = resp->session_token();
    if (!resp->device_key().empty()) d.key = resp->device_key();
  }
  std::vector<Device> Devices(int n) {
    std::vector<Device> out;
    for (int i = 0; i < n; ++i) {
      Device d;
      d.id = absl::StrCat("dev-", i < 10 ? "0" : "", i);
      // Three memory classes: with tiers, every tier has devices at every relay.
      d.budget = (i % 3 == 0 ? 128 : i % 3 == 1 ? 32 : 1) * kMiB;
      d.data = ::fedge::testing::SeparableData(64, 8, 3, 1000 + i);
      out.push_back(std::move(d));
    }
    return out;
  }

  // The device's side of a round at `home`: fetch, train, upload.
  absl::Status Train(Coordinator& home, const Device& d) {
    FEDGE_ASSIGN_OR_RETURN(std::optional<TaskAssignment> task, home.FetchTask(d.id, d.token));
    if (!task.has_value()) return absl::NotFoundError(absl::StrCat(d.id, " has no task"));
    FEDGE_ASSIGN_OR_RETURN(client::LocalTrainingOptions o,
                           client::OptionsFromTask(task->header, 1));
    o.teacher = task->teacher.get();
    FEDGE_ASSIGN_OR_RETURN(client::LocalUpdate u, client::TrainLocally(*task->model, d.data, o));
    return home.SubmitUpdate(
        ::fedge::testing::UpdateHeaderFor(d.id, d.token, task->header, u.num_examples),
        UpdateFromDeltaProto(d.id, u.num_examples, u.delta),
        static_cast<int64_t>(u.delta.ByteSizeLong()));
  }

  // A relay's sync with its root, as its driver does it: its live devices up, the
  // assignment and (when it changed) the model down, then Follow.
  absl::Status Sync(Coordinator& root, Coordinator& relay, const std::string& relay_id) {
    v1::RelaySyncRequest request;
    request.set_relay_id(relay_id);
    for (const std::string& id : relay.SeenSince(clock_.Now() - absl::Seconds(60))) {
      request.add_live_clients(id);
    }
    FEDGE_ASSIGN_OR_RETURN(v1::RelayAssignment a, root.RelaySync(request));
    if (!relay.NeedsModel(a)) return relay.Follow(a, nullptr);
    FEDGE_ASSIGN_OR_RETURN(Coordinator::VersionedModel m, root.RelayModel(a.job_id()));
    EXPECT_EQ(m.version, a.model_version());
    return relay.Follow(a, &m.model);
  }
  // The relay's part of its round to the root, once its devices answered.
  absl::Status Deliver(Coordinator& root, Coordinator& relay) {
    FEDGE_RETURN_IF_ERROR(relay.Tick());
    std::optional<Coordinator::Partial> part = relay.TakePartial();
    if (!part.has_value()) return absl::NotFoundError("the relay's round is not closed");
    return root.SubmitPartial(part->header, part->aggregate);
  }

  // Runs `cfg` on 12 devices on one coordinator; returns the model and the rounds' records.
  v1::ModelProto RunAlone(const v1::JobConfig& cfg, std::vector<v1::RoundRecord>* rounds) {
    auto c = MakeRoot();
    std::vector<Device> devices = Devices(12);
    for (Device& d : devices) Enroll(*c, d);
    absl::StatusOr<std::string> job = c->StartJob(cfg);
    EXPECT_THAT(job, IsOk());
    for (int r = 0; r < cfg.rounds(); ++r) {
      EXPECT_THAT(c->Tick(), IsOk());
      for (const Device& d : devices) EXPECT_THAT(Train(*c, d), IsOk()) << d.id;
      EXPECT_THAT(c->Tick(), IsOk());
    }
    *rounds = c->ListRounds(*job).value();
    return c->ExportModel(*job).value();
  }

  // The same on a root with 3 relays of 4 devices each.
  v1::ModelProto RunRelayed(const v1::JobConfig& cfg, std::vector<v1::RoundRecord>* rounds) {
    auto root = MakeRoot();
    std::vector<std::unique_ptr<Coordinator>> relays;
    const std::vector<std::string> ids = {"relay-a", "relay-b", "relay-c"};
    for (const std::string& id : ids) relays.push_back(MakeRelay(*root, id));
    std::vector<Device> devices = Devices(12);
    for (size_t i = 0; i < devices.size(); ++i) Enroll(*relays[i / 4], devices[i]);
    absl::StatusOr<std::string> job = root->StartJob(cfg);
    EXPECT_THAT(job, IsOk());
    for (int r = 0; r < cfg.rounds(); ++r) {
      EXPECT_THAT(root->Tick(), IsOk());  // opens the round
      for (size_t k = 0; k < relays.size(); ++k) EXPECT_THAT(Sync(*root, *relays[k], ids[k]), IsOk());
      for (size_t i = 0; i < devices.size(); ++i) {
        EXPECT_THAT(Train(*relays[i / 4], devices[i]), IsOk()) << devices[i].id;
      }
      for (auto& relay : relays) EXPECT_THAT(Deliver(*root, *relay), IsOk());
      EXPECT_THAT(root->Tick(), IsOk());  // completes it
    }
    *rounds = root->ListRounds(*job).value();
    return root->ExportModel(*job).value();
  }

  base::ManualClock clock_;
  std::shared_ptr<const data::Dataset> eval_;
};

void ExpectSameRounds(const std::vector<v1::RoundRecord>& alone,
                      const std::vector<v1::RoundRecord>& relayed) {
  ASSERT_EQ(alone.size(), relayed.size());
  for (size_t r = 0; r < alone.size(); ++r) {
    const v1::RoundMetrics& a = alone[r].metrics();
    const v1::RoundMetrics& b = relayed[r].metrics();
    EXPECT_EQ(b.participants(), 12);
    EXPECT_EQ(a.participants(), b.participants());
    EXPECT_EQ(a.examples(), b.examples());
    EXPECT_EQ(a.bytes_down(), b.bytes_down());
    EXPECT_EQ(a.bytes_up(), b.bytes_up());
    EXPECT_EQ(a.train_loss(), b.train_loss());
    EXPECT_EQ(a.test_accuracy(), b.test_accuracy());
    ASSERT_EQ(a.clients_size(), b.clients_size());
    for (int i = 0; i < a.clients_size(); ++i) {
      EXPECT_EQ(a.clients(i).client_id(), b.clients(i).client_id());
      EXPECT_EQ(a.clients(i).tier(), b.clients(i).tier());
      EXPECT_EQ(a.clients(i).outcome(), b.clients(i).outcome());
      EXPECT_EQ(a.clients(i).update_norm(), b.clients(i).update_norm());
    }
  }
}

TEST_F(RelayTest, ThreeRelaysOfFourDevicesGiveTheModelOfOneCoordinatorBitForBit) {
  const v1::JobConfig cfg = PlainJob(/*rounds=*/3, /*per_round=*/12, /*quorum=*/12);
  std::vector<v1::RoundRecord> alone_rounds, relayed_rounds;
  const v1::ModelProto alone = RunAlone(cfg, &alone_rounds);
  const v1::ModelProto relayed = RunRelayed(cfg, &relayed_rounds);
  ::fedge::testing::ExpectSameParameters(alone, relayed);
  ExpectSameRounds(alone_rounds, relayed_rounds);
  // The rounds trained something: the model learned the separable problem.
  ASSERT_EQ(relayed_rounds.size(), 3u);
  EXPECT_GT(relayed_rounds.back().metrics().test_accuracy(),
            relayed_rounds.front().metrics().test_accuracy() - 1e-9);
  EXPECT_GT(relayed_rounds.back().metrics().test_accuracy(), 0.45);  // chance: 1/3
}

TEST_F(RelayTest, CentralDpWithAdaptiveClippingGivesTheSameModelWithTheSameNoise) {
  // The relays check the root's clip norm and report the norms they measured; the root
  // counts the unclipped updates, noises the merged sum and adapts the clip norm: with the
  // same noise seed, the relayed job is the single coordinator's to the bit (with fresh
  // noise, the two differ by the noise alone).
  v1::JobConfig cfg = PlainJob(/*rounds=*/3, /*per_round=*/12, /*quorum=*/12);
  cfg.mutable_privacy()->set_clip_norm(0.2);
  cfg.mutable_privacy()->set_noise_multiplier(0.5);
  cfg.mutable_privacy()->mutable_adaptive_clipping();
  std::vector<v1::RoundRecord> alone_rounds, relayed_rounds;
  const v1::ModelProto alone = RunAlone(cfg, &alone_rounds);
  const v1::ModelProto relayed = RunRelayed(cfg, &relayed_rounds);
  ::fedge::testing::ExpectSameParameters(alone, relayed);
  ExpectSameRounds(alone_rounds, relayed_rounds);
  ASSERT_EQ(relayed_rounds.size(), 3u);
  const v1::RoundMetrics& a = alone_rounds.back().metrics();
  const v1::RoundMetrics& b = relayed_rounds.back().metrics();
  EXPECT_GT(b.epsilon(), 0);
  EXPECT_EQ(a.epsilon(), b.epsilon());
  EXPECT_EQ(a.dp_unclipped_fraction(), b.dp_unclipped_fraction());
  EXPECT_EQ(a.dp_next_clip_norm(), b.dp_next_clip_norm());
  EXPECT_NE(relayed_rounds.front().metrics().dp_clip_norm(), b.dp_clip_norm());  // adapted
}

TEST_F(RelayTest, SubModelTiersWithRandomSubsetsAreThePlansOfTheRootToTheBit) {
  v1::JobConfig cfg = ::fedge::testing::TieredJob(/*rounds=*/2, /*per_round=*/12);
  cfg.mutable_sub_models()->set_extraction(v1::SubModelConfig::EXTRACTION_RANDOM_SUBSET);
  cfg.mutable_sub_models()->set_seed(7);
  cfg.mutable_round_policy()->set_quorum(12);
  cfg.mutable_strategy()->set_exact_sums(true);
  // The adaptive norm bound and the direction check compare each update with its group's
  // medians: a relay's 4, the coordinator's 12 (docs/relays.md); sub-models' norms differ
  // enough for the bound to bite, so the equivalence is measured with a fixed bound.
  cfg.mutable_robustness()->set_max_update_norm(100);
  cfg.mutable_robustness()->set_direction_check(false);
  std::vector<v1::RoundRecord> alone_rounds, relayed_rounds;
  const v1::ModelProto alone = RunAlone(cfg, &alone_rounds);
  const v1::ModelProto relayed = RunRelayed(cfg, &relayed_rounds);
  ::fedge::testing::ExpectSameParameters(alone, relayed);
  ExpectSameRounds(alone_rounds, relayed_rounds);
  ASSERT_FALSE(relayed_rounds.empty());
  EXPECT_EQ(relayed_rounds[0].metrics().tiers_size(), 3);
}

// A root with two relays of three devices and one device of its own, a job started and
// its first round open and synced.
class RelayRoundTest : public RelayTest {
 protected:
  void SetUp() override {
    RelayTest::SetUp();
    root_ = MakeRoot();
    a_ = MakeRelay(*root_, "relay-a");
    b_ = MakeRelay(*root_, "relay-b");
    devices_ = Devices(7);
    for (int i = 0; i < 3; ++i) Enroll(*a_, devices_[i]);
    for (int i = 3; i < 6; ++i) Enroll(*b_, devices_[i]);
    Enroll(*root_, devices_[6]);
  }
  void Open(const v1::JobConfig& cfg) {
    job_ = root_->StartJob(cfg).value();
    ASSERT_THAT(root_->Tick(), IsOk());
    ASSERT_THAT(Sync(*root_, *a_, "relay-a"), IsOk());
    ASSERT_THAT(Sync(*root_, *b_, "relay-b"), IsOk());
  }
  v1::RoundRecord Round(int64_t number) {
    std::vector<v1::RoundRecord> rounds = root_->ListRounds(job_).value();
    for (const v1::RoundRecord& r : rounds) {
      if (r.round() == number) return r;
    }
    ADD_FAILURE() << "no round " << number;
    return {};
  }
  // Relay A's part of round 1 of a job of quorum 1, its 3 devices trained.
  Coordinator::Partial RelayAPart() {
    Open(PlainJob(1, 7, 1));
    for (int i = 0; i < 3; ++i) EXPECT_THAT(Train(*a_, devices_[i]), IsOk());
    EXPECT_THAT(a_->Tick(), IsOk());
    std::optional<Coordinator::Partial> part = a_->TakePartial();
    EXPECT_TRUE(part.has_value());
    return part.value_or(Coordinator::Partial());
  }
  // The root's device answers and the round closes at its deadline; its record.
  v1::RoundRecord CloseAndRecord() {
    EXPECT_THAT(Train(*root_, devices_[6]), IsOk());
    clock_.Advance(absl::Seconds(601));
    Ping(*root_, {6});
    EXPECT_THAT(root_->Tick(), IsOk());
    return Round(1);
  }
  // The devices call `home` (a long poll's FetchTask): they count as live.
  void Ping(Coordinator& home, std::initializer_list<int> which) {
    for (int i : which) {
      EXPECT_THAT(home.FetchTask(devices_[i].id, devices_[i].token), IsOk()) << devices_[i].id;
    }
  }
  v1::ClientRoundMetrics::Outcome OutcomeOf(const v1::RoundRecord& r, const std::string& id) {
    for (const v1::ClientRoundMetrics& c : r.metrics().clients()) {
      if (c.client_id() == id) return c.outcome();
    }
    return v1::ClientRoundMetrics::OUTCOME_UNSPECIFIED;
  }

  std::unique_ptr<Coordinator> root_, a_, b_;
  std::vector<Device> devices_;
  std::string job_;
};

TEST_F(RelayRoundTest, ARelayedDevicesTaskAndUpdateGoThroughItsRelayOnly) {
  Open(PlainJob(1, 7, 7));
  const Device& d = devices_[0];
  // At the root: no task, and an update is refused, naming the relay.
  absl::StatusOr<std::optional<TaskAssignment>> at_root = root_->FetchTask(d.id, d.token);
  ASSERT_THAT(at_root, IsOk());
  EXPECT_FALSE(at_root->has_value());
  absl::StatusOr<std::optional<TaskAssignment>> at_relay = a_->FetchTask(d.id, d.token);
  ASSERT_THAT(at_relay, IsOk());
  ASSERT_TRUE(at_relay->has_value());
  v1::UpdateHeader h = ::fedge::testing::UpdateHeaderFor(d.id, d.token, (*at_relay)->header, 64);
  EXPECT_THAT(root_->SubmitPayload(h, ""),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("relay relay-a")));
  // The other relay does not know the device.
  EXPECT_THAT(b_->FetchTask(d.id, d.token), StatusIs(absl::StatusCode::kUnauthenticated));
  // A relay starts no job of its own.
  EXPECT_THAT(a_->StartJob(PlainJob(1, 1, 1)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("relay")));
  // The root's own device trains at the root.
  EXPECT_THAT(Train(*root_, devices_[6]), IsOk());
}

TEST_F(RelayRoundTest, APartThatDoesNotFitIsRefusedAndCostsOnlyThatRelaysDevices) {
  Open(PlainJob(1, 7, 4));
  for (int i = 0; i < 6; ++i) ASSERT_THAT(Train(i < 3 ? *a_ : *b_, devices_[i]), IsOk());
  ASSERT_THAT(Train(*root_, devices_[6]), IsOk());
  ASSERT_THAT(a_->Tick(), IsOk());
  ASSERT_THAT(b_->Tick(), IsOk());
  std::optional<Coordinator::Partial> pa = a_->TakePartial();
  std::optional<Coordinator::Partial> pb = b_->TakePartial();
  ASSERT_TRUE(pa.has_value() && pb.has_value());
  EXPECT_FALSE(a_->TakePartial().has_value());  // once
  ASSERT_EQ(pa->header.clients_size(), 3);
  for (const v1::ClientRoundMetrics& c : pa->header.clients()) {
    EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
    EXPECT_GT(c.bytes_down(), 0);
  }

  // Relay B's part, each way wrong: refused with the reason, nothing taken (the round is
  // still open for the next try only when the refusal is about the round itself).
  {
    Coordinator::Partial late = *pb;
    late.header.set_round(2);
    EXPECT_THAT(root_->SubmitPartial(late.header, late.aggregate),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not open")));
    Coordinator::Partial wrong_size = *pb;
    wrong_size.header.set_total_bytes(1);
    EXPECT_THAT(root_->SubmitPartial(wrong_size.header, wrong_size.aggregate),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("announced")));
  }
  {
    // Relay B claims one of relay A's devices.
    Coordinator::Partial stolen = *pb;
    stolen.header.mutable_clients(0)->set_client_id(devices_[0].id);
    EXPECT_THAT(root_->SubmitPartial(stolen.header, stolen.aggregate),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("not one of its clients the round waits for")));
  }
  // B's devices are out of the round now (rejected, with the reason): its true part comes
  // too late for them.
  EXPECT_THAT(root_->SubmitPartial(pb->header, pb->aggregate),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // A relay cannot send a part of another opening of the round (a restarted root's).
  {
    Coordinator::Partial stale = *pa;
    stale.header.set_round_key(pa->header.round_key() + 1);
    EXPECT_THAT(root_->SubmitPartial(stale.header, stale.aggregate),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not open")));
  }
  // A's part is taken; the round completes from A's 3 and the root's own device.
  ASSERT_THAT(root_->SubmitPartial(pa->header, pa->aggregate), IsOk());
  ASSERT_THAT(root_->Tick(), IsOk());
  const v1::RoundRecord r = Round(1);
  EXPECT_EQ(r.state(), v1::ROUND_STATE_COMPLETED);
  EXPECT_EQ(r.metrics().participants(), 4);
  EXPECT_EQ(OutcomeOf(r, devices_[0].id), v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
  EXPECT_EQ(OutcomeOf(r, devices_[3].id), v1::ClientRoundMetrics::OUTCOME_REJECTED);
  EXPECT_EQ(OutcomeOf(r, devices_[6].id), v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
}

TEST_F(RelayRoundTest, ARelayCannotClaimAnotherRelaysDevicesOrTheRoots) {
  Open(PlainJob(2, 7, 7));
  for (int i = 0; i < 6; ++i) ASSERT_THAT(Train(i < 3 ? *a_ : *b_, devices_[i]), IsOk());
  ASSERT_THAT(Train(*root_, devices_[6]), IsOk());
  ASSERT_THAT(Deliver(*root_, *a_), IsOk());
  ASSERT_THAT(Deliver(*root_, *b_), IsOk());
  ASSERT_THAT(root_->Tick(), IsOk());
  ASSERT_EQ(Round(1).metrics().participants(), 7);
  // Relay B reports relay A's device and the root's own as its live devices.
  v1::RelaySyncRequest claim;
  claim.set_relay_id("relay-b");
  claim.add_live_clients(devices_[0].id);
  claim.add_live_clients(devices_[6].id);
  ASSERT_THAT(root_->RelaySync(claim), IsOk());
  ASSERT_THAT(root_->Tick(), IsOk());  // round 2
  // Nothing moved: the root serves its own device, relay A its own, and relay B only its.
  absl::StatusOr<std::optional<TaskAssignment>> own = root_->FetchTask(devices_[6].id, devices_[6].token);
  ASSERT_THAT(own, IsOk());
  EXPECT_TRUE(own->has_value());
  v1::RelaySyncRequest b;
  b.set_relay_id("relay-b");
  absl::StatusOr<v1::RelayAssignment> assignment = root_->RelaySync(b);
  ASSERT_THAT(assignment, IsOk());
  ASSERT_EQ(assignment->round().clients_size(), 3);
  for (const v1::RelayClient& c : assignment->round().clients()) {
    EXPECT_NE(c.client_id(), devices_[0].id);
    EXPECT_NE(c.client_id(), devices_[6].id);
  }
  ASSERT_THAT(Sync(*root_, *a_, "relay-a"), IsOk());
  absl::StatusOr<std::optional<TaskAssignment>> at_a = a_->FetchTask(devices_[0].id, devices_[0].token);
  ASSERT_THAT(at_a, IsOk());
  EXPECT_TRUE(at_a->has_value());
}

// Each way a part's sums can disagree with its header, in a round of its own (a refused
// part rejects the relay's devices, so a second try names no device the round waits for).
TEST_F(RelayRoundTest, SumsHeavierThanTheAcceptedDevicesExamplesAreRefused) {
  Coordinator::Partial part = RelayAPart();
  part.header.mutable_clients()->RemoveLast();  // 2 accepted of 64 examples, 3 summed
  EXPECT_THAT(root_->SubmitPartial(part.header, part.aggregate),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weigh 192 for 2")));
  const v1::RoundRecord r = CloseAndRecord();
  EXPECT_EQ(OutcomeOf(r, devices_[0].id), v1::ClientRoundMetrics::OUTCOME_REJECTED);
  EXPECT_EQ(OutcomeOf(r, devices_[2].id), v1::ClientRoundMetrics::OUTCOME_REJECTED);
}

TEST_F(RelayRoundTest, AcceptedCountsThatDifferFromTheSumsAreRefused) {
  Coordinator::Partial part = RelayAPart();
  part.header.mutable_clients()->RemoveLast();
  // Their examples raised to the sums' weight: the weight fits, the count does not.
  for (v1::ClientRoundMetrics& c : *part.header.mutable_clients()) c.set_num_examples(96);
  EXPECT_THAT(root_->SubmitPartial(part.header, part.aggregate),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sums 3 updates")));
}

TEST_F(RelayRoundTest, SumsThatDoNotLoadAreRefused) {
  Coordinator::Partial part = RelayAPart();
  part.aggregate[part.aggregate.size() / 2] ^= 0x5a;
  EXPECT_THAT(root_->SubmitPartial(part.header, part.aggregate),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not load")));
}

TEST_F(RelayRoundTest, ALostRelayCostsItsDevicesTheRoundAndARestartedOneServesThemAgain) {
  Open(PlainJob(2, 7, 4));
  for (int i = 0; i < 3; ++i) ASSERT_THAT(Train(*a_, devices_[i]), IsOk());
  ASSERT_THAT(Train(*root_, devices_[6]), IsOk());
  ASSERT_THAT(Deliver(*root_, *a_), IsOk());
  // Relay B dies with its round (its devices trained nothing yet).
  b_.reset();
  // The root waits for B's devices until they are silent past the liveness timeout (B
  // reports them no more), then completes the round from the others.
  ASSERT_THAT(root_->Tick(), IsOk());
  EXPECT_EQ(root_->GetJob(job_)->completed_rounds(), 0);
  clock_.Advance(absl::Seconds(61));
  Ping(*a_, {0, 1, 2});
  Ping(*root_, {6});
  ASSERT_THAT(Sync(*root_, *a_, "relay-a"), IsOk());  // A's devices stay live
  ASSERT_THAT(root_->Tick(), IsOk());
  const v1::RoundRecord r1 = Round(1);
  EXPECT_EQ(r1.state(), v1::ROUND_STATE_COMPLETED);
  EXPECT_EQ(r1.metrics().participants(), 4);
  EXPECT_EQ(OutcomeOf(r1, devices_[3].id), v1::ClientRoundMetrics::OUTCOME_DROPPED);

  // B restarts with nothing; its devices find their sessions unknown and register again
  // with their keys, keeping their ids; round 2 has all seven.
  b_ = MakeRelay(*root_, "relay-b");
  EXPECT_THAT(b_->FetchTask(devices_[3].id, devices_[3].token),
              StatusIs(absl::StatusCode::kUnauthenticated));
  for (int i = 3; i < 6; ++i) Enroll(*b_, devices_[i]);
  ASSERT_THAT(Sync(*root_, *a_, "relay-a"), IsOk());
  ASSERT_THAT(root_->Tick(), IsOk());  // opens round 2
  ASSERT_THAT(Sync(*root_, *a_, "relay-a"), IsOk());
  ASSERT_THAT(Sync(*root_, *b_, "relay-b"), IsOk());
  for (int i = 0; i < 6; ++i) ASSERT_THAT(Train(i < 3 ? *a_ : *b_, devices_[i]), IsOk());
  ASSERT_THAT(Train(*root_, devices_[6]), IsOk());
  ASSERT_THAT(Deliver(*root_, *a_), IsOk());
  ASSERT_THAT(Deliver(*root_, *b_), IsOk());
  ASSERT_THAT(root_->Tick(), IsOk());
  const v1::RoundRecord r2 = Round(2);
  EXPECT_EQ(r2.state(), v1::ROUND_STATE_COMPLETED);
  EXPECT_EQ(r2.metrics().participants(), 7);
}

TEST_F(RelayRoundTest, ARelayClosesItsPartBeforeTheRootsDeadline) {
  Open(PlainJob(1, 7, 1));
  ASSERT_THAT(Train(*a_, devices_[0]), IsOk());
  // 600 s deadline: the relay closes 5 s before it, with what it has.
  clock_.Advance(absl::Seconds(594));
  Ping(*a_, {1, 2});  // live, with nothing to send yet
  ASSERT_THAT(Sync(*root_, *a_, "relay-a"), IsOk());
  ASSERT_THAT(a_->Tick(), IsOk());
  EXPECT_FALSE(a_->TakePartial().has_value());
  clock_.Advance(absl::Seconds(1));
  ASSERT_THAT(a_->Tick(), IsOk());
  std::optional<Coordinator::Partial> part = a_->TakePartial();
  ASSERT_TRUE(part.has_value());
  ASSERT_THAT(root_->SubmitPartial(part->header, part->aggregate), IsOk());
  // The relay does not open the round it closed again.
  ASSERT_THAT(Sync(*root_, *a_, "relay-a"), IsOk());
  EXPECT_FALSE(a_->FetchTask(devices_[1].id, devices_[1].token)->has_value());
  clock_.Advance(absl::Seconds(5));
  ASSERT_THAT(root_->Tick(), IsOk());
  const v1::RoundRecord r = Round(1);
  EXPECT_EQ(r.state(), v1::ROUND_STATE_COMPLETED);
  EXPECT_EQ(r.metrics().participants(), 1);
  EXPECT_EQ(OutcomeOf(r, devices_[0].id), v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
  EXPECT_EQ(OutcomeOf(r, devices_[1].id), v1::ClientRoundMetrics::OUTCOME_DROPPED);
}

TEST_F(RelayRoundTest, JobsRelaysCannotServeSampleOnlyTheRootsOwnDevices) {
  v1::JobConfig cfg = PlainJob(1, 7, 1);
  cfg.mutable_robustness()->set_aggregation_rule(
      v1::RobustnessConfig::AGGREGATION_RULE_COORDINATE_MEDIAN);
  cfg.mutable_strategy()->set_exact_sums(false);
  Open(cfg);
  v1::RelaySyncRequest request;
  request.set_relay_id("relay-a");
  absl::StatusOr<v1::RelayAssignment> a = root_->RelaySync(request);
  ASSERT_THAT(a, IsOk());
  EXPECT_EQ(a->job_id(), "");  // no job for relays: they fetch nothing
  EXPECT_FALSE(a->has_round());
  EXPECT_FALSE(a_->FetchTask(devices_[0].id, devices_[0].token)->has_value());
  ASSERT_THAT(Train(*root_, devices_[6]), IsOk());
  ASSERT_THAT(root_->Tick(), IsOk());
  const v1::RoundRecord r = Round(1);
  EXPECT_EQ(r.state(), v1::ROUND_STATE_COMPLETED);
  EXPECT_EQ(r.metrics().sampled(), 1);
}

// Secure aggregation in groups: each relay runs the protocol over its 4 devices with the
// job's threshold scaled to the group (8 of 12 → 3 of 4), and hands the root only its
// group's released sum. Relay c's group loses 2 devices before their keys: it is below its
// threshold, fails alone, and the round completes from the other two groups (quorum 8).
// Two variants: SecAgg without noise (the model moves by the survivors' mean, to the
// fixed-point precision), and SecAgg+ with distributed DP noise z = 0.5 (it moves by the
// mean plus the groups' noise: each device adds N(0, (z·S)²/3), so the mean of 8 carries
// std z·S·√(8/3)/8 per coordinate).
struct SecureGroups {
  bool plus = false;
  double noise_multiplier = 0;
};

class RelaySecureGroupsTest : public RelayTest,
                              public ::testing::WithParamInterface<SecureGroups> {};

TEST_P(RelaySecureGroupsTest, RunPerGroupAndTheRootSeesOnlyGroupSums) {
  v1::JobConfig cfg = PlainJob(/*rounds=*/1, /*per_round=*/12, /*quorum=*/8);
  cfg.mutable_privacy()->set_clip_norm(1.0);
  cfg.mutable_privacy()->set_secure_aggregation_threshold(8);
  cfg.mutable_privacy()->set_secure_aggregation_plus(GetParam().plus);
  cfg.mutable_privacy()->set_noise_multiplier(GetParam().noise_multiplier);
  auto root = MakeRoot();
  const std::vector<std::string> ids = {"relay-a", "relay-b", "relay-c"};
  std::vector<std::unique_ptr<Coordinator>> relays;
  for (const std::string& id : ids) relays.push_back(MakeRelay(*root, id));
  std::vector<Device> devices = Devices(12);
  for (size_t i = 0; i < devices.size(); ++i) Enroll(*relays[i / 4], devices[i]);
  absl::StatusOr<std::string> job = root->StartJob(cfg);
  ASSERT_THAT(job, IsOk());
  const v1::ModelProto before = root->ExportModel(*job).value();
  ASSERT_THAT(root->Tick(), IsOk());
  {
    v1::RelaySyncRequest request;
    request.set_relay_id("relay-a");
    absl::StatusOr<v1::RelayAssignment> a = root->RelaySync(request);
    ASSERT_THAT(a, IsOk());
    EXPECT_EQ(a->round().secure_threshold(), 3);
  }
  for (size_t k = 0; k < relays.size(); ++k) ASSERT_THAT(Sync(*root, *relays[k], ids[k]), IsOk());

  // Each device: its task (with the group's session), its update, its keys.
  struct Run {
    size_t device;
    TaskAssignment task;
    std::unique_ptr<client::SecAggDevice> secagg;
    client::LocalUpdate update;
  };
  std::vector<Run> runs;
  auto step = [&](const Run& r, v1::SecAggStepRequest request) {
    const Device& d = devices[r.device];
    request.set_client_id(d.id);
    request.set_session_token(d.token);
    request.set_job_id(r.task.header.job_id());
    request.set_round(r.task.header.round());
    request.set_task_id(r.task.header.task_id());
    return relays[r.device / 4]->SecureAggregationStep(request);
  };
  for (size_t i = 0; i < devices.size(); ++i) {
    if (i >= 10) continue;  // relay c's last two never take part
    Run r;
    r.device = i;
    absl::StatusOr<std::optional<TaskAssignment>> task =
        relays[i / 4]->FetchTask(devices[i].id, devices[i].token);
    ASSERT_THAT(task, IsOk());
    ASSERT_TRUE(task->has_value());
    r.task = **task;
    ASSERT_TRUE(r.task.header.has_secure_aggregation());
    EXPECT_EQ(r.task.header.secure_aggregation().threshold(), 3);
    EXPECT_EQ(r.task.header.secure_aggregation().num_participants(), 4);
    absl::StatusOr<client::LocalTrainingOptions> o = client::OptionsFromTask(r.task.header, 1);
    ASSERT_THAT(o, IsOk());
    absl::StatusOr<client::LocalUpdate> u = client::TrainLocally(*r.task.model, devices[i].data, *o);
    ASSERT_THAT(u, IsOk());
    r.update = *std::move(u);
    absl::StatusOr<std::unique_ptr<client::SecAggDevice>> secagg =
        client::SecAggDevice::Create(r.task.header, r.update, {});
    ASSERT_THAT(secagg, IsOk());
    r.secagg = *std::move(secagg);
    absl::StatusOr<v1::SecAggStepRequest> keys = r.secagg->Start();
    ASSERT_THAT(keys, IsOk());
    ASSERT_THAT(step(r, *keys), IsOk());
    runs.push_back(std::move(r));
  }
  // Groups a and b close their keys phase; then relay c's two silent devices go past the
  // liveness timeout while the others keep polling, and c's keys phase closes with 2 of 4,
  // under its threshold of 3.
  for (auto& relay : relays) ASSERT_THAT(relay->Tick(), IsOk());
  clock_.Advance(absl::Seconds(61));
  bool c_failed = false;
  for (int turn = 0; turn < 10; ++turn) {
    bool all_done = true;
    for (Run& r : runs) {
      if (r.secagg == nullptr || r.secagg->done()) continue;
      all_done = false;
      v1::SecAggStepRequest poll;
      poll.set_poll(r.secagg->phase());
      absl::StatusOr<v1::SecAggStepResponse> result = step(r, poll);
      if (r.device >= 8 && !result.ok()) {
        c_failed = true;  // the group's protocol failed (or its round closed)
        r.secagg.reset();
        continue;
      }
      ASSERT_THAT(result, IsOk()) << "device " << r.device << " phase " << r.secagg->phase();
      if (result->result_case() == v1::SecAggStepResponse::kRetryAfterMs) continue;
      ASSERT_LT(r.device, 8u) << "relay c's group went on below its threshold";
      absl::StatusOr<v1::SecAggStepRequest> message = r.secagg->Continue(*result);
      ASSERT_THAT(message, IsOk());
      ASSERT_THAT(step(r, *message), IsOk()) << "device " << r.device;
    }
    for (auto& relay : relays) ASSERT_THAT(relay->Tick(), IsOk());
    if (all_done) break;
  }
  for (const Run& r : runs) {
    if (r.device < 8) EXPECT_TRUE(r.secagg != nullptr && r.secagg->done()) << r.device;
  }
  // The unmasking ran from Tick; each group's round closed into its part.
  std::vector<Coordinator::Partial> parts;
  for (size_t k = 0; k < 2; ++k) {
    std::optional<Coordinator::Partial> part = relays[k]->TakePartial();
    ASSERT_TRUE(part.has_value()) << ids[k];
    parts.push_back(*std::move(part));
  }
  // What the root receives: per group one released sum of weight 4 (each participant counts
  // once under secure aggregation), never a device's update.
  for (const Coordinator::Partial& part : parts) {
    absl::StatusOr<std::unique_ptr<aggregation::WeightedMean>> sums =
        aggregation::WeightedMean::Deserialize(part.aggregate);
    ASSERT_THAT(sums, IsOk());
    EXPECT_EQ((*sums)->num_updates(), 1) << part.header.relay_id();
    EXPECT_EQ((*sums)->total_weight(), 4.0) << part.header.relay_id();
    for (const v1::ClientRoundMetrics& c : part.header.clients()) {
      EXPECT_EQ(c.outcome(), v1::ClientRoundMetrics::OUTCOME_ACCEPTED) << c.client_id();
    }
    ASSERT_THAT(root->SubmitPartial(part.header, part.aggregate), IsOk());
  }
  // Relay c's group failed: it closes (at once, or at the relay's deadline) with nothing.
  EXPECT_TRUE(c_failed);
  clock_.Advance(absl::Seconds(600 - 61 - 5));
  ASSERT_THAT(relays[2]->Tick(), IsOk());
  std::optional<Coordinator::Partial> failed = relays[2]->TakePartial();
  ASSERT_TRUE(failed.has_value());
  {
    absl::StatusOr<std::unique_ptr<aggregation::WeightedMean>> sums =
        aggregation::WeightedMean::Deserialize(failed->aggregate);
    ASSERT_THAT(sums, IsOk());
    EXPECT_EQ((*sums)->num_updates(), 0);
  }
  ASSERT_THAT(root->SubmitPartial(failed->header, failed->aggregate), IsOk());
  ASSERT_THAT(root->Tick(), IsOk());
  std::vector<v1::RoundRecord> rounds = root->ListRounds(*job).value();
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0].state(), v1::ROUND_STATE_COMPLETED);
  EXPECT_EQ(rounds[0].metrics().participants(), 8);
  for (const v1::ClientRoundMetrics& c : rounds[0].metrics().clients()) {
    const bool in_c = c.client_id() >= devices[8].id;
    EXPECT_EQ(c.outcome(), in_c ? v1::ClientRoundMetrics::OUTCOME_DROPPED
                                : v1::ClientRoundMetrics::OUTCOME_ACCEPTED)
        << c.client_id();
  }
  // The model moved by the mean of the 8 updates: to the fixed-point encoding's precision
  // without noise; with it, by the noise the groups' devices added, no less and no more.
  const v1::ModelProto after = root->ExportModel(*job).value();
  ASSERT_EQ(after.parameters_size(), before.parameters_size());
  double worst = 0, squares = 0;
  int64_t count = 0;
  for (int p = 0; p < after.parameters_size(); ++p) {
    for (int k = 0; k < after.parameters(p).values_size(); ++k) {
      double mean = 0;
      for (const Run& r : runs) {
        if (r.device >= 8) continue;
        mean += r.update.delta.parameters(p).values(k) / 8.0;
      }
      const double moved = after.parameters(p).values(k) - before.parameters(p).values(k);
      worst = std::max(worst, std::abs(moved - mean));
      squares += (moved - mean) * (moved - mean);
      ++count;
    }
  }
  const double z = GetParam().noise_multiplier;
  if (z == 0) {
    EXPECT_LT(worst, 1e-4);
  } else {
    const double sigma = z * 1.0 * std::sqrt(8.0 / 3.0) / 8.0;
    const double rms = std::sqrt(squares / static_cast<double>(count));
    EXPECT_GT(rms, 0.7 * sigma) << count << " coordinates";
    EXPECT_LT(rms, 1.3 * sigma) << count << " coordinates";
    EXPECT_LT(worst, 6 * sigma);
  }
}

INSTANTIATE_TEST_SUITE_P(SecAggAndPlus, RelaySecureGroupsTest,
                         ::testing::Values(SecureGroups{false, 0}, SecureGroups{true, 0.5}),
                         [](const ::testing::TestParamInfo<SecureGroups>& info) {
                           return info.param.plus ? std::string("SecAggPlusWithNoise")
                                                  : std::string("SecAgg");
                         });

// A root restarted on its store knows which relay serves each device before that relay's
// first report: its first round plans them as the relay's, and a device that fetched from
// the root itself since is the root's from then on, across another restart.
TEST_F(RelayTest, ARestartedRootKnowsWhichRelayServesEachDevice) {
  ::fedge::testing::ScopedTempDir dir;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir.path());
  ASSERT_THAT(store, IsOk());
  std::vector<Device> devices = Devices(3);
  std::string job;
  {
    CoordinatorOptions o = Options();
    auto root = Coordinator::Create(o, store->get());
    ASSERT_THAT(root, IsOk());
    auto relay = MakeRelay(**root, "relay-a");
    Enroll(*relay, devices[0]);
    Enroll(*relay, devices[1]);
    Enroll(**root, devices[2]);
    job = (*root)->StartJob(PlainJob(2, 3, 3)).value();
  }
  auto restarted = Coordinator::Create(Options(), store->get());
  ASSERT_THAT(restarted, IsOk());
  Coordinator& root = **restarted;
  ASSERT_THAT(root.Tick(), IsOk());  // opens round 1 with the restored devices
  v1::RelaySyncRequest request;
  request.set_relay_id("relay-a");
  absl::StatusOr<v1::RelayAssignment> a = root.RelaySync(request);
  ASSERT_THAT(a, IsOk());
  ASSERT_EQ(a->round().clients_size(), 2);
  EXPECT_EQ(a->round().clients(0).client_id(), devices[0].id);
  EXPECT_EQ(a->round().clients(1).client_id(), devices[1].id);
  absl::StatusOr<std::optional<TaskAssignment>> own = root.FetchTask(devices[2].id, devices[2].token);
  ASSERT_THAT(own, IsOk());
  EXPECT_TRUE(own->has_value());
  // Device 0 calls the root itself: it is the root's, in the store too.
  ASSERT_THAT(root.FetchTask(devices[0].id, devices[0].token), IsOk());
  EXPECT_EQ((*store)->GetClient(devices[0].id)->relay(), "");
  EXPECT_EQ((*store)->GetClient(devices[1].id)->relay(), "relay-a");
}

TEST_F(RelayTest, BadRelayIdsAndRelaysWithoutARootAreRefused) {
  auto root = MakeRoot();
  v1::RelaySyncRequest request;
  request.set_relay_id("a b");
  EXPECT_THAT(root->RelaySync(request), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr("[A-Za-z0-9_.-]")));
  request.set_relay_id(std::string(65, 'r'));
  EXPECT_THAT(root->RelaySync(request), StatusIs(absl::StatusCode::kInvalidArgument));
  request.set_relay_id("r");
  for (int i = 0; i <= kMaxRelaySyncClients; ++i) request.add_live_clients("x");
  EXPECT_THAT(root->RelaySync(request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most")));
  CoordinatorOptions o = Options();
  o.relay_id = "relay-a";
  EXPECT_THAT(Coordinator::Create(o, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("upstream")));
  // Follow only on a relay.
  EXPECT_THAT(root->Follow(v1::RelayAssignment(), nullptr),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace fedge::server

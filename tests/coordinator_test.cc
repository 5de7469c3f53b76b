#include "server/coordinator.h"
#include "server/job_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "absl/synchronization/mutex.h"
#include "client/local_trainer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/sequential.h"
#include "model/trainer.h"
#include "model/zoo.h"
#include "server/metrics_exporter.h"
#include "server/model_weights.h"
#include "server/store.h"
#include "tests/model_compare.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"
#include "tests/update_header.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kToken[] = "enroll-me";

// The tests' separable synthetic problem (tests/synthetic_data.h).
data::Dataset MakeData(int n, uint64_t seed) {
  return ::fedge::testing::SeparableData(n, 8, 3, seed);
}

v1::JobConfig MakeJob(int rounds, int per_round, int quorum, double deadline_s) {
  v1::JobConfig job;
  job.set_name("test");
  *job.mutable_model_spec() = model::MlpSpec({8, 16, 3}, "tiny");
  job.set_rounds(rounds);
  job.mutable_selection()->set_clients_per_round(per_round);
  job.mutable_round_policy()->set_quorum(quorum);
  job.mutable_round_policy()->set_deadline_seconds(deadline_s);
  job.mutable_local_training()->set_epochs(2);
  job.mutable_local_training()->set_batch_size(16);
  job.mutable_local_training()->set_learning_rate(0.1);
  return job;
}

struct Device {
  std::string id, token;
  data::Dataset data;
};

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override { eval_ = std::make_shared<const data::Dataset>(MakeData(600, 99)); }

  std::unique_ptr<Coordinator> Make(Store* store = nullptr, int aggregation_batch = 8,
                                    int aggregation_threads = 1) {
    CoordinatorOptions o;
    o.aggregation_batch = aggregation_batch;
    o.aggregation_threads = aggregation_threads;
    o.clock = &clock_;
    o.enrollment_token = kToken;
    o.evaluation_data = eval_;
    o.on_job_model = [this](int64_t bytes) { job_model_bytes_.push_back(bytes); };
    auto c = Coordinator::Create(o, store);
    EXPECT_THAT(c, IsOk());
    return std::move(c).value();
  }
  std::vector<int64_t> job_model_bytes_;  // what on_job_model was called with

  std::vector<Device> Enroll(Coordinator& c, int n) {
    std::vector<Device> devices;
    for (int i = 0; i < n; ++i) {
      v1::RegisterRequest r;
      r.set_enrollment_token(kToken);
      r.mutable_profile()->set_num_examples(100);
      auto resp = c.Register(r);
      EXPECT_THAT(resp, IsOk());
      devices.push_back({resp->client_id(), resp->session_token(), MakeData(100, 1000 + i)});
    }
    return devices;
  }

  // The device's side of a round: fetch, train, upload. Returns the upload's status, or
  // NotFound when it had no task.
  absl::Status Work(Coordinator& c, const Device& d) {
    auto task = c.FetchTask(d.id, d.token);
    if (!task.ok()) return task.status();
    if (!task->has_value()) return absl::NotFoundError("no task");
    const TaskAssignment& t = **task;
    client::LocalTrainingOptions o;
    o.epochs = t.header.training().epochs();
    o.batch_size = t.header.training().batch_size();
    o.learning_rate = static_cast<float>(t.header.training().learning_rate());
    o.momentum = 0;
    auto update = client::TrainLocally(*t.model, d.data, o);
    if (!update.ok()) return update.status();
    v1::UpdateHeader h;
    h.set_client_id(d.id);
    h.set_session_token(d.token);
    h.set_job_id(t.header.job_id());
    h.set_round(t.header.round());
    h.set_task_id(t.header.task_id());
    h.set_num_examples(update->num_examples);
    h.mutable_metrics()->set_train_loss(update->train_loss);
    return c.SubmitUpdate(h, UpdateFromDeltaProto(d.id, update->num_examples, update->delta),
                          static_cast<int64_t>(update->delta.ByteSizeLong()));
  }

  double Accuracy(const v1::ModelProto& m) {
    auto net = std::move(model::Sequential::FromProto(m)).value();
    return model::Evaluate(*net, *eval_, model::ComputeMode::kFp32).accuracy;
  }

  base::ManualClock clock_;
  std::shared_ptr<const data::Dataset> eval_;
};

TEST_F(CoordinatorTest, FedAvgRunsEveryRoundAndLearns) {
  auto c = Make();
  std::vector<Device> devices = Enroll(*c, 6);
  auto job = c->StartJob(MakeJob(/*rounds=*/5, /*per_round=*/3, /*quorum=*/3, 600));
  ASSERT_THAT(job, IsOk());
  // The job's model size went to on_job_model (fedge-coordinator sizes its heap policy).
  const absl::StatusOr<v1::ModelProto> initial = c->ExportModel(*job);
  ASSERT_THAT(initial, IsOk());
  int64_t params = 0;
  for (const v1::TensorProto& p : initial->parameters()) params += p.values_size();
  EXPECT_EQ(job_model_bytes_, std::vector<int64_t>{4 * params});
  const double before = Accuracy(*c->ExportModel(*job));
  for (int step = 0; step < 50 && c->running_job().has_value(); ++step) {
    ASSERT_THAT(c->Tick(), IsOk());
    for (const Device& d : devices) {
      absl::Status s = Work(*c, d);
      ASSERT_TRUE(s.ok() || absl::IsNotFound(s)) << s;
    }
    ASSERT_THAT(c->Tick(), IsOk());
  }
  EXPECT_FALSE(c->running_job().has_value());
  auto status = c->GetJob(*job);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->state(), v1::JOB_STATE_FINISHED);
  EXPECT_EQ(status->completed_rounds(), 5);
  auto rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 5u);
  for (int r = 0; r < 5; ++r) {
    const v1::RoundMetrics& m = (*rounds)[r].metrics();
    EXPECT_EQ(m.round(), r + 1);
    EXPECT_EQ(m.sampled(), 3);
    EXPECT_EQ(m.participants(), 3);
    EXPECT_EQ(m.examples(), 300);
    EXPECT_TRUE(m.evaluated());
    EXPECT_GT(m.bytes_up(), 0);
    EXPECT_GT(m.bytes_down(), 0);
  }
  EXPECT_LT(before, 0.6);
  EXPECT_GT((*rounds)[4].metrics().test_accuracy(), 0.85);
  EXPECT_NEAR(Accuracy(*c->ExportModel(*job)), (*rounds)[4].metrics().test_accuracy(), 1e-9);
}

// Updates held and accumulated in batches (3 + 3 + 1 of 7, two threads) give the model bits
// that accumulating each on arrival gives; an update whose size could overflow the round's
// float sum is refused on arrival, and the round completes without it.
TEST_F(CoordinatorTest, BatchedAccumulationMatchesOneByOneAndRefusesOverflow) {
  v1::ModelProto models[2];
  for (int variant = 0; variant < 2; ++variant) {
    auto c = variant == 0 ? Make(nullptr, /*aggregation_batch=*/1)
                          : Make(nullptr, /*aggregation_batch=*/3, /*aggregation_threads=*/2);
    std::vector<Device> devices = Enroll(*c, 7);
    auto job = c->StartJob(MakeJob(/*rounds=*/2, /*per_round=*/7, /*quorum=*/7, 600));
    ASSERT_THAT(job, IsOk());
    for (int step = 0; step < 20 && c->running_job().has_value(); ++step) {
      ASSERT_THAT(c->Tick(), IsOk());
      for (const Device& d : devices) {
        absl::Status s = Work(*c, d);
        ASSERT_TRUE(s.ok() || absl::IsNotFound(s)) << s;
      }
      ASSERT_THAT(c->Tick(), IsOk());
    }
    auto status = c->GetJob(*job);
    ASSERT_THAT(status, IsOk());
    ASSERT_EQ(status->completed_rounds(), 2);
    auto model = c->ExportModel(*job);
    ASSERT_THAT(model, IsOk());
    models[variant] = *std::move(model);
  }
  ::fedge::testing::ExpectSameParameters(models[0], models[1]);  // batching changes no bit

  auto c = Make(nullptr, /*aggregation_batch=*/4);
  std::vector<Device> d = Enroll(*c, 3);
  auto job = c->StartJob(MakeJob(1, 3, 2, 600));
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto task = c->FetchTask(d[0].id, d[0].token);
  ASSERT_THAT(task, IsOk());
  ASSERT_TRUE(task->has_value());
  const v1::UpdateHeader h =
      ::fedge::testing::UpdateHeaderFor(d[0].id, d[0].token, (*task)->header, 100);
  aggregation::Update huge = UpdateFromDeltaProto(d[0].id, 100, *(*task)->model);
  for (auto& t : huge.tensors) std::fill(t.values.begin(), t.values.end(), 1e37f);
  EXPECT_THAT(c->SubmitUpdate(h, huge, 10),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overflow")));
  for (int i = 1; i < 3; ++i) ASSERT_THAT(Work(*c, d[i]), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 1u);
  EXPECT_EQ((*rounds)[0].metrics().participants(), 2);
  EXPECT_EQ((*rounds)[0].metrics().rejected(), 1);
  EXPECT_TRUE((*rounds)[0].metrics().evaluated());
}

// strategy.exact_sums: the same updates arriving in the opposite order give the same
// model to the bit; float sums give another in the last bits (so the check can fail).
TEST_F(CoordinatorTest, ExactSumsMakeTheModelIndependentOfArrivalOrder) {
  auto run = [&](bool exact, bool reversed) {
    auto c = Make();
    std::vector<Device> devices = Enroll(*c, 7);
    if (reversed) std::reverse(devices.begin(), devices.end());
    v1::JobConfig config = MakeJob(/*rounds=*/2, /*per_round=*/7, /*quorum=*/7, 600);
    config.mutable_strategy()->set_exact_sums(exact);
    auto job = c->StartJob(config);
    EXPECT_THAT(job, IsOk());
    for (int step = 0; step < 20 && c->running_job().has_value(); ++step) {
      EXPECT_THAT(c->Tick(), IsOk());
      for (const Device& d : devices) {
        absl::Status s = Work(*c, d);
        EXPECT_TRUE(s.ok() || absl::IsNotFound(s)) << s;
      }
      EXPECT_THAT(c->Tick(), IsOk());
    }
    EXPECT_EQ(c->GetJob(*job)->completed_rounds(), 2);
    return c->ExportModel(*job).value();
  };
  ::fedge::testing::ExpectSameParameters(run(true, false), run(true, true));
  const v1::ModelProto forward = run(false, false), backward = run(false, true);
  bool differs = false;
  for (int t = 0; t < forward.parameters_size(); ++t) {
    for (int i = 0; i < forward.parameters(t).values_size(); ++i) {
      differs |= forward.parameters(t).values(i) != backward.parameters(t).values(i);
    }
  }
  EXPECT_TRUE(differs) << "float sums in another order gave the same bits: the check proves nothing";
}

// The Prometheus exporter over real rounds: the running job's latest round, the finished
// job still shown as the most recent one, and the rounds counter across two jobs.
TEST_F(CoordinatorTest, MetricsExporterFollowsRoundsAndJobs) {
  auto c = Make();
  std::vector<Device> devices = Enroll(*c, 3);
  MetricsExporter exporter(c.get());
  auto run = [&](const std::string& job) {
    for (int step = 0; step < 50 && c->running_job().has_value(); ++step) {
      ASSERT_THAT(c->Tick(), IsOk());
      for (const Device& d : devices) {
        absl::Status s = Work(*c, d);
        ASSERT_TRUE(s.ok() || absl::IsNotFound(s)) << s;
      }
      ASSERT_THAT(c->Tick(), IsOk());
      if (step == 0) {
        const std::string text = exporter.Render();
        EXPECT_THAT(text, HasSubstr("\nfedge_job_running 1\n"));
        EXPECT_THAT(text, HasSubstr("fedge_clients{state=\"active\"} 3\n"));
        EXPECT_THAT(text, HasSubstr(absl::StrCat("fedge_job_completed_rounds{job=\"", job, "\"} 1\n")));
        EXPECT_THAT(text, HasSubstr(absl::StrCat("fedge_round_participants{job=\"", job,
                                                 "\",round=\"1\"} 3\n")));
      }
    }
  };
  auto first = c->StartJob(MakeJob(/*rounds=*/2, 3, 3, 600));
  ASSERT_THAT(first, IsOk());
  run(*first);
  std::string text = exporter.Render();
  EXPECT_THAT(text, HasSubstr("\nfedge_job_running 0\n"));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("fedge_job_completed_rounds{job=\"", *first, "\"} 2\n")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("fedge_round_participants{job=\"", *first,
                                           "\",round=\"2\"} 3\n")));
  EXPECT_THAT(text, HasSubstr("\nfedge_rounds_completed_total 2\n"));
  auto second = c->StartJob(MakeJob(/*rounds=*/3, 3, 3, 600));
  ASSERT_THAT(second, IsOk());
  run(*second);
  text = exporter.Render();
  EXPECT_THAT(text, HasSubstr(absl::StrCat("fedge_job_completed_rounds{job=\"", *second, "\"} 3\n")));
  EXPECT_THAT(text, HasSubstr("\nfedge_rounds_completed_total 5\n"));
}

TEST_F(CoordinatorTest, BadInputDropsTheClientNotTheRound) {
  auto c = Make();
  std::vector<Device> d = Enroll(*c, 4);
  auto job = c->StartJob(MakeJob(1, 4, 2, 600));
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());

  // Wrong enrollment and session tokens.
  v1::RegisterRequest bad;
  bad.set_enrollment_token("guess");
  EXPECT_THAT(c->Register(bad), StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("enrollment")));
  EXPECT_THAT(c->FetchTask(d[0].id, "wrong"), StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("token")));

  auto task = c->FetchTask(d[0].id, d[0].token);
  ASSERT_THAT(task, IsOk());
  ASSERT_TRUE(task->has_value());
  const v1::TaskHeader header = (*task)->header;
  auto make_header = [&](const Device& dev) {
    v1::UpdateHeader h;
    h.set_client_id(dev.id);
    h.set_session_token(dev.token);
    h.set_job_id(header.job_id());
    h.set_round(header.round());
    h.set_task_id(absl::StrCat(header.job_id(), "/", header.round(), "/0/", dev.id));
    h.set_num_examples(100);
    return h;
  };
  aggregation::Update good = UpdateFromDeltaProto(d[0].id, 100, *(*task)->model);
  for (auto& t : good.tensors) std::fill(t.values.begin(), t.values.end(), 0.0f);

  // Another round.
  v1::UpdateHeader h = make_header(d[0]);
  h.set_round(7);
  EXPECT_THAT(c->SubmitUpdate(h, good, 10), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("round 7")));
  // Wrong shapes: client 1 is dropped from the round.
  aggregation::Update misshapen = good;
  misshapen.client_id = d[1].id;
  misshapen.tensors[0].shape = {3, 3};
  misshapen.tensors[0].values.resize(9);
  EXPECT_THAT(c->SubmitUpdate(make_header(d[1]), misshapen, 10),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(misshapen.tensors[0].name)));
  EXPECT_THAT(c->SubmitUpdate(make_header(d[1]), good, 10),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not (or no longer)")));
  // NaN: client 2 is dropped.
  aggregation::Update nan = good;
  nan.tensors[1].values[0] = NAN;
  EXPECT_THAT(c->SubmitUpdate(make_header(d[2]), nan, 10), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  // A weight that disagrees with the header, or an absurd example count.
  v1::UpdateHeader lying = make_header(d[3]);
  lying.set_num_examples(-5);
  EXPECT_THAT(c->SubmitUpdate(lying, good, 10), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("examples")));
  // Client 0's good update, then a second one.
  EXPECT_THAT(c->SubmitUpdate(make_header(d[0]), good, 10), IsOk());
  EXPECT_THAT(c->SubmitUpdate(make_header(d[0]), good, 10), StatusIs(absl::StatusCode::kAlreadyExists, ::testing::_));
  // Three clients were dropped and one accepted: every sampled client has answered, below
  // quorum 2, so the round fails, and the next Tick retries it with a new sample.
  ASSERT_THAT(c->Tick(), IsOk());
  auto status = c->GetJob(*job);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->completed_rounds(), 0);
  EXPECT_EQ(status->current_round(), 0);
  ASSERT_THAT(c->Tick(), IsOk());
  status = c->GetJob(*job);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->current_round(), 1);
  // The coordinator is unharmed: the retried round completes.
  for (const Device& dev : d) {
    absl::Status s = Work(*c, dev);
    ASSERT_TRUE(s.ok() || absl::IsNotFound(s)) << s;
  }
  ASSERT_THAT(c->Tick(), IsOk());
  EXPECT_FALSE(c->running_job().has_value());
}

// What a hostile device may claim is bounded by what the coordinator knows: no more
// examples (its weight in the mean) than it registered, finite figures, and the update's
// norm as measured, whatever the device reports.
TEST_F(CoordinatorTest, HostileClaimsAreRefusedAndNormsAreMeasured) {
  auto c = Make();
  std::vector<Device> d = Enroll(*c, 3);  // 100 examples each
  auto job = c->StartJob(MakeJob(1, 3, 1, 600));
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto header_for = [&](const Device& dev, const TaskAssignment& t, int64_t n) {
    v1::UpdateHeader h;
    h.set_client_id(dev.id);
    h.set_session_token(dev.token);
    h.set_job_id(t.header.job_id());
    h.set_round(t.header.round());
    h.set_task_id(t.header.task_id());
    h.set_num_examples(n);
    return h;
  };
  auto filled = [](const Device& dev, const TaskAssignment& t, int64_t n, float v) {
    aggregation::Update u = UpdateFromDeltaProto(dev.id, n, *t.model);
    for (auto& x : u.tensors) std::fill(x.values.begin(), x.values.end(), v);
    return u;
  };
  std::vector<TaskAssignment> tasks;
  for (const Device& dev : d) {
    auto t = c->FetchTask(dev.id, dev.token);
    ASSERT_THAT(t, IsOk());
    ASSERT_TRUE(t->has_value());
    tasks.push_back(**t);
  }
  // More examples than it registered: refused (it would outweigh everyone).
  EXPECT_THAT(c->SubmitUpdate(header_for(d[0], tasks[0], 1 << 30),
                              filled(d[0], tasks[0], 1 << 30, 0.0f), 10),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("registered 100")));
  // A non-finite loss: refused.
  v1::UpdateHeader nan_loss = header_for(d[1], tasks[1], 100);
  nan_loss.mutable_metrics()->set_train_loss(NAN);
  EXPECT_THAT(c->SubmitUpdate(nan_loss, filled(d[1], tasks[1], 100, 0.0f), 10),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));
  // A reported norm of 0 for an update of norm 1: the round records the measured norm.
  v1::UpdateHeader lies = header_for(d[2], tasks[2], 100);
  lies.mutable_metrics()->set_update_norm(0);
  aggregation::Update u = filled(d[2], tasks[2], 100, 0.0f);
  u.tensors[0].values[0] = 0.6f;
  u.tensors[0].values[1] = 0.8f;
  ASSERT_THAT(c->SubmitUpdate(lies, u, 10), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 1u);
  bool found = false;
  for (const v1::ClientRoundMetrics& m : rounds->back().metrics().clients()) {
    if (m.client_id() != d[2].id) continue;
    found = true;
    EXPECT_NEAR(m.update_norm(), 1.0, 1e-6);
  }
  EXPECT_TRUE(found);
}

// A round that cannot reach its quorum fails max_failed_attempts times in a row, then the
// job ends as FAILED with the reason, instead of retrying forever.
TEST_F(CoordinatorTest, ARoundFailingTooOftenEndsTheJobWithItsReason) {
  auto c = Make();
  std::vector<Device> d = Enroll(*c, 2);
  v1::JobConfig config = MakeJob(2, 2, 2, 10);
  config.mutable_round_policy()->set_max_failed_attempts(3);
  auto job = c->StartJob(config);
  ASSERT_THAT(job, IsOk());
  for (int attempt = 1; attempt <= 3; ++attempt) {
    ASSERT_THAT(c->Tick(), IsOk());  // opens the attempt
    ASSERT_TRUE(c->GetJob(*job)->current_round() == 1) << attempt;
    ASSERT_THAT(Work(*c, d[0]), IsOk());  // only one of the two answers
    clock_.Advance(absl::Seconds(11));
    ASSERT_THAT(c->Tick(), IsOk());  // the deadline: closes it below the quorum of 2
  }
  auto status = c->GetJob(*job);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(status->message(), AllOf(HasSubstr("3 attempts in a row"), HasSubstr("quorum 2")));
  EXPECT_FALSE(c->running_job().has_value());
  // The default is 5; 0 means retry forever.
  v1::JobConfig defaults = MakeJob(1, 2, 2, 10);
  auto validated = ValidateJobConfig(defaults);
  ASSERT_THAT(validated, IsOk());
  EXPECT_EQ(validated->round_policy().max_failed_attempts(), 5);
}

TEST_F(CoordinatorTest, DeadlineClosesTheRoundWithWhatItHas) {
  auto c = Make();
  std::vector<Device> d = Enroll(*c, 4);
  auto job = c->StartJob(MakeJob(1, 4, 2, 30));
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  ASSERT_THAT(Work(*c, d[0]), IsOk());
  ASSERT_THAT(Work(*c, d[1]), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  EXPECT_TRUE(c->running_job().has_value());  // two clients still training
  clock_.Advance(absl::Seconds(31));
  // The slow two are still live, but the deadline passed.
  ASSERT_THAT(c->Tick(), IsOk());
  EXPECT_FALSE(c->running_job().has_value());
  auto rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 1u);
  EXPECT_EQ((*rounds)[0].metrics().participants(), 2);
  EXPECT_EQ((*rounds)[0].metrics().dropped(), 2);
  // A late update is refused.
  EXPECT_FALSE(Work(*c, d[2]).ok());
}

TEST_F(CoordinatorTest, SilentClientsAreNotSampled) {
  auto c = Make();
  std::vector<Device> d = Enroll(*c, 4);
  clock_.Advance(absl::Seconds(61));  // all four go silent...
  ASSERT_THAT(c->FetchTask(d[0].id, d[0].token), IsOk());  // ...but two come back
  ASSERT_THAT(c->FetchTask(d[1].id, d[1].token), IsOk());
  auto job = c->StartJob(MakeJob(1, 4, 2, 600));
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto status = c->GetJob(*job);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->current_round(), 1);
  EXPECT_THAT(Work(*c, d[2]), StatusIs(absl::StatusCode::kNotFound, ::testing::_));  // not sampled
  EXPECT_THAT(Work(*c, d[0]), IsOk());
  EXPECT_THAT(Work(*c, d[1]), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  EXPECT_FALSE(c->running_job().has_value());
}

TEST_F(CoordinatorTest, RestartResumesFromTheLastCompletedRound) {
  const std::string dir = ::testing::TempDir() + "/coordinator_restart";
  std::filesystem::remove_all(dir);
  std::string job_id;
  std::vector<Device> devices;
  {
    auto store = Store::Open(dir);
    ASSERT_THAT(store, IsOk());
    auto c = Make(store->get());
    devices = Enroll(*c, 3);
    auto job = c->StartJob(MakeJob(4, 3, 3, 600));
    ASSERT_THAT(job, IsOk());
    job_id = *job;
    for (int r = 0; r < 2; ++r) {
      ASSERT_THAT(c->Tick(), IsOk());
      for (const Device& d : devices) ASSERT_THAT(Work(*c, d), IsOk());
      ASSERT_THAT(c->Tick(), IsOk());
    }
    ASSERT_THAT(c->Tick(), IsOk());  // round 3 opens...
    ASSERT_THAT(Work(*c, devices[0]), IsOk());  // ...and gets one update before the "crash"
  }
  auto store = Store::Open(dir);
  ASSERT_THAT(store, IsOk());
  auto c = Make(store->get());
  ASSERT_EQ(c->running_job(), job_id);
  auto status = c->GetJob(job_id);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->completed_rounds(), 2);
  for (int step = 0; step < 20 && c->running_job().has_value(); ++step) {
    ASSERT_THAT(c->Tick(), IsOk());
    for (const Device& d : devices) {
      absl::Status s = Work(*c, d);  // sessions survive the restart
      ASSERT_TRUE(s.ok() || absl::IsNotFound(s)) << s;
    }
  }
  EXPECT_FALSE(c->running_job().has_value());
  auto rounds = c->ListRounds(job_id);
  ASSERT_THAT(rounds, IsOk());
  std::vector<int64_t> completed;
  for (const auto& r : *rounds) {
    if (r.state() == v1::ROUND_STATE_COMPLETED) completed.push_back(r.round());
  }
  EXPECT_EQ(completed, (std::vector<int64_t>{1, 2, 3, 4}));
}

// FedAdam's moments are checkpointed with the model: a coordinator restarted after round 2
// ends with exactly the model of an uninterrupted run (it would differ if the moments
// restarted from zero).
TEST_F(CoordinatorTest, RestartRestoresTheServerOptimizerState) {
  v1::JobConfig cfg = MakeJob(4, 3, 3, 600);
  cfg.mutable_strategy()->mutable_fed_adam();
  cfg.mutable_strategy()->set_server_learning_rate(0.05);
  auto run = [&](const std::string& dir, bool crash) -> v1::ModelProto {
    std::filesystem::remove_all(dir);
    std::string job_id;
    std::vector<Device> devices;
    {
      auto store = Store::Open(dir);
      EXPECT_THAT(store, IsOk());
      auto c = Make(store->get());
      devices = Enroll(*c, 3);
      auto job = c->StartJob(cfg);
      EXPECT_THAT(job, IsOk());
      job_id = *job;
      for (int r = 0; r < (crash ? 2 : 4); ++r) {
        EXPECT_THAT(c->Tick(), IsOk());
        for (const Device& d : devices) EXPECT_THAT(Work(*c, d), IsOk());
        EXPECT_THAT(c->Tick(), IsOk());
      }
      if (!crash) return *c->ExportModel(job_id);
    }
    auto store = Store::Open(dir);
    EXPECT_THAT(store, IsOk());
    auto c = Make(store->get());
    for (int r = 0; r < 2; ++r) {
      EXPECT_THAT(c->Tick(), IsOk());
      for (const Device& d : devices) EXPECT_THAT(Work(*c, d), IsOk());
      EXPECT_THAT(c->Tick(), IsOk());
    }
    EXPECT_FALSE(c->running_job().has_value());
    return *c->ExportModel(job_id);
  };
  const v1::ModelProto straight = run(::testing::TempDir() + "/fedadam_straight", false);
  const v1::ModelProto restarted = run(::testing::TempDir() + "/fedadam_restarted", true);
  ::fedge::testing::ExpectSameParameters(straight, restarted);
}

// A device that declines its task (e.g. over its memory budget) leaves the round at once,
// its reason is kept in the round's metrics and the registry, and it is not sampled again in
// that job until it registers again.
TEST_F(CoordinatorTest, DeclinedTasksAreRecordedAndNotOfferedAgain) {
  auto c = Make();
  std::vector<Device> devices = Enroll(*c, 2);
  auto job = c->StartJob(MakeJob(/*rounds=*/2, /*per_round=*/2, /*quorum=*/1, 600));
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto task = c->FetchTask(devices[0].id, devices[0].token);
  ASSERT_THAT(task, IsOk());
  ASSERT_TRUE(task->has_value());
  v1::UpdateHeader h = ::fedge::testing::UpdateHeaderFor(devices[0].id, devices[0].token,
                                                         (*task)->header, 0);
  EXPECT_THAT(c->DeclineTask(h), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("reason")));
  h.set_refusal(std::string(300, 'x'));  // over 256 bytes: refused, the task still stands
  EXPECT_THAT(c->DeclineTask(h), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("300")));
  h.set_refusal("MemoryBudget: the task needs about 13 kB, over the device's budget of 4 kB");
  ASSERT_THAT(c->DeclineTask(h), IsOk());
  EXPECT_THAT(c->DeclineTask(h), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not (or no longer) part")));
  ASSERT_THAT(Work(*c, devices[1]), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());  // everyone answered: the round closes with one update
  ASSERT_THAT(c->Tick(), IsOk());  // round 2 opens without the device that declined
  EXPECT_THAT(Work(*c, devices[0]), StatusIs(absl::StatusCode::kNotFound, HasSubstr("no task")));
  ASSERT_THAT(Work(*c, devices[1]), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 2u);
  const v1::RoundMetrics& m1 = (*rounds)[0].metrics();
  ASSERT_EQ(m1.clients_size(), 2);
  bool seen = false;
  for (const v1::ClientRoundMetrics& cm : m1.clients()) {
    if (cm.client_id() != devices[0].id) continue;
    seen = true;
    EXPECT_EQ(cm.outcome(), v1::ClientRoundMetrics::OUTCOME_DECLINED);
    EXPECT_THAT(cm.reason(), HasSubstr("budget of 4 kB"));
  }
  EXPECT_TRUE(seen);
  EXPECT_EQ((*rounds)[1].metrics().sampled(), 1);
  auto clients = c->ListClients();
  ASSERT_THAT(clients, IsOk());
  for (const v1::ClientRecord& r : *clients) {
    EXPECT_EQ(r.declined_reason().empty(), r.client_id() != devices[0].id);
  }
}

TEST_F(CoordinatorTest, RejectsASecondJobAndInvalidConfigs) {
  auto c = Make();
  v1::JobConfig bad = MakeJob(0, 3, 3, 600);
  EXPECT_THAT(c->StartJob(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rounds")));
  ASSERT_THAT(c->StartJob(MakeJob(1, 3, 3, 600)), IsOk());
  EXPECT_THAT(c->StartJob(MakeJob(1, 3, 3, 600)), StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
}

// Impossible aggregation options (fedge-coordinator --aggregation-batch 0 and the like) are
// refused when the coordinator is created, naming the option.
TEST_F(CoordinatorTest, RejectsImpossibleAggregationOptions) {
  for (int variant = 0; variant < 3; ++variant) {
    CoordinatorOptions o;
    o.enrollment_token = kToken;
    o.evaluation_data = eval_;
    if (variant == 0) o.aggregation_batch = 0;
    if (variant == 1) o.aggregation_batch_bytes = -1;
    if (variant == 2) o.aggregation_threads = 0;
    EXPECT_THAT(Coordinator::Create(o, nullptr),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("aggregation_")))
        << "variant " << variant;
  }
}

// A long-poll wakes when a round opens: AwaitTask, waiting before the job even starts,
// returns the task of the round opened meanwhile; it returns nothing once stopped or when
// its wait passes.
TEST_F(CoordinatorTest, AwaitTaskWakesWhenARoundOpens) {
  auto c = Make();
  std::vector<Device> devices = Enroll(*c, 2);
  absl::StatusOr<std::optional<TaskAssignment>> awaited = absl::UnknownError("not run");
  std::atomic<bool> waiting{false};
  std::thread poll([&] {
    waiting = true;
    awaited = c->AwaitTask(devices[0].id, devices[0].token, absl::Seconds(60), nullptr);
  });
  while (!waiting) absl::SleepFor(absl::Milliseconds(1));
  auto job = c->StartJob(MakeJob(1, 2, 2, 600));
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());  // opens round 1
  poll.join();
  ASSERT_THAT(awaited.status(), IsOk());
  ASSERT_TRUE(awaited->has_value());
  EXPECT_EQ((*awaited)->header.round(), 1);
  // Nothing more for device 0 once it answered: a stop or the end of the wait says so.
  ASSERT_THAT(Work(*c, devices[0]), IsOk());
  auto stopped = c->AwaitTask(devices[0].id, devices[0].token, absl::Seconds(60),
                              [] { return true; });
  ASSERT_THAT(stopped.status(), IsOk());
  EXPECT_FALSE(stopped->has_value());
  auto timed_out = c->AwaitTask(devices[0].id, devices[0].token, absl::ZeroDuration(), nullptr);
  ASSERT_THAT(timed_out.status(), IsOk());
  EXPECT_FALSE(timed_out->has_value());
  EXPECT_THAT(c->AwaitTask(devices[0].id, "wrong", absl::Seconds(1), nullptr).status(),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

// The closed round is aggregated, evaluated and committed without the coordinator's lock:
// from inside the round's store commit, another thread's calls that need the coordinator
// but not the store (ExportModel, ListClients, running_job) are answered, and they see the
// previous model. (Calls that read the store wait for the commit's transaction.)
TEST_F(CoordinatorTest, CallsAreAnsweredWhileARoundIsCompleted) {
  const std::string dir = ::testing::TempDir() + "/coordinator_unlocked_commit";
  std::filesystem::remove_all(dir);
  Coordinator* coordinator = nullptr;
  std::string job_id;
  std::vector<Device> devices;
  int checked = 0;
  v1::ModelProto initial;
  absl::Status inside = absl::OkStatus();
  StoreOptions so;
  so.fault_hook_for_testing = [&](absl::string_view at) -> absl::Status {
    if (at != "after_round" || coordinator == nullptr) return absl::OkStatus();
    absl::Mutex mu;
    bool answered = false;
    std::thread other([&] {
      absl::Status s = [&]() -> absl::Status {
        FEDGE_ASSIGN_OR_RETURN(v1::ModelProto model, coordinator->ExportModel(job_id));
        if (model.SerializeAsString() != initial.SerializeAsString()) {
          return absl::InternalError("ExportModel gave a model before the round committed");
        }
        FEDGE_ASSIGN_OR_RETURN(auto clients, coordinator->ListClients());
        if (clients.size() != devices.size()) return absl::InternalError("client list");
        if (coordinator->running_job() != job_id) return absl::InternalError("running job");
        return absl::OkStatus();
      }();
      absl::MutexLock lock(&mu);
      inside = s;
      answered = true;
    });
    {
      // A bound on a wait that must not happen, not a speed check.
      absl::MutexLock lock(&mu);
      mu.AwaitWithTimeout(absl::Condition(&answered), absl::Seconds(60));
      if (!answered) inside = absl::DeadlineExceededError("calls blocked during the commit");
    }
    if (answered) {
      other.join();
    } else {
      other.detach();  // the test fails below; the process is stuck anyway
    }
    ++checked;
    return absl::OkStatus();
  };
  auto store = Store::Open(dir, so);
  ASSERT_THAT(store, IsOk());
  auto c = Make(store->get());
  devices = Enroll(*c, 2);
  auto job = c->StartJob(MakeJob(1, 2, 2, 600));
  ASSERT_THAT(job, IsOk());
  job_id = *job;
  initial = *c->ExportModel(job_id);
  ASSERT_THAT(c->Tick(), IsOk());
  for (const Device& d : devices) ASSERT_THAT(Work(*c, d), IsOk());
  coordinator = c.get();
  ASSERT_THAT(c->Tick(), IsOk());  // completes round 1, committing it
  EXPECT_EQ(checked, 1);
  EXPECT_THAT(inside, IsOk());
  auto status = c->GetJob(job_id);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->completed_rounds(), 1);
}

}  // namespace
}  // namespace fedge::server

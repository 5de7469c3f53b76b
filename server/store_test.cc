#include "server/store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/session_token.h"
#include "tests/postgres_server.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace fs = std::filesystem;

// One PostgreSQL server for the whole test program, started on first use.
fedge::testing::PostgresServer& SharedPostgres() {
  static fedge::testing::PostgresServer* server = [] {
    absl::StatusOr<std::unique_ptr<fedge::testing::PostgresServer>> s =
        fedge::testing::PostgresServer::Start();
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
      std::abort();
    }
    static std::unique_ptr<fedge::testing::PostgresServer> keep = *std::move(s);
    return keep.get();
  }();
  return *server;
}

// Where a test's store lives: a fresh state dir (SQLite) or a fresh database (PostgreSQL).
class Location {
 public:
  explicit Location(const std::string& engine) {
    if (engine == "sqlite") return;
    static std::atomic<int> counter{0};
    absl::StatusOr<std::string> url =
        SharedPostgres().CreateDatabase(absl::StrCat("store_test_", counter++));
    EXPECT_THAT(url, IsOk());
    url_ = url.ok() ? *url : "postgresql://nowhere";
  }
  const std::string& path() const { return url_.empty() ? dir_.path() : url_; }

 private:
  fedge::testing::ScopedTempDir dir_{"fedge_store_test"};
  std::string url_;
};

// The store's contract, on each engine.
class StoreTest : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Engines, StoreTest, ::testing::Values("sqlite", "postgresql"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// A model whose every parameter value is `value` (so a checkpoint says which round wrote it).
v1::ModelProto ModelWithValue(float value, int numel = 64) {
  v1::ModelProto m;
  m.mutable_spec()->set_name("test");
  v1::TensorProto* t = m.add_parameters();
  t->set_name("fc.weight");
  t->add_shape(numel);
  t->mutable_values()->Resize(numel, value);
  return m;
}

v1::RoundMetrics Metrics(int64_t round, double accuracy) {
  v1::RoundMetrics m;
  m.set_round(round);
  m.set_test_accuracy(accuracy);
  m.set_participants(7);
  m.set_bytes_up(1000 * round);
  m.set_started_unix_ms(1000 * round);
  m.set_closed_unix_ms(1000 * round + 500);
  return m;
}

v1::JobConfig Job(const std::string& name) {
  v1::JobConfig job;
  job.set_name(name);
  job.set_architecture("mlp");
  job.set_rounds(10);
  return job;
}

// PostgreSQL tests hand the lease over in a second, not the default fifteen.
StoreOptions ShortLease(std::string holder = "", StoreOptions options = {}) {
  options.lease = absl::Seconds(1);
  options.holder = std::move(holder);
  return options;
}

std::unique_ptr<Store> OpenOrDie(const std::string& dir, StoreOptions options = {}) {
  if (Store::IsPostgresUrl(dir)) {
    const std::string holder = options.holder;
    options = ShortLease(holder, std::move(options));
  }
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir, std::move(options));
  EXPECT_THAT(store, IsOk());
  return store.ok() ? *std::move(store) : nullptr;
}

TEST_P(StoreTest, JobsRoundTrip) {
  Location dir(GetParam());
  base::ManualClock clock(absl::FromUnixMillis(5000));
  StoreOptions options;
  options.clock = &clock;
  std::unique_ptr<Store> store = OpenOrDie(dir.path(), options);
  ASSERT_NE(store, nullptr);

  ASSERT_THAT(store->CreateJob("j1", Job("first")), IsOk());
  EXPECT_THAT(store->CreateJob("j1", Job("again")),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("Store: job 'j1'")));
  clock.Advance(absl::Seconds(1));
  ASSERT_THAT(store->CreateJob("j2", Job("second")), IsOk());

  absl::StatusOr<v1::JobStatus> j1 = store->GetJob("j1");
  ASSERT_THAT(j1, IsOk());
  EXPECT_EQ(j1->job_id(), "j1");
  EXPECT_EQ(j1->config().name(), "first");
  EXPECT_EQ(j1->config().rounds(), 10);
  EXPECT_EQ(j1->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(j1->created_unix_ms(), 5000);
  EXPECT_EQ(j1->completed_rounds(), 0);

  clock.Advance(absl::Seconds(1));
  ASSERT_THAT(store->SetJobState("j1", v1::JOB_STATE_STOPPED, "operator asked"), IsOk());
  j1 = store->GetJob("j1");
  ASSERT_THAT(j1, IsOk());
  EXPECT_EQ(j1->state(), v1::JOB_STATE_STOPPED);
  EXPECT_EQ(j1->message(), "operator asked");
  EXPECT_EQ(j1->updated_unix_ms(), 7000);

  absl::StatusOr<std::vector<v1::JobStatus>> jobs = store->ListJobs();
  ASSERT_THAT(jobs, IsOk());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].job_id(), "j2");  // newest first
  EXPECT_EQ((*jobs)[1].job_id(), "j1");

  EXPECT_THAT(store->GetJob("nope"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(store->SetJobState("nope", v1::JOB_STATE_FINISHED, ""),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(store->SetJobState("j1", v1::JOB_STATE_UNSPECIFIED, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job state")));
  EXPECT_THAT(store->CreateJob("", Job("x")), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST_P(StoreTest, RoundsRoundTrip) {
  Location dir(GetParam());
  std::unique_ptr<Store> store = OpenOrDie(dir.path());
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->CreateJob("j", Job("j")), IsOk());

  ASSERT_THAT(store->OpenRound("j", 1, 100), IsOk());
  absl::StatusOr<v1::RoundRecord> r1 = store->GetRound("j", 1);
  ASSERT_THAT(r1, IsOk());
  EXPECT_EQ(r1->state(), v1::ROUND_STATE_OPEN);
  EXPECT_EQ(r1->started_unix_ms(), 100);
  EXPECT_EQ(store->GetJob("j")->current_round(), 1);

  ASSERT_THAT(store->CommitRound("j", 1, Metrics(1, 0.5), ModelWithValue(1), 3), IsOk());
  r1 = store->GetRound("j", 1);
  ASSERT_THAT(r1, IsOk());
  EXPECT_EQ(r1->state(), v1::ROUND_STATE_COMPLETED);
  EXPECT_EQ(r1->started_unix_ms(), 1000);
  EXPECT_EQ(r1->closed_unix_ms(), 1500);
  EXPECT_DOUBLE_EQ(r1->metrics().test_accuracy(), 0.5);
  EXPECT_EQ(r1->metrics().participants(), 7);

  // A round is never run twice: neither reopened nor recommitted once completed.
  EXPECT_THAT(store->OpenRound("j", 1, 200),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("already completed")));
  EXPECT_THAT(store->CommitRound("j", 1, Metrics(1, 0.6), ModelWithValue(1), 3),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("round 1")));

  // Round 2 fails below quorum and is retried; round 3 is in flight at a "restart".
  ASSERT_THAT(store->OpenRound("j", 2, 300), IsOk());
  ASSERT_THAT(store->CloseRound("j", 2, v1::ROUND_STATE_FAILED, 350), IsOk());
  EXPECT_EQ(store->GetRound("j", 2)->state(), v1::ROUND_STATE_FAILED);
  ASSERT_THAT(store->OpenRound("j", 2, 400), IsOk());
  ASSERT_THAT(store->CommitRound("j", 2, Metrics(2, 0.7), ModelWithValue(2), 3), IsOk());
  ASSERT_THAT(store->OpenRound("j", 3, 500), IsOk());
  absl::StatusOr<int> abandoned = store->AbandonOpenRounds("j");
  ASSERT_THAT(abandoned, IsOk());
  EXPECT_EQ(*abandoned, 1);
  EXPECT_EQ(store->GetRound("j", 3)->state(), v1::ROUND_STATE_ABANDONED);

  absl::StatusOr<std::vector<v1::RoundRecord>> rounds = store->ListRounds("j");
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 3u);
  EXPECT_EQ((*rounds)[0].round(), 1);
  EXPECT_EQ((*rounds)[1].state(), v1::ROUND_STATE_COMPLETED);
  EXPECT_EQ((*rounds)[2].state(), v1::ROUND_STATE_ABANDONED);
  rounds = store->ListRounds("j", 2, 1);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 1u);
  EXPECT_EQ((*rounds)[0].round(), 2);

  absl::StatusOr<v1::JobStatus> job = store->GetJob("j");
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->completed_rounds(), 2);
  EXPECT_DOUBLE_EQ(job->latest_metrics().test_accuracy(), 0.7);
  EXPECT_EQ(job->current_round(), 0);

  EXPECT_THAT(store->CloseRound("j", 1, v1::ROUND_STATE_FAILED, 1),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_THAT(store->CloseRound("j", 3, v1::ROUND_STATE_COMPLETED, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("CommitRound")));
  EXPECT_THAT(store->GetRound("j", 9), StatusIs(absl::StatusCode::kNotFound, HasSubstr("round 9")));
  EXPECT_THAT(store->OpenRound("missing", 1, 0), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(store->CommitRound("j", 5, Metrics(4, 0.1), ModelWithValue(5), 3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("metrics are for round 4")));
}

TEST_P(StoreTest, ClientsRoundTripAndTokensAreStoredOnlyAsHashes) {
  Location dir(GetParam());
  base::ManualClock clock(absl::FromUnixMillis(1000));
  StoreOptions options;
  options.clock = &clock;
  std::unique_ptr<Store> store = OpenOrDie(dir.path(), options);
  ASSERT_NE(store, nullptr);

  const std::string token = GenerateSessionToken();
  ASSERT_EQ(token.size(), 64u);
  EXPECT_NE(token, GenerateSessionToken());
  v1::ClientRecord c;
  c.set_client_id("c1");
  c.mutable_profile()->set_memory_budget_bytes(256 << 20);
  c.mutable_profile()->set_num_examples(600);
  c.mutable_profile()->set_platform("linux-aarch64");
  c.mutable_profile()->set_compute_class(v1::COMPUTE_CLASS_MEDIUM);
  ASSERT_THAT(store->PutClient(c, HashSessionToken(token)), IsOk());
  v1::ClientRecord c2;
  c2.set_client_id("c2");
  ASSERT_THAT(store->PutClient(c2, HashSessionToken("other")), IsOk());

  absl::StatusOr<v1::ClientRecord> got = store->GetClient("c1");
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->profile().num_examples(), 600);
  EXPECT_EQ(got->profile().platform(), "linux-aarch64");
  EXPECT_EQ(got->profile().compute_class(), v1::COMPUTE_CLASS_MEDIUM);
  EXPECT_EQ(got->state(), v1::CLIENT_STATE_ACTIVE);
  EXPECT_EQ(got->enrolled_unix_ms(), 1000);
  EXPECT_EQ(got->last_seen_unix_ms(), 1000);

  EXPECT_THAT(store->VerifySessionToken("c1", token), IsOk());
  EXPECT_THAT(store->VerifySessionToken("c1", token + "x"),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("c1")));
  EXPECT_THAT(store->VerifySessionToken("c2", token),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  EXPECT_THAT(store->VerifySessionToken("ghost", token),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  EXPECT_THAT(store->PutClient(c, "short"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hash")));

  // Participation counts come with CommitRound; liveness with TouchClients.
  ASSERT_THAT(store->CreateJob("j", Job("j")), IsOk());
  ASSERT_THAT(store->CommitRound("j", 1, Metrics(1, 0.1), ModelWithValue(1), 2, {"c1", "ghost"}),
              IsOk());
  clock.Advance(absl::Seconds(1));
  ASSERT_THAT(store->TouchClients({"c2", "ghost"}), IsOk());
  EXPECT_EQ(store->GetClient("c1")->rounds_participated(), 1);
  EXPECT_EQ(store->GetClient("c2")->rounds_participated(), 0);
  EXPECT_EQ(store->GetClient("c2")->last_seen_unix_ms(), 2000);
  EXPECT_EQ(store->GetClient("c1")->last_seen_unix_ms(), 1000);

  // Re-registration replaces profile and token, keeps enrollment time and participation.
  const std::string token2 = GenerateSessionToken();
  c.mutable_profile()->set_num_examples(700);
  ASSERT_THAT(store->PutClient(c, HashSessionToken(token2)), IsOk());
  got = store->GetClient("c1");
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->profile().num_examples(), 700);
  EXPECT_EQ(got->enrolled_unix_ms(), 1000);
  EXPECT_EQ(got->rounds_participated(), 1);
  EXPECT_THAT(store->VerifySessionToken("c1", token),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  EXPECT_THAT(store->VerifySessionToken("c1", token2), IsOk());

  ASSERT_THAT(store->SetClientState("c2", v1::CLIENT_STATE_LEFT), IsOk());
  absl::StatusOr<std::vector<v1::ClientRecord>> active = store->ListClients(false);
  ASSERT_THAT(active, IsOk());
  ASSERT_EQ(active->size(), 1u);
  EXPECT_EQ((*active)[0].client_id(), "c1");
  absl::StatusOr<std::vector<v1::ClientRecord>> all = store->ListClients(true);
  ASSERT_THAT(all, IsOk());
  EXPECT_EQ(all->size(), 2u);
  EXPECT_THAT(store->SetClientState("ghost", v1::CLIENT_STATE_LEFT),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("ghost")));
  EXPECT_THAT(store->GetClient("ghost"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));

  // The relay a device registered through, kept and changed.
  EXPECT_EQ(store->GetClient("c1")->relay(), "");
  c.set_relay("relay-a");
  ASSERT_THAT(store->PutClient(c, HashSessionToken(token2)), IsOk());
  EXPECT_EQ(store->GetClient("c1")->relay(), "relay-a");
  ASSERT_THAT(store->SetClientRelay("c1", "relay-b"), IsOk());
  EXPECT_EQ(store->ListClients(true)->front().relay(), "relay-b");
  EXPECT_THAT(store->SetClientRelay("ghost", "relay-b"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("ghost")));

  // The tokens themselves appear nowhere in the database files.
  if (GetParam() != "sqlite") return;
  const std::string db = store->path();
  store.reset();
  for (const std::string& file : {db, db + "-wal"}) {
    std::ifstream in(file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(bytes.find(token), std::string::npos) << file;
    EXPECT_EQ(bytes.find(token2), std::string::npos) << file;
  }
}

TEST_P(StoreTest, KeepsOnlyTheLastKCheckpointsPerJob) {
  Location dir(GetParam());
  std::unique_ptr<Store> store = OpenOrDie(dir.path());
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->CreateJob("a", Job("a")), IsOk());
  ASSERT_THAT(store->CreateJob("b", Job("b")), IsOk());
  ASSERT_THAT(store->CommitRound("b", 1, Metrics(1, 0), ModelWithValue(-1), 1), IsOk());
  for (int r = 1; r <= 7; ++r) {
    ASSERT_THAT(store->CommitRound("a", r, Metrics(r, 0.1 * r), ModelWithValue(r), 3), IsOk());
  }
  EXPECT_THAT(*store->ListCheckpointRounds("a"), ElementsAre(5, 6, 7));
  EXPECT_THAT(*store->ListCheckpointRounds("b"), ElementsAre(1));  // other jobs untouched

  absl::StatusOr<Checkpoint> latest = store->LatestCheckpoint("a");
  ASSERT_THAT(latest, IsOk());
  EXPECT_EQ(latest->round, 7);
  ASSERT_EQ(latest->model.parameters_size(), 1);
  EXPECT_EQ(latest->model.parameters(0).values(0), 7.0f);
  absl::StatusOr<Checkpoint> five = store->GetCheckpoint("a", 5);
  ASSERT_THAT(five, IsOk());
  EXPECT_EQ(five->model.parameters(0).values(63), 5.0f);
  EXPECT_THAT(store->GetCheckpoint("a", 4),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("round 4")));
  EXPECT_THAT(store->LatestCheckpoint("none"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no checkpoint")));

  // K can shrink between rounds; rounds themselves are never pruned.
  ASSERT_THAT(store->CommitRound("a", 8, Metrics(8, 0.8), ModelWithValue(8), 1), IsOk());
  EXPECT_THAT(*store->ListCheckpointRounds("a"), ElementsAre(8));
  EXPECT_EQ(store->ListRounds("a")->size(), 8u);
}

TEST_P(StoreTest, LargeModelRoundTrips) {
  Location dir(GetParam());
  std::unique_ptr<Store> store = OpenOrDie(dir.path());
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->CreateJob("j", Job("j")), IsOk());
  v1::ModelProto big = ModelWithValue(0, 4 << 20);  // 16 MiB of floats
  for (int i = 0; i < big.parameters(0).values_size(); i += 4099) {
    big.mutable_parameters(0)->set_values(i, static_cast<float>(i));
  }
  ASSERT_THAT(store->CommitRound("j", 1, Metrics(1, 0.1), big, 2), IsOk());
  absl::StatusOr<Checkpoint> got = store->LatestCheckpoint("j");
  ASSERT_THAT(got, IsOk());
  ASSERT_EQ(got->model.parameters(0).values_size(), 4 << 20);
  EXPECT_EQ(got->model.parameters(0).values(4099 * 100), 4099.0f * 100);
  EXPECT_EQ(got->model.SerializeAsString(), big.SerializeAsString());
}

// Checks that round `round` left no trace and that the job is as before it.
void ExpectNothingOfRound(Store& store, int64_t round, const std::vector<int64_t>& checkpoints,
                          int64_t participation) {
  absl::StatusOr<v1::RoundRecord> r = store.GetRound("j", round);
  if (r.ok()) {
    EXPECT_NE(r->state(), v1::ROUND_STATE_COMPLETED);
  } else {
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  }
  EXPECT_THAT(store.GetCheckpoint("j", round), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_EQ(*store.ListCheckpointRounds("j"), checkpoints);
  EXPECT_EQ(store.LatestCheckpoint("j")->round, checkpoints.back());
  EXPECT_EQ(store.GetJob("j")->completed_rounds(), checkpoints.back());
  EXPECT_EQ(store.GetClient("c")->rounds_participated(), participation);
}

TEST_P(StoreTest, CommitRoundIsAtomicWhenItFailsHalfWay) {
  for (const char* point : {"after_round", "after_checkpoint", "after_prune"}) {
    SCOPED_TRACE(point);
    Location dir(GetParam());
    bool fail = false;
    StoreOptions options;
    options.fault_hook_for_testing = [&](absl::string_view at) {
      return fail && at == point ? absl::InternalError(absl::StrCat("injected at ", at))
                                 : absl::OkStatus();
    };
    std::unique_ptr<Store> store = OpenOrDie(dir.path(), options);
    ASSERT_NE(store, nullptr);
    ASSERT_THAT(store->CreateJob("j", Job("j")), IsOk());
    v1::ClientRecord c;
    c.set_client_id("c");
    ASSERT_THAT(store->PutClient(c, HashSessionToken("t")), IsOk());
    for (int r = 1; r <= 2; ++r) {
      ASSERT_THAT(store->CommitRound("j", r, Metrics(r, 0.1), ModelWithValue(r), 2, {"c"}), IsOk());
    }
    ASSERT_THAT(store->OpenRound("j", 3, 1), IsOk());

    fail = true;
    EXPECT_THAT(store->CommitRound("j", 3, Metrics(3, 0.3), ModelWithValue(3), 2, {"c"}),
                StatusIs(absl::StatusCode::kInternal, HasSubstr(point)));
    ExpectNothingOfRound(*store, 3, {1, 2}, 2);
    EXPECT_EQ(store->GetRound("j", 3)->state(), v1::ROUND_STATE_OPEN);  // still in flight

    // The store is usable afterwards, and the same round commits once the fault is gone.
    fail = false;
    ASSERT_THAT(store->CommitRound("j", 3, Metrics(3, 0.3), ModelWithValue(3), 2, {"c"}), IsOk());
    EXPECT_THAT(*store->ListCheckpointRounds("j"), ElementsAre(2, 3));
    EXPECT_EQ(store->GetClient("c")->rounds_participated(), 3);
    EXPECT_THAT(store->CheckIntegrity(), IsOk());
  }
}

TEST_P(StoreTest, OversizedModelIsRefusedAndLeavesNothing) {
  Location dir(GetParam());
  StoreOptions options;
  options.max_model_bytes = 4096;
  std::unique_ptr<Store> store = OpenOrDie(dir.path(), options);
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->CreateJob("j", Job("j")), IsOk());
  v1::ClientRecord c;
  c.set_client_id("c");
  ASSERT_THAT(store->PutClient(c, HashSessionToken("t")), IsOk());
  ASSERT_THAT(store->CommitRound("j", 1, Metrics(1, 0.1), ModelWithValue(1, 100), 3, {"c"}),
              IsOk());
  EXPECT_THAT(store->CommitRound("j", 2, Metrics(2, 0.2), ModelWithValue(2, 2000), 3, {"c"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("Store: checkpoint"), HasSubstr("limit of 4096"))));
  ExpectNothingOfRound(*store, 2, {1}, 1);

  StoreOptions too_big;
  too_big.max_model_bytes = kDefaultMaxModelBytes + 1;
  EXPECT_THAT(Store::Open(dir.path() + "/other", too_big),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_model_bytes")));
}

TEST_P(StoreTest, ReopeningKeepsEverything) {
  Location dir(GetParam());
  {
    std::unique_ptr<Store> store = OpenOrDie(dir.path());
    ASSERT_NE(store, nullptr);
    ASSERT_THAT(store->CreateJob("j", Job("persisted")), IsOk());
    v1::ClientRecord c;
    c.set_client_id("c");
    c.mutable_profile()->set_num_examples(42);
    ASSERT_THAT(store->PutClient(c, HashSessionToken("tok")), IsOk());
    for (int r = 1; r <= 4; ++r) {
      ASSERT_THAT(store->CommitRound("j", r, Metrics(r, 0.2 * r), ModelWithValue(r), 2, {"c"}),
                  IsOk());
    }
    ASSERT_THAT(store->OpenRound("j", 5, 77), IsOk());
    ASSERT_THAT(store->SetJobState("j", v1::JOB_STATE_RUNNING, "resumable"), IsOk());
  }
  std::unique_ptr<Store> store = OpenOrDie(dir.path());
  ASSERT_NE(store, nullptr);
  absl::StatusOr<v1::JobStatus> job = store->GetJob("j");
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->config().name(), "persisted");
  EXPECT_EQ(job->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job->message(), "resumable");
  EXPECT_EQ(job->completed_rounds(), 4);
  EXPECT_EQ(job->current_round(), 5);
  EXPECT_DOUBLE_EQ(job->latest_metrics().test_accuracy(), 0.8);
  EXPECT_EQ(store->ListRounds("j")->size(), 5u);
  EXPECT_THAT(*store->ListCheckpointRounds("j"), ElementsAre(3, 4));
  absl::StatusOr<Checkpoint> latest = store->LatestCheckpoint("j");
  ASSERT_THAT(latest, IsOk());
  EXPECT_EQ(latest->round, 4);
  EXPECT_EQ(latest->model.parameters(0).values(0), 4.0f);
  EXPECT_EQ(store->GetClient("c")->profile().num_examples(), 42);
  EXPECT_EQ(store->GetClient("c")->rounds_participated(), 4);
  EXPECT_THAT(store->VerifySessionToken("c", "tok"), IsOk());
  EXPECT_THAT(store->CheckIntegrity(), IsOk());
}

TEST(SqliteStoreTest, SecondOpenOfTheSameStateDirIsRefused) {
  fedge::testing::ScopedTempDir dir("fedge_store_test");
  std::unique_ptr<Store> first = OpenOrDie(dir.path());
  ASSERT_NE(first, nullptr);
  EXPECT_THAT(Store::Open(dir.path()),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("in use by another process"), HasSubstr(dir.path()))));
  first.reset();
  EXPECT_THAT(Store::Open(dir.path()), IsOk());
}

TEST(SqliteStoreTest, NonSqliteFileGivesAClearErrorNamingThePath) {
  fedge::testing::ScopedTempDir dir("fedge_store_test");
  fs::create_directories(dir.path());
  const std::string db = (fs::path(dir.path()) / Store::kDatabaseFileName).string();
  {
    std::ofstream out(db, std::ios::binary);
    out << "this is a text file, not a database; " << std::string(5000, 'x');
  }
  EXPECT_THAT(Store::Open(dir.path()),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("Store: "), HasSubstr(db),
                             HasSubstr("not a valid SQLite database"))));
}

TEST(SqliteStoreTest, CorruptDatabaseGivesAClearErrorNamingThePath) {
  fedge::testing::ScopedTempDir dir("fedge_store_test");
  std::string db;
  {
    std::unique_ptr<Store> store = OpenOrDie(dir.path());
    ASSERT_NE(store, nullptr);
    ASSERT_THAT(store->CreateJob("j", Job("j")), IsOk());
    db = store->path();
  }
  // Keep the 100-byte header, overwrite the rest of page 1 (the schema's b-tree page).
  {
    std::fstream f(db, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    const std::string garbage(1000, '\xA5');
    f.write(garbage.data(), garbage.size());
  }
  EXPECT_THAT(Store::Open(dir.path()),
              StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr("Store: "), HasSubstr(db))));
}

// The strategy's state (FedAdam/FedYogi moments) commits with the round's checkpoint and
// comes back with it; a checkpoint without one reads back empty.
TEST_P(StoreTest, StrategyStateRoundTripsWithTheCheckpoint) {
  Location dir(GetParam());
  std::unique_ptr<Store> store = OpenOrDie(dir.path());
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->CreateJob("j", Job("j")), IsOk());
  ASSERT_THAT(store->OpenRound("j", 1, 100), IsOk());
  ASSERT_THAT(store->CommitRound("j", 1, Metrics(1, 0.5), ModelWithValue(1), 3, {}), IsOk());
  auto c1 = store->LatestCheckpoint("j");
  ASSERT_THAT(c1, IsOk());
  EXPECT_EQ(c1->strategy_state, "");
  const std::string state("moments\0\x01\xff", 10);
  ASSERT_THAT(store->OpenRound("j", 2, 200), IsOk());
  ASSERT_THAT(store->CommitRound("j", 2, Metrics(2, 0.6), ModelWithValue(2), 3, {}, state), IsOk());
  store.reset();
  store = OpenOrDie(dir.path());
  ASSERT_NE(store, nullptr);
  auto c2 = store->LatestCheckpoint("j");
  ASSERT_THAT(c2, IsOk());
  EXPECT_EQ(c2->round, 2);
  EXPECT_EQ(c2->strategy_state, state);
}

// A version-1 database (before strategy states) opens and migrates; its checkpoints read
// back with an empty state.
TEST(SqliteStoreTest, VersionOneDatabaseMigrates) {
  fedge::testing::ScopedTempDir dir("fedge_store_test");
  std::string db;
  {
    std::unique_ptr<Store> store = OpenOrDie(dir.path());
    ASSERT_NE(store, nullptr);
    db = store->path();
    ASSERT_THAT(store->CreateJob("j", Job("j")), IsOk());
    ASSERT_THAT(store->OpenRound("j", 1, 100), IsOk());
    ASSERT_THAT(store->CommitRound("j", 1, Metrics(1, 0.5), ModelWithValue(1), 3), IsOk());
  }
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &raw), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(raw,
                         "ALTER TABLE checkpoints DROP COLUMN strategy_state; "
                         "ALTER TABLE clients DROP COLUMN device_key_hash; "
                         "DROP TABLE enrollment_tokens; "
                         "UPDATE schema_version SET version = 1",
                         nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(raw);
  sqlite3_close(raw);
  std::unique_ptr<Store> store = OpenOrDie(dir.path());
  ASSERT_NE(store, nullptr);
  auto c = store->LatestCheckpoint("j");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->round, 1);
  EXPECT_EQ(c->strategy_state, "");
  ASSERT_THAT(store->OpenRound("j", 2, 200), IsOk());
  EXPECT_THAT(store->CommitRound("j", 2, Metrics(2, 0.6), ModelWithValue(2), 3, {}, "s"), IsOk());
  EXPECT_EQ(store->LatestCheckpoint("j")->strategy_state, "s");
  // v3: device keys.
  v1::ClientRecord c1;
  c1.set_client_id("c1");
  ASSERT_THAT(store->PutClient(c1, HashSessionToken("t1"), HashSessionToken("k1")), IsOk());
  EXPECT_THAT(store->VerifyDeviceKey("c1", "k1"), IsOk());
  // v4: revoked devices and enrollment tokens.
  ASSERT_THAT(store->SetClientState("c1", v1::CLIENT_STATE_REVOKED), IsOk());
  EXPECT_EQ(store->GetClient("c1")->state(), v1::CLIENT_STATE_REVOKED);
  v1::EnrollmentTokenRecord t;
  t.set_name("batch");
  t.set_max_uses(1);
  ASSERT_THAT(store->CreateEnrollmentToken(t, HashSessionToken("e1")), IsOk());
  EXPECT_THAT(store->UseEnrollmentToken("batch", 0), IsOk());
  EXPECT_EQ(store->UseEnrollmentToken("batch", 0).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store->FindEnrollmentToken(HashSessionToken("e1"))->uses(), 1);
}

// A device's key is kept as its hash, survives a re-registration that does not replace it,
// and a device enrolled without one (or an unknown id) proves nothing.
// Text is stored the same on both engines: ids must be UTF-8 without NUL; a job's message
// is cut at a character boundary and ill-formed bytes are replaced.
TEST_P(StoreTest, TextIsUtf8OnEveryEngine) {
  Location dir(GetParam());
  std::unique_ptr<Store> store = OpenOrDie(dir.path());
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->CreateJob(std::string("a\0b", 3), Job("j")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
  EXPECT_THAT(store->CreateJob("bad\xff", Job("j")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
  v1::ClientRecord c;
  c.set_client_id("\xc0\xaf");  // an overlong '/'
  EXPECT_THAT(store->PutClient(c, HashSessionToken("t")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
  ASSERT_THAT(store->CreateJob("jöb-≥", Job("j")), IsOk());
  const std::string message = std::string(4095, 'a') + "≥≥";  // "≥" is 3 bytes
  ASSERT_THAT(store->SetJobState("jöb-≥", v1::JOB_STATE_FAILED, message), IsOk());
  EXPECT_EQ(store->GetJob("jöb-≥")->message(), std::string(4095, 'a'));
  ASSERT_THAT(store->SetJobState("jöb-≥", v1::JOB_STATE_FAILED, std::string("x\0y\xfe≥", 7)),
              IsOk());
  EXPECT_EQ(store->GetJob("jöb-≥")->message(), "x?y?≥");
}

TEST_P(StoreTest, DeviceKeysVerifyOnlyTheirDevice) {
  Location dir(GetParam());
  std::unique_ptr<Store> store = OpenOrDie(dir.path());
  ASSERT_NE(store, nullptr);
  v1::ClientRecord a, b;
  a.set_client_id("a");
  b.set_client_id("b");
  ASSERT_THAT(store->PutClient(a, HashSessionToken("ta"), HashSessionToken("key-a")), IsOk());
  ASSERT_THAT(store->PutClient(b, HashSessionToken("tb")), IsOk());
  EXPECT_THAT(store->VerifyDeviceKey("a", "key-a"), IsOk());
  EXPECT_THAT(store->VerifyDeviceKey("a", "key-b"), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(store->VerifyDeviceKey("b", ""), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(store->VerifyDeviceKey("nobody", "key-a"),
              StatusIs(absl::StatusCode::kUnauthenticated));
  // A new session for a: its key stays.
  ASSERT_THAT(store->PutClient(a, HashSessionToken("ta2")), IsOk());
  EXPECT_THAT(store->VerifyDeviceKey("a", "key-a"), IsOk());
  EXPECT_THAT(store->VerifySessionToken("a", "ta2"), IsOk());
  EXPECT_THAT(store->PutClient(a, HashSessionToken("ta3"), "short"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(SqliteStoreTest, DatabaseFromANewerFedgeIsRefused) {
  fedge::testing::ScopedTempDir dir("fedge_store_test");
  std::string db;
  {
    std::unique_ptr<Store> store = OpenOrDie(dir.path());
    ASSERT_NE(store, nullptr);
    db = store->path();
  }
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &raw), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(raw, "UPDATE schema_version SET version = 99", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(raw);
  EXPECT_THAT(Store::Open(dir.path()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("schema version 99"), HasSubstr(db))));
}

// The crash-safety contract: a child process commits rounds in a loop and reports each
// commit on a pipe once CommitRound returned; the parent SIGKILLs it at a random moment,
// reopens the store and checks that (1) the database passes integrity_check, (2) every
// reported round is there, and at most the one in flight beyond it, (3) completed rounds are
// exactly 1..N, (4) the checkpoints are exactly the last K completed rounds and the latest
// holds round N's model. The next child resumes from the latest checkpoint.
TEST_P(StoreTest, SigkillDuringCommitsLosesNoCommittedRound) {
  Location dir(GetParam());
  {
    std::unique_ptr<Store> store = OpenOrDie(dir.path());
    ASSERT_NE(store, nullptr);
    ASSERT_THAT(store->CreateJob("j", Job("crash")), IsOk());
  }
  constexpr int kKeep = 3;
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937 rng(seed);
  int64_t previous_n = 0;
  for (int iteration = 0; iteration < 5; ++iteration) {
    SCOPED_TRACE(absl::StrCat("iteration ", iteration));
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    std::fflush(nullptr);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      absl::StatusOr<std::unique_ptr<Store>> store =
          Store::Open(dir.path(), ShortLease(absl::StrCat("child-", iteration)));
      if (!store.ok()) _exit(2);
      absl::StatusOr<Checkpoint> latest = (*store)->LatestCheckpoint("j");
      int64_t r = latest.ok() ? latest->round : 0;
      if (!(*store)->AbandonOpenRounds("j").ok()) _exit(3);
      while (true) {
        ++r;
        if (!(*store)->OpenRound("j", r, r).ok()) _exit(4);
        if (!(*store)->CommitRound("j", r, Metrics(r, 0.01), ModelWithValue(r, 20000), kKeep)
                 .ok()) {
          _exit(5);
        }
        if (write(fds[1], &r, sizeof(r)) != sizeof(r)) _exit(6);
      }
    }
    close(fds[1]);
    // Wait for the child's first commit (so every iteration makes progress), then let it run
    // for a random while before killing it.
    int64_t reported = previous_n;
    int64_t value = 0;
    ASSERT_EQ(read(fds[0], &value, sizeof(value)), static_cast<ssize_t>(sizeof(value)));
    reported = value;
    usleep(std::uniform_int_distribution<int>(0, 60000)(rng));
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exited by itself with code "
                                      << (WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1);
    while (read(fds[0], &value, sizeof(value)) == static_cast<ssize_t>(sizeof(value))) {
      reported = value;
    }
    close(fds[0]);

    std::unique_ptr<Store> store = OpenOrDie(dir.path());
    ASSERT_NE(store, nullptr);
    ASSERT_THAT(store->CheckIntegrity(), IsOk());
    absl::StatusOr<std::vector<v1::RoundRecord>> rounds = store->ListRounds("j", 1, 1 << 30);
    ASSERT_THAT(rounds, IsOk());
    int64_t n = 0;
    int open = 0;
    for (const v1::RoundRecord& r : *rounds) {
      if (r.state() == v1::ROUND_STATE_COMPLETED) {
        EXPECT_EQ(r.round(), n + 1) << "completed rounds have a gap";
        n = r.round();
        EXPECT_EQ(r.metrics().round(), r.round());
      } else {
        ++open;
        EXPECT_EQ(r.round(), n + 1) << "only the round after the last completed may be open";
      }
    }
    EXPECT_LE(open, 1);
    EXPECT_GE(n, reported) << "a round reported as committed was lost";
    EXPECT_LE(n, reported + 1);
    EXPECT_GT(n, previous_n);
    std::vector<int64_t> expected_checkpoints;
    for (int64_t r = std::max<int64_t>(1, n - kKeep + 1); r <= n; ++r) {
      expected_checkpoints.push_back(r);
    }
    EXPECT_EQ(*store->ListCheckpointRounds("j"), expected_checkpoints);
    absl::StatusOr<Checkpoint> latest = store->LatestCheckpoint("j");
    ASSERT_THAT(latest, IsOk());
    EXPECT_EQ(latest->round, n);
    EXPECT_EQ(latest->model.parameters(0).values_size(), 20000);
    EXPECT_EQ(latest->model.parameters(0).values(19999), static_cast<float>(n));
    EXPECT_EQ(store->GetJob("j")->completed_rounds(), n);
    previous_n = n;
  }
  EXPECT_GE(previous_n, 5);
}

// ---- PostgreSQL: the lease, standbys, fencing, restarts ----

// Runs `sql` on `url` (outside the store), failing the test on an error.
void RawSql(const std::string& url, const std::string& sql) {
  PGconn* c = PQconnectdb(url.c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQexec(c, sql.c_str());
  EXPECT_TRUE(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK)
      << PQresultErrorMessage(r);
  PQclear(r);
  PQfinish(c);
}

// A second coordinator waits as a standby while the first holds the lease, and takes over
// (with everything the first committed) when the first stops.
TEST(PostgresStoreTest, SecondOpenWaitsAsStandbyAndTakesOverWhenTheHolderStops) {
  Location where("postgresql");
  std::unique_ptr<Store> first = OpenOrDie(where.path(), ShortLease("first"));
  ASSERT_NE(first, nullptr);
  ASSERT_THAT(first->CreateJob("j", Job("shared")), IsOk());
  ASSERT_THAT(first->CommitRound("j", 1, Metrics(1, 0.5), ModelWithValue(1), 2), IsOk());

  std::atomic<int> polls{0};
  std::string seen_holder;
  StoreOptions second_options = ShortLease("second");
  second_options.on_standby = [&](absl::string_view holder, int64_t) {
    if (polls++ == 0) seen_holder = std::string(holder);
    return true;
  };
  absl::StatusOr<std::unique_ptr<Store>> second;
  std::atomic<bool> opened{false};
  std::thread standby([&] {
    second = Store::Open(where.path(), second_options);
    opened = true;
  });
  // The first keeps renewing: the standby keeps waiting over several lease periods.
  while (polls < 6) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(opened.load());
  EXPECT_THAT(seen_holder, ::testing::StartsWith("first#"));
  ASSERT_THAT(first->CommitRound("j", 2, Metrics(2, 0.6), ModelWithValue(2), 2), IsOk());
  first.reset();  // a clean stop hands the lease over
  standby.join();
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ((*second)->GetJob("j")->completed_rounds(), 2);
  EXPECT_EQ((*second)->LatestCheckpoint("j")->model.parameters(0).values(0), 2.0f);
  EXPECT_THAT((*second)->CommitRound("j", 3, Metrics(3, 0.7), ModelWithValue(3), 2), IsOk());
}

// A standby told to stop (SIGTERM) stops waiting.
TEST(PostgresStoreTest, AStandbyCanBeStoppedWhileItWaits) {
  Location where("postgresql");
  std::unique_ptr<Store> first = OpenOrDie(where.path(), ShortLease("first"));
  ASSERT_NE(first, nullptr);
  StoreOptions options = ShortLease("second");
  int polls = 0;
  options.on_standby = [&](absl::string_view, int64_t) { return ++polls < 3; };
  EXPECT_THAT(Store::Open(where.path(), options),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("standby")));
  EXPECT_EQ(polls, 3);
  EXPECT_THAT(first->CreateJob("j", Job("j")), IsOk());  // the holder is untouched
}

// A holder whose lease another process took (it was cut off past its lease) can read but
// never write again, and is told so once.
TEST(PostgresStoreTest, AHolderThatLostTheLeaseCannotWrite) {
  Location where("postgresql");
  std::atomic<int> lost{0};
  StoreOptions options = ShortLease("cut-off");
  options.on_lease_lost = [&](const absl::Status& s) {
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("intruder")));
    ++lost;
  };
  std::unique_ptr<Store> store = OpenOrDie(where.path(), options);
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->CreateJob("j", Job("j")), IsOk());
  // Another process took the lease and let it lapse: it is not taken back, ever.
  RawSql(where.path(), "UPDATE fedge_lease SET holder = 'intruder', expires_ms = 0");
  EXPECT_THAT(store->CommitRound("j", 1, Metrics(1, 0.5), ModelWithValue(1), 2),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("lost the lease")));
  EXPECT_THAT(store->SetJobState("j", v1::JOB_STATE_STOPPED, "x"),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  v1::ClientRecord c;
  c.set_client_id("c");
  EXPECT_THAT(store->PutClient(c, HashSessionToken("t")),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  EXPECT_EQ(store->GetJob("j")->completed_rounds(), 0);  // reads still answer
  EXPECT_EQ(store->GetJob("j")->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(lost.load(), 1);
}

// A write transaction longer than the lease keeps it: a standby polling meanwhile finds the
// row locked by a live holder, and the commit renews the lease.
TEST(PostgresStoreTest, AWriteLongerThanTheLeaseKeepsIt) {
  Location where("postgresql");
  StoreOptions options = ShortLease("slow-writer");
  std::atomic<bool> slow{false};
  options.fault_hook_for_testing = [&](absl::string_view at) {
    if (slow && at == "after_checkpoint") absl::SleepFor(absl::Milliseconds(2500));
    return absl::OkStatus();
  };
  std::unique_ptr<Store> first = OpenOrDie(where.path(), options);
  ASSERT_NE(first, nullptr);
  ASSERT_THAT(first->CreateJob("j", Job("j")), IsOk());
  std::atomic<bool> stop{false};
  std::atomic<int> polls{0};
  absl::StatusOr<std::unique_ptr<Store>> second;
  std::thread standby([&] {
    StoreOptions o = ShortLease("standby");
    o.on_standby = [&](absl::string_view, int64_t) {
      ++polls;
      return !stop.load();
    };
    second = Store::Open(where.path(), o);
  });
  slow = true;
  EXPECT_THAT(first->CommitRound("j", 1, Metrics(1, 0.5), ModelWithValue(1), 2), IsOk());
  slow = false;
  absl::SleepFor(absl::Milliseconds(700));
  EXPECT_THAT(first->CommitRound("j", 2, Metrics(2, 0.6), ModelWithValue(2), 2), IsOk());
  stop = true;
  standby.join();
  EXPECT_THAT(second, StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  EXPECT_GE(polls.load(), 6);
  EXPECT_EQ(first->GetJob("j")->completed_rounds(), 2);
}

// A database restart is waited out: the calls after it reconnect and succeed, and the
// lease is kept.
TEST(PostgresStoreTest, ADatabaseRestartIsWaitedOut) {
  Location where("postgresql");
  std::unique_ptr<Store> store = OpenOrDie(where.path(), ShortLease("survivor"));
  ASSERT_NE(store, nullptr);
  ASSERT_THAT(store->CreateJob("j", Job("j")), IsOk());
  ASSERT_THAT(store->CommitRound("j", 1, Metrics(1, 0.5), ModelWithValue(1), 2), IsOk());
  ASSERT_THAT(SharedPostgres().Restart(), IsOk());
  EXPECT_EQ(store->GetJob("j")->completed_rounds(), 1);
  ASSERT_THAT(store->OpenRound("j", 2, 1), IsOk());
  ASSERT_THAT(store->CommitRound("j", 2, Metrics(2, 0.6), ModelWithValue(2), 2), IsOk());
  // Down while a write is due: the write waits for the server to come back. (The server
  // restarts from this thread: its parent-death signal follows the thread that started it.)
  SharedPostgres().Stop();
  std::thread writer([&] {
    EXPECT_THAT(store->CommitRound("j", 3, Metrics(3, 0.7), ModelWithValue(3), 2), IsOk());
  });
  absl::SleepFor(absl::Milliseconds(700));
  EXPECT_THAT(SharedPostgres().Restart(), IsOk());
  writer.join();
  EXPECT_EQ(store->GetJob("j")->completed_rounds(), 3);
}

TEST(PostgresStoreTest, AnUnreachableDatabaseIsAClearError) {
  EXPECT_THAT(Store::Open("postgresql://fedge@127.0.0.1:1/none", ShortLease()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot connect to PostgreSQL")));
  StoreOptions no_lease = ShortLease();
  no_lease.lease = absl::Milliseconds(10);
  EXPECT_THAT(Store::Open("postgresql://x/y", no_lease),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lease")));
}

}  // namespace
}  // namespace fedge::server

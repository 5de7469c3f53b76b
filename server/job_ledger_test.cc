#include "server/job_ledger.h"

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;

v1::ModelProto Model(float v) {
  v1::ModelProto m;
  v1::TensorProto* t = m.add_parameters();
  t->set_name("w");
  t->add_shape(2);
  t->add_values(v);
  t->add_values(-v);
  return m;
}

v1::RoundMetrics Metrics(int64_t round) {
  v1::RoundMetrics m;
  m.set_round(round);
  m.set_participants(3);
  m.set_started_unix_ms(1000 * round);
  m.set_closed_unix_ms(1000 * round + 500);
  return m;
}

// The same story told to a ledger in memory and to one on a store: what operators read
// back is the same.
void TellAJob(JobLedger& ledger) {
  v1::JobConfig config;
  config.set_name("j");
  config.set_rounds(5);
  ASSERT_THAT(ledger.CreateJob("j-1", config), IsOk());
  const absl::Time t = absl::FromUnixSeconds(100);
  ASSERT_THAT(ledger.OpenRound("j-1", 1, t), IsOk());
  ASSERT_THAT(ledger.FailRound("j-1", 1, t), IsOk());
  ASSERT_THAT(ledger.OpenRound("j-1", 1, t), IsOk());
  int serialized = 0;
  ASSERT_THAT(ledger.CommitRound("j-1", Metrics(1), Model(1), 2, {"b", "a"},
                                 [&]() -> absl::StatusOr<std::string> {
                                   ++serialized;
                                   return std::string("state");
                                 }),
              IsOk());
  EXPECT_EQ(serialized, ledger.durable() ? 1 : 0);  // only a store keeps the state
  ASSERT_THAT(ledger.OpenRound("j-1", 2, t), IsOk());
  v1::JobStatus running;
  running.set_job_id("j-1");
  *running.mutable_config() = config;
  running.set_state(v1::JOB_STATE_RUNNING);
  running.set_completed_rounds(1);
  running.set_current_round(2);
  ASSERT_THAT(ledger.EndJob("j-1", v1::JOB_STATE_STOPPED, "stopped by an operator", 2, t,
                            [&] { return absl::StatusOr<v1::JobStatus>(running); },
                            [] { return Model(1); }),
              IsOk());
}

void ExpectTheStory(const JobLedger& ledger) {
  absl::StatusOr<v1::JobStatus> s = ledger.Job("j-1");
  ASSERT_THAT(s.status(), IsOk());
  EXPECT_EQ(s->state(), v1::JOB_STATE_STOPPED);
  EXPECT_EQ(s->message(), "stopped by an operator");
  EXPECT_EQ(s->completed_rounds(), 1);
  EXPECT_EQ(s->current_round(), 0);  // the open round was abandoned
  absl::StatusOr<std::vector<v1::RoundRecord>> rounds = ledger.Rounds("j-1", 1);
  ASSERT_THAT(rounds.status(), IsOk());
  int completed = 0;
  for (const v1::RoundRecord& r : *rounds) {
    if (r.state() != v1::ROUND_STATE_COMPLETED) continue;
    ++completed;
    EXPECT_EQ(r.round(), 1);
    EXPECT_EQ(r.metrics().participants(), 3);
    EXPECT_EQ(r.closed_unix_ms(), 1500);
  }
  EXPECT_EQ(completed, 1);
  absl::StatusOr<v1::ModelProto> m = ledger.LatestModel("j-1");
  ASSERT_THAT(m.status(), IsOk());
  EXPECT_EQ(m->parameters(0).values(1), -1.0f);
  EXPECT_THAT(ledger.Job("nope").status(), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ledger.LatestModel("nope").status(), StatusIs(absl::StatusCode::kNotFound));
}

TEST(JobLedgerTest, InMemoryARunningJobIsTheCoordinatorsUntilItEnds) {
  JobLedger ledger(nullptr);
  EXPECT_FALSE(ledger.durable());
  TellAJob(ledger);
  ExpectTheStory(ledger);
  EXPECT_TRUE(ledger.Rounds("other", 1)->empty());
}

TEST(JobLedgerTest, OnAStoreTheSameStorySurvivesTheProcess) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("job_ledger_test_" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove_all(dir);
  {
    auto store = Store::Open(dir);
    ASSERT_THAT(store.status(), IsOk());
    JobLedger ledger(store->get());
    EXPECT_TRUE(ledger.durable());
    TellAJob(ledger);
  }
  auto store = Store::Open(dir);
  ASSERT_THAT(store.status(), IsOk());
  JobLedger reopened(store->get());
  ExpectTheStory(reopened);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fedge::server

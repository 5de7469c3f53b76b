// The Prometheus rendering of a known coordinator state, label escaping, and the
// exporter over a real Coordinator with no job.
#include "server/metrics_exporter.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/coordinator.h"

namespace fedge::server {
namespace {

using ::testing::HasSubstr;

v1::ClientRecord Client(const std::string& id, v1::ClientState state) {
  v1::ClientRecord c;
  c.set_client_id(id);
  c.set_state(state);
  return c;
}

TEST(MetricsExporterTest, RendersAKnownStateExactly) {
  MetricsSnapshot s;
  s.clients = {Client("a", v1::CLIENT_STATE_ACTIVE), Client("b", v1::CLIENT_STATE_ACTIVE),
               Client("c", v1::CLIENT_STATE_LEFT), Client("d", v1::CLIENT_STATE_EXPIRED),
               Client("e", v1::CLIENT_STATE_ACTIVE)};
  s.job_running = true;
  s.rounds_completed_total = 7;
  v1::JobStatus job;
  job.set_job_id("job-1");
  job.set_completed_rounds(3);
  v1::RoundMetrics* m = job.mutable_latest_metrics();
  m->set_round(3);
  m->set_test_accuracy(0.8125);
  m->set_test_loss(0.5);
  m->set_participants(4);
  m->set_dropped(1);
  m->set_bytes_up(123456789012);
  m->set_bytes_down(2048);
  m->set_round_seconds(2.75);
  m->set_epsilon(1.5);
  m->mutable_robustness()->set_norm_bound(0.25);
  m->mutable_robustness()->set_clipped(2);
  m->mutable_robustness()->set_excluded(1);
  s.job = job;
  EXPECT_EQ(RenderPrometheusMetrics(s),
            "# HELP fedge_clients Registered clients by state.\n"
            "# TYPE fedge_clients gauge\n"
            "fedge_clients{state=\"active\"} 3\n"
            "fedge_clients{state=\"left\"} 1\n"
            "fedge_clients{state=\"expired\"} 1\n"
            "# HELP fedge_job_running 1 when a job is running, else 0.\n"
            "# TYPE fedge_job_running gauge\n"
            "fedge_job_running 1\n"
            "# HELP fedge_rounds_completed_total Rounds completed since the coordinator started.\n"
            "# TYPE fedge_rounds_completed_total counter\n"
            "fedge_rounds_completed_total 7\n"
            "# HELP fedge_job_completed_rounds Highest completed round of the running (or most recent) job.\n"
            "# TYPE fedge_job_completed_rounds gauge\n"
            "fedge_job_completed_rounds{job=\"job-1\"} 3\n"
            "# HELP fedge_round_test_accuracy Test accuracy after the latest completed round (0 when not evaluated).\n"
            "# TYPE fedge_round_test_accuracy gauge\n"
            "fedge_round_test_accuracy{job=\"job-1\",round=\"3\"} 0.8125\n"
            "# HELP fedge_round_test_loss Test loss after the latest completed round.\n"
            "# TYPE fedge_round_test_loss gauge\n"
            "fedge_round_test_loss{job=\"job-1\",round=\"3\"} 0.5\n"
            "# HELP fedge_round_participants Updates aggregated in the latest completed round.\n"
            "# TYPE fedge_round_participants gauge\n"
            "fedge_round_participants{job=\"job-1\",round=\"3\"} 4\n"
            "# HELP fedge_round_dropped Sampled clients that sent nothing usable in the latest completed round.\n"
            "# TYPE fedge_round_dropped gauge\n"
            "fedge_round_dropped{job=\"job-1\",round=\"3\"} 1\n"
            "# HELP fedge_round_bytes_up Update payload bytes received in the latest completed round.\n"
            "# TYPE fedge_round_bytes_up gauge\n"
            "fedge_round_bytes_up{job=\"job-1\",round=\"3\"} 123456789012\n"
            "# HELP fedge_round_bytes_down Task payload bytes sent in the latest completed round.\n"
            "# TYPE fedge_round_bytes_down gauge\n"
            "fedge_round_bytes_down{job=\"job-1\",round=\"3\"} 2048\n"
            "# HELP fedge_round_seconds Duration of the latest completed round, open to closed.\n"
            "# TYPE fedge_round_seconds gauge\n"
            "fedge_round_seconds{job=\"job-1\",round=\"3\"} 2.75\n"
            "# HELP fedge_round_epsilon DP epsilon (at the job's delta) after the latest completed round; 0 without DP.\n"
            "# TYPE fedge_round_epsilon gauge\n"
            "fedge_round_epsilon{job=\"job-1\",round=\"3\"} 1.5\n"
            "# HELP fedge_round_norm_bound L2 bound of a full-model update in the latest completed round; 0 = none.\n"
            "# TYPE fedge_round_norm_bound gauge\n"
            "fedge_round_norm_bound{job=\"job-1\",round=\"3\"} 0.25\n"
            "# HELP fedge_round_updates_clipped Updates scaled down to the norm bound in the latest completed round.\n"
            "# TYPE fedge_round_updates_clipped gauge\n"
            "fedge_round_updates_clipped{job=\"job-1\",round=\"3\"} 2\n"
            "# HELP fedge_round_updates_excluded Updates the direction check excluded in the latest completed round.\n"
            "# TYPE fedge_round_updates_excluded gauge\n"
            "fedge_round_updates_excluded{job=\"job-1\",round=\"3\"} 1\n");
}

TEST(MetricsExporterTest, NoRoundGaugesBeforeTheFirstCompletedRound) {
  MetricsSnapshot s;
  s.job_running = true;
  v1::JobStatus job;
  job.set_job_id("j");
  s.job = job;
  const std::string text = RenderPrometheusMetrics(s);
  EXPECT_THAT(text, HasSubstr("fedge_job_completed_rounds{job=\"j\"} 0\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("fedge_round_")));
}

TEST(MetricsExporterTest, EscapesLabelValues) {
  EXPECT_EQ(EscapeLabelValue("plain-id_1"), "plain-id_1");
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  MetricsSnapshot s;
  v1::JobStatus job;
  job.set_job_id("we\"ird\\\n");
  s.job = job;
  EXPECT_THAT(RenderPrometheusMetrics(s),
              HasSubstr("fedge_job_completed_rounds{job=\"we\\\"ird\\\\\\n\"} 0\n"));
}

TEST(MetricsExporterTest, AnIdleCoordinator) {
  CoordinatorOptions o;
  o.enrollment_token = "t";
  auto c = Coordinator::Create(o, nullptr);
  ASSERT_TRUE(c.ok()) << c.status();
  MetricsExporter exporter(c->get());
  const std::string text = exporter.Render();
  EXPECT_THAT(text, HasSubstr("\nfedge_job_running 0\n"));
  EXPECT_THAT(text, HasSubstr("\nfedge_clients{state=\"active\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("\nfedge_rounds_completed_total 0\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("fedge_job_completed_rounds")));
}

}  // namespace
}  // namespace fedge::server

#include "server/metrics_exporter.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace fedge::server {
namespace {

// A float sample value: the shortest of %.15g / %.17g that reads back exactly.
std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  // Prefer the short form when it round-trips.
  char shorter[32];
  std::snprintf(shorter, sizeof(shorter), "%.15g", v);
  if (std::strtod(shorter, nullptr) == v) return shorter;
  return buf;
}

void Family(std::string& out, const char* name, const char* type, const char* help) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

}  // namespace

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string RenderPrometheusMetrics(const MetricsSnapshot& s) {
  std::string out;
  int64_t active = 0, left = 0, expired = 0;
  for (const v1::ClientRecord& c : s.clients) {
    if (c.state() == v1::CLIENT_STATE_ACTIVE) ++active;
    if (c.state() == v1::CLIENT_STATE_LEFT) ++left;
    if (c.state() == v1::CLIENT_STATE_EXPIRED) ++expired;
  }
  Family(out, "fedge_clients", "gauge", "Registered clients by state.");
  absl::StrAppend(&out, "fedge_clients{state=\"active\"} ", active, "\n");
  absl::StrAppend(&out, "fedge_clients{state=\"left\"} ", left, "\n");
  absl::StrAppend(&out, "fedge_clients{state=\"expired\"} ", expired, "\n");

  Family(out, "fedge_job_running", "gauge", "1 when a job is running, else 0.");
  absl::StrAppend(&out, "fedge_job_running ", s.job_running ? 1 : 0, "\n");

  Family(out, "fedge_rounds_completed_total", "counter",
         "Rounds completed since the coordinator started.");
  absl::StrAppend(&out, "fedge_rounds_completed_total ", s.rounds_completed_total, "\n");

  if (!s.job.has_value()) return out;
  const std::string job = absl::StrCat("{job=\"", EscapeLabelValue(s.job->job_id()), "\"}");
  Family(out, "fedge_job_completed_rounds", "gauge",
         "Highest completed round of the running (or most recent) job.");
  absl::StrAppend(&out, "fedge_job_completed_rounds", job, " ", s.job->completed_rounds(), "\n");
  if (s.job->completed_rounds() <= 0 || !s.job->has_latest_metrics()) return out;

  const v1::RoundMetrics& m = s.job->latest_metrics();
  struct Gauge {
    const char* name;
    const char* help;
    std::string value;
  };
  const Gauge gauges[] = {
      {"fedge_round_test_accuracy", "Test accuracy after the latest completed round (0 when not evaluated).",
       Number(m.test_accuracy())},
      {"fedge_round_test_loss", "Test loss after the latest completed round.", Number(m.test_loss())},
      {"fedge_round_participants", "Updates aggregated in the latest completed round.",
       absl::StrCat(m.participants())},
      {"fedge_round_dropped", "Sampled clients that sent nothing usable in the latest completed round.",
       absl::StrCat(m.dropped())},
      {"fedge_round_bytes_up", "Update payload bytes received in the latest completed round.",
       absl::StrCat(m.bytes_up())},
      {"fedge_round_bytes_down", "Task payload bytes sent in the latest completed round.",
       absl::StrCat(m.bytes_down())},
      {"fedge_round_seconds", "Duration of the latest completed round, open to closed.",
       Number(m.round_seconds())},
      {"fedge_round_epsilon", "DP epsilon (at the job's delta) after the latest completed round; 0 without DP.",
       Number(m.epsilon())},
      {"fedge_round_norm_bound", "L2 bound of a full-model update in the latest completed round; 0 = none.",
       Number(m.robustness().norm_bound())},
      {"fedge_round_updates_clipped", "Updates scaled down to the norm bound in the latest completed round.",
       absl::StrCat(m.robustness().clipped())},
      {"fedge_round_updates_excluded", "Updates the direction check excluded in the latest completed round.",
       absl::StrCat(m.robustness().excluded())},
  };
  const std::string labels =
      absl::StrCat("{job=\"", EscapeLabelValue(s.job->job_id()), "\",round=\"", m.round(), "\"}");
  for (const Gauge& g : gauges) {
    Family(out, g.name, "gauge", g.help);
    absl::StrAppend(&out, g.name, labels, " ", g.value, "\n");
  }
  return out;
}

MetricsExporter::MetricsExporter(Coordinator* coordinator) : coordinator_(coordinator) {
  Snapshot();
}

MetricsSnapshot MetricsExporter::Snapshot() {
  MetricsSnapshot s;
  absl::StatusOr<std::vector<v1::ClientRecord>> clients = coordinator_->ListClients();
  if (clients.ok()) s.clients = *std::move(clients);
  const std::optional<std::string> running = coordinator_->running_job();
  s.job_running = running.has_value();
  absl::MutexLock lock(&mu_);
  if (running.has_value() && *running != last_job_) {
    // A new job: its rounds count from 0 (a resumed job's earlier rounds are not new).
    absl::StatusOr<v1::JobStatus> j = coordinator_->GetJob(*running);
    last_job_ = *running;
    last_completed_ = (j.ok() && !primed_) ? j->completed_rounds() : 0;
  }
  primed_ = true;
  if (!last_job_.empty()) {
    absl::StatusOr<v1::JobStatus> j = coordinator_->GetJob(last_job_);
    if (j.ok()) {
      if (j->completed_rounds() > last_completed_) {
        total_ += j->completed_rounds() - last_completed_;
        last_completed_ = j->completed_rounds();
      }
      s.job = *std::move(j);
    }
  }
  s.rounds_completed_total = total_;
  return s;
}

}  // namespace fedge::server

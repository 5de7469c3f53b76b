// Prometheus text exposition (format 0.0.4) of the coordinator's state: registered
// clients by state, the running job, and the latest completed round's metrics. No
// transport here; server/grpc/coordinator_main.cc serves it over HTTP (--metrics-listen).
#ifndef FEDGE_SERVER_METRICS_EXPORTER_H_
#define FEDGE_SERVER_METRICS_EXPORTER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "proto/job.pb.h"
#include "server/coordinator.h"

namespace fedge::server {

// What one scrape shows.
struct MetricsSnapshot {
  std::vector<v1::ClientRecord> clients;
  bool job_running = false;
  // The running job, or else the most recent one this exporter saw running.
  std::optional<v1::JobStatus> job;
  // Rounds completed since the exporter was created (a counter; resets with the process).
  int64_t rounds_completed_total = 0;
};

// Escapes a label value: backslash, double quote and newline (exposition format).
std::string EscapeLabelValue(const std::string& value);

// The text exposition of `snapshot`, one "# HELP" and "# TYPE" per metric family, names
// fedge_*. The fedge_round_* gauges appear only when the job has a completed round.
std::string RenderPrometheusMetrics(const MetricsSnapshot& snapshot);

// Takes snapshots of a Coordinator; remembers the last running job (so its final rounds
// still show once it ends) and counts completed rounds across jobs. Thread-safe.
class MetricsExporter {
 public:
  // Takes a first snapshot: rounds already completed now are not counted.
  explicit MetricsExporter(Coordinator* coordinator);
  MetricsSnapshot Snapshot();
  std::string Render() { return RenderPrometheusMetrics(Snapshot()); }

 private:
  Coordinator* const coordinator_;
  absl::Mutex mu_;
  std::string last_job_ ABSL_GUARDED_BY(mu_);
  int64_t last_completed_ ABSL_GUARDED_BY(mu_) = 0;
  bool primed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t total_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_METRICS_EXPORTER_H_

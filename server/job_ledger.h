// The record of jobs and their rounds (a room of server::Coordinator): the Store when the
// coordinator has one (durable: a round's metrics and model commit in one transaction,
// server/store.h), else memory (the simulator, tests). The coordinator records through
// this one interface and never branches on where the record lives.
//
//   ledger.CreateJob(id, config);  ledger.OpenRound(id, 1, now);
//   ledger.CommitRound(id, metrics, model, keep, participants, strategy_state);
//   ledger.EndJob(id, v1::JOB_STATE_FINISHED, "", running_status, final_model);
//   ledger.Job(id) / Rounds(id, from) / LatestModel(id)       // operators
//
// In memory, a running job's status is the coordinator's (Job answers NOT_FOUND for it
// until it ends); every round record and each ended job's last status and model are kept
// for the process's lifetime.
//
// Thread safety: thread-safe (the store serializes itself; memory has a mutex of its own).
#ifndef FEDGE_SERVER_JOB_LEDGER_H_
#define FEDGE_SERVER_JOB_LEDGER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/job.pb.h"
#include "proto/model.pb.h"
#include "server/store.h"

namespace fedge::server {

class JobLedger {
 public:
  // `store` may be null (memory); otherwise it must outlive the ledger.
  explicit JobLedger(Store* store) : store_(store) {}
  bool durable() const { return store_ != nullptr; }

  absl::Status CreateJob(const std::string& job_id, const v1::JobConfig& config);
  absl::Status OpenRound(const std::string& job_id, int64_t round, absl::Time at);
  // A round that closed below its quorum.
  absl::Status FailRound(const std::string& job_id, int64_t round, absl::Time at);
  // A completed round: its metrics (started/closed times inside), the new model, the
  // participants and the strategy's state (serialized only when durable).
  absl::Status CommitRound(const std::string& job_id, const v1::RoundMetrics& metrics,
                           const v1::ModelProto& model, int keep_checkpoints,
                           std::vector<std::string> participants,
                           const std::function<absl::StatusOr<std::string>()>& strategy_state);
  // The running job ends as `state` (STOPPED by an operator, FINISHED) saying `message`;
  // an `open_round` is abandoned. In memory `running` (its status as the coordinator knows
  // it) and `model` (its final model) are kept; they are not called when durable.
  absl::Status EndJob(const std::string& job_id, v1::JobState state, const std::string& message,
                      std::optional<int64_t> open_round, absl::Time at,
                      const std::function<absl::StatusOr<v1::JobStatus>()>& running,
                      const std::function<v1::ModelProto()>& model);

  // NOT_FOUND for a job the ledger has no record of.
  absl::StatusOr<v1::JobStatus> Job(const std::string& job_id) const;
  absl::StatusOr<std::vector<v1::RoundRecord>> Rounds(const std::string& job_id,
                                                      int64_t from_round) const;
  // The model of the job's last completed round (durable) or of its end (memory).
  absl::StatusOr<v1::ModelProto> LatestModel(const std::string& job_id) const;

 private:
  Store* const store_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, v1::JobStatus> ended_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, v1::ModelProto> models_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::RoundRecord> rounds_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_JOB_LEDGER_H_

#include "server/job_ledger.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace fedge::server {
namespace {

int64_t UnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

}  // namespace

absl::Status JobLedger::CreateJob(const std::string& job_id, const v1::JobConfig& config) {
  if (store_ != nullptr) return store_->CreateJob(job_id, config);
  return absl::OkStatus();
}

absl::Status JobLedger::OpenRound(const std::string& job_id, int64_t round, absl::Time at) {
  if (store_ != nullptr) return store_->OpenRound(job_id, round, UnixMs(at));
  return absl::OkStatus();
}

absl::Status JobLedger::FailRound(const std::string& job_id, int64_t round, absl::Time at) {
  if (store_ != nullptr) {
    return store_->CloseRound(job_id, round, v1::ROUND_STATE_FAILED, UnixMs(at));
  }
  return absl::OkStatus();
}

absl::Status JobLedger::CommitRound(
    const std::string& job_id, const v1::RoundMetrics& m, const v1::ModelProto& model,
    int keep_checkpoints, std::vector<std::string> participants,
    const std::function<absl::StatusOr<std::string>()>& strategy_state) {
  if (store_ != nullptr) {
    std::sort(participants.begin(), participants.end());
    FEDGE_ASSIGN_OR_RETURN(const std::string state, strategy_state());
    return store_->CommitRound(job_id, m.round(), m, model, keep_checkpoints, participants,
                               state);
  }
  v1::RoundRecord r;
  r.set_job_id(job_id);
  r.set_round(m.round());
  r.set_state(v1::ROUND_STATE_COMPLETED);
  r.set_started_unix_ms(m.started_unix_ms());
  r.set_closed_unix_ms(m.closed_unix_ms());
  *r.mutable_metrics() = m;
  absl::MutexLock lock(&mu_);
  rounds_.push_back(std::move(r));
  return absl::OkStatus();
}

absl::Status JobLedger::EndJob(const std::string& job_id, v1::JobState state,
                               const std::string& message, std::optional<int64_t> open_round,
                               absl::Time at,
                               const std::function<absl::StatusOr<v1::JobStatus>()>& running,
                               const std::function<v1::ModelProto()>& model) {
  if (store_ != nullptr) {
    if (open_round.has_value()) {
      FEDGE_RETURN_IF_ERROR(
          store_->CloseRound(job_id, *open_round, v1::ROUND_STATE_ABANDONED, UnixMs(at)));
    }
    return store_->SetJobState(job_id, state, message);
  }
  FEDGE_ASSIGN_OR_RETURN(v1::JobStatus s, running());
  s.set_state(state);
  s.set_message(message);
  s.clear_current_round();
  v1::ModelProto final_model = model();
  absl::MutexLock lock(&mu_);
  ended_[job_id] = std::move(s);
  models_[job_id] = std::move(final_model);
  return absl::OkStatus();
}

absl::StatusOr<v1::JobStatus> JobLedger::Job(const std::string& job_id) const {
  if (store_ != nullptr) return store_->GetJob(job_id);
  absl::MutexLock lock(&mu_);
  auto it = ended_.find(job_id);
  if (it == ended_.end()) {
    return absl::NotFoundError(absl::StrCat("Coordinator: no job '", job_id, "'"));
  }
  return it->second;
}

absl::StatusOr<std::vector<v1::RoundRecord>> JobLedger::Rounds(const std::string& job_id,
                                                               int64_t from_round) const {
  if (store_ != nullptr) return store_->ListRounds(job_id, from_round);
  absl::MutexLock lock(&mu_);
  std::vector<v1::RoundRecord> out;
  for (const v1::RoundRecord& r : rounds_) {
    if (r.job_id() == job_id && r.round() >= from_round) out.push_back(r);
  }
  return out;
}

absl::StatusOr<v1::ModelProto> JobLedger::LatestModel(const std::string& job_id) const {
  if (store_ != nullptr) {
    FEDGE_ASSIGN_OR_RETURN(Checkpoint c, store_->LatestCheckpoint(job_id));
    return std::move(c.model);
  }
  absl::MutexLock lock(&mu_);
  if (auto it = models_.find(job_id); it != models_.end()) return it->second;
  return absl::NotFoundError(absl::StrCat("Coordinator: no model for job '", job_id, "'"));
}

}  // namespace fedge::server

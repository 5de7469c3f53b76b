#include "server/admin_api.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "server/job_config.h"
#include "server/rate_limiter.h"

namespace fedge::server {
namespace {

bool Closed(v1::RoundState s) {
  return s == v1::ROUND_STATE_COMPLETED || s == v1::ROUND_STATE_FAILED;
}

}  // namespace

AdminApi::AdminApi(Coordinator* coordinator, Store* store, AdminLimits limits, AdminAccess access)
    : coordinator_(coordinator), store_(store), limits_(limits), access_(access) {}

absl::Status AdminApi::CheckString(absl::string_view field, const std::string& value) const {
  if (value.size() > limits_.max_string_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("Admin: ", field, " has ", value.size(),
                                                   " bytes, at most ", limits_.max_string_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<Operator> AdminApi::Authenticate(absl::string_view authorization,
                                                absl::string_view peer, OperatorRole role,
                                                absl::string_view call) {
  absl::StatusOr<Operator> op = [&]() -> absl::StatusOr<Operator> {
    if (access_.operators == nullptr) {
      return absl::PermissionDeniedError(
          "Admin: not served on the devices' listener; operators connect to the coordinator's "
          "admin listener (--admin-listen) with an operator token");
    }
    if (access_.loopback_only && !IsLoopbackAddress(peer)) {
      return absl::PermissionDeniedError(
          "Admin: this plaintext admin listener serves loopback peers only");
    }
    std::string token;
    if (!authorization.empty()) {
      absl::string_view value = authorization;
      if (!absl::ConsumePrefix(&value, "Bearer ")) {
        return absl::UnauthenticatedError("Admin: authorization must be 'Bearer <token>'");
      }
      token = std::string(absl::StripAsciiWhitespace(value));
    }
    FEDGE_ASSIGN_OR_RETURN(Operator who, access_.operators->Authenticate(token));
    FEDGE_RETURN_IF_ERROR(Authorize(who, role, call));
    return who;
  }();
  // The first refusals, then one in 1000: enough to see probing, too few to flood the log.
  if (!op.ok()) {
    const int64_t n = refusals_.fetch_add(1) + 1;
    if (n <= 20 || n % 1000 == 0) {
      FEDGE_LOG(WARNING) << "Admin: refused " << call << " from " << peer << " (refusal " << n
                         << "): " << op.status().message();
    }
  }
  return op;
}

absl::StatusOr<std::string> AdminApi::ResolveJob(const std::string& job_id) {
  FEDGE_RETURN_IF_ERROR(CheckString("job_id", job_id));
  if (!job_id.empty()) return job_id;
  if (std::optional<std::string> running = coordinator_->running_job()) return *running;
  if (store_ != nullptr) {
    FEDGE_ASSIGN_OR_RETURN(std::vector<v1::JobStatus> jobs, store_->ListJobs());
    if (!jobs.empty()) return jobs.front().job_id();
  }
  absl::MutexLock lock(&mu_);
  if (!last_started_.empty()) return last_started_;
  return absl::NotFoundError("Admin: no job has been started");
}

absl::StatusOr<v1::StartJobResponse> AdminApi::StartJob(const Operator& op,
                                                        absl::string_view peer,
                                                        const v1::StartJobRequest& request) {
  v1::JobConfig config;
  switch (request.config_source_case()) {
    case v1::StartJobRequest::kConfig:
      config = request.config();
      break;
    case v1::StartJobRequest::kConfigText: {
      if (request.config_text().size() > kMaxJobConfigTextBytes) {
        return absl::InvalidArgumentError(absl::StrCat("Admin: config_text has ",
                                                       request.config_text().size(),
                                                       " bytes, at most ", kMaxJobConfigTextBytes));
      }
      FEDGE_ASSIGN_OR_RETURN(config, ParseJobConfig(request.config_text(), "config_text"));
      break;
    }
    default:
      return absl::InvalidArgumentError("Admin: StartJob needs config or config_text");
  }
  FEDGE_ASSIGN_OR_RETURN(v1::JobConfig validated, ValidateJobConfig(config));
  v1::StartJobResponse response;
  if (request.dry_run()) {
    *response.mutable_config() = std::move(validated);
    return response;
  }
  FEDGE_ASSIGN_OR_RETURN(const std::string id, coordinator_->StartJob(validated));
  {
    absl::MutexLock lock(&mu_);
    last_started_ = id;
  }
  FEDGE_LOG(INFO) << "Admin: operator " << op.name << " (" << peer << ") started job " << id;
  response.set_job_id(id);
  *response.mutable_config() = std::move(validated);
  return response;
}

absl::StatusOr<v1::JobStatus> AdminApi::StopJob(const Operator& op, absl::string_view peer,
                                                const v1::StopJobRequest& request) {
  FEDGE_RETURN_IF_ERROR(CheckString("reason", request.reason()));
  std::string id = request.job_id();
  if (id.empty()) {
    std::optional<std::string> running = coordinator_->running_job();
    if (!running.has_value()) return absl::FailedPreconditionError("Admin: no job is running");
    id = *running;
  }
  FEDGE_RETURN_IF_ERROR(CheckString("job_id", id));
  FEDGE_RETURN_IF_ERROR(coordinator_->StopJob(id));
  // The reason is an operator's text: the log escapes control characters.
  FEDGE_LOG(INFO) << "Admin: operator " << op.name << " (" << peer << ") stopped job " << id
                  << " (" << request.reason() << ")";
  return coordinator_->GetJob(id);
}

absl::StatusOr<v1::JobStatus> AdminApi::GetJob(const std::string& job_id) {
  FEDGE_ASSIGN_OR_RETURN(const std::string id, ResolveJob(job_id));
  return coordinator_->GetJob(id);
}

absl::StatusOr<std::vector<v1::JobStatus>> AdminApi::ListJobs(int limit) {
  limit = limit <= 0 ? 1000 : std::min(limit, 1000);
  std::vector<v1::JobStatus> jobs;
  if (store_ != nullptr) {
    FEDGE_ASSIGN_OR_RETURN(jobs, store_->ListJobs());
    // The running job's status is the coordinator's (the store's copy lags a round).
    for (v1::JobStatus& j : jobs) {
      if (j.state() == v1::JOB_STATE_RUNNING) {
        absl::StatusOr<v1::JobStatus> live = coordinator_->GetJob(j.job_id());
        if (live.ok()) j = *std::move(live);
      }
    }
  } else {
    absl::StatusOr<v1::JobStatus> one = GetJob("");
    if (one.ok()) {
      jobs.push_back(*std::move(one));
    } else if (!absl::IsNotFound(one.status())) {
      return one.status();
    }
  }
  if (static_cast<int>(jobs.size()) > limit) jobs.resize(static_cast<size_t>(limit));
  return jobs;
}

absl::StatusOr<v1::ListRoundsResponse> AdminApi::ListRounds(const v1::ListRoundsRequest& request) {
  FEDGE_ASSIGN_OR_RETURN(const std::string id, ResolveJob(request.job_id()));
  const int64_t from = std::max<int64_t>(1, request.from_round());
  const int limit = request.limit() <= 0 ? 1000 : std::min(request.limit(), 1000);
  FEDGE_ASSIGN_OR_RETURN(std::vector<v1::RoundRecord> rounds, coordinator_->ListRounds(id, from));
  v1::ListRoundsResponse response;
  for (v1::RoundRecord& r : rounds) {
    if (response.rounds_size() >= limit) break;
    *response.add_rounds() = std::move(r);
  }
  return response;
}

absl::StatusOr<v1::ListClientsResponse> AdminApi::ListClients(
    const v1::ListClientsRequest& request) {
  FEDGE_ASSIGN_OR_RETURN(std::vector<v1::ClientRecord> clients, coordinator_->ListClients());
  const int limit = request.limit() <= 0 ? 10000 : std::min(request.limit(), 10000);
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  v1::ListClientsResponse response;
  for (v1::ClientRecord& c : clients) {
    if (response.clients_size() >= limit) break;
    if (c.state() == v1::CLIENT_STATE_ACTIVE &&
        now_ms - c.last_seen_unix_ms() > absl::ToInt64Milliseconds(limits_.liveness_timeout)) {
      c.set_state(v1::CLIENT_STATE_EXPIRED);
    }
    if (!request.include_inactive() && c.state() != v1::CLIENT_STATE_ACTIVE) continue;
    *response.add_clients() = std::move(c);
  }
  return response;
}

absl::Status AdminApi::WatchJob(const v1::WatchJobRequest& request,
                                const std::function<bool(v1::JobEvent)>& send_event,
                                const std::function<bool()>& cancelled) {
  FEDGE_ASSIGN_OR_RETURN(const std::string id, ResolveJob(request.job_id()));
  // Closed rounds already reported, as (round, closed time): a failed round is retried
  // under the same number.
  absl::flat_hash_set<std::pair<int64_t, int64_t>> reported;
  int64_t announced_open = 0;  // round number last sent as round_opened
  int64_t from = 1;            // rounds before this are completed and reported
  bool first = true;
  auto send = [&](v1::JobEvent event) {
    event.set_unix_ms(absl::ToUnixMillis(absl::Now()));
    return send_event(std::move(event));
  };
  while (true) {
    if (cancelled()) return absl::CancelledError("Admin: watch cancelled");
    if (stopping_.load()) return absl::UnavailableError("Admin: the coordinator is shutting down");
    FEDGE_ASSIGN_OR_RETURN(v1::JobStatus status, coordinator_->GetJob(id));
    FEDGE_ASSIGN_OR_RETURN(std::vector<v1::RoundRecord> rounds, coordinator_->ListRounds(id, from));
    bool contiguous = true;
    for (const v1::RoundRecord& r : rounds) {
      if (Closed(r.state()) && reported.insert({r.round(), r.closed_unix_ms()}).second &&
          (!first || (request.replay_history() && r.state() == v1::ROUND_STATE_COMPLETED))) {
        v1::JobEvent e;
        *e.mutable_round_closed() = r;
        if (!send(std::move(e))) return absl::CancelledError("Admin: watcher went away");
        if (announced_open == r.round()) announced_open = 0;
      }
      if (r.state() != v1::ROUND_STATE_COMPLETED) contiguous = false;
      if (contiguous) from = r.round() + 1;
    }
    first = false;
    if (status.current_round() != 0 && status.current_round() != announced_open) {
      announced_open = status.current_round();
      v1::JobEvent e;
      v1::RoundRecord* r = e.mutable_round_opened();
      r->set_job_id(id);
      r->set_round(status.current_round());
      r->set_state(v1::ROUND_STATE_OPEN);
      if (!send(std::move(e))) return absl::CancelledError("Admin: watcher went away");
    }
    if (status.state() != v1::JOB_STATE_RUNNING) {
      v1::JobEvent e;
      *e.mutable_job_changed() = std::move(status);
      send(std::move(e));
      return absl::OkStatus();
    }
    absl::SleepFor(limits_.watch_interval);
  }
}

absl::StatusOr<ExportedModel> AdminApi::ExportModel(const v1::ExportModelRequest& request) {
  ExportedModel out;
  FEDGE_ASSIGN_OR_RETURN(out.job_id, ResolveJob(request.job_id()));
  FEDGE_ASSIGN_OR_RETURN(const v1::JobStatus status, coordinator_->GetJob(out.job_id));
  out.round = request.round();
  if (out.round < 0 || out.round > status.completed_rounds()) {
    return absl::NotFoundError(absl::StrCat("Admin: job ", out.job_id, " has no round ",
                                            out.round, " (", status.completed_rounds(),
                                            " completed)"));
  }
  if (out.round == 0 || out.round == status.completed_rounds()) {
    out.round = status.completed_rounds();
    FEDGE_ASSIGN_OR_RETURN(out.model, coordinator_->ExportModel(out.job_id));
  } else if (store_ != nullptr) {
    FEDGE_ASSIGN_OR_RETURN(Checkpoint c, store_->GetCheckpoint(out.job_id, out.round));
    out.model = std::move(c.model);
  } else {
    return absl::NotFoundError(
        absl::StrCat("Admin: no checkpoint of round ", out.round, " (no store)"));
  }
  return out;
}

absl::StatusOr<v1::CreateEnrollmentTokenResponse> AdminApi::CreateEnrollmentToken(
    const Operator& op, const v1::CreateEnrollmentTokenRequest& request) {
  FEDGE_ASSIGN_OR_RETURN(v1::CreateEnrollmentTokenResponse created,
                         coordinator_->enrollment().Create(request));
  FEDGE_LOG(INFO) << "Admin: operator " << op.name << " created enrollment token "
                  << created.record().name() << " (max uses " << created.record().max_uses()
                  << ", expires " << created.record().expires_unix_ms() << ")";
  return created;
}

absl::StatusOr<v1::ListEnrollmentTokensResponse> AdminApi::ListEnrollmentTokens() {
  FEDGE_ASSIGN_OR_RETURN(std::vector<v1::EnrollmentTokenRecord> all,
                         coordinator_->enrollment().List());
  v1::ListEnrollmentTokensResponse response;
  for (v1::EnrollmentTokenRecord& r : all) *response.add_tokens() = std::move(r);
  return response;
}

absl::StatusOr<v1::EnrollmentTokenRecord> AdminApi::RevokeEnrollmentToken(
    const Operator& op, const v1::RevokeEnrollmentTokenRequest& request) {
  FEDGE_RETURN_IF_ERROR(CheckString("name", request.name()));
  FEDGE_ASSIGN_OR_RETURN(v1::EnrollmentTokenRecord revoked,
                         coordinator_->enrollment().Revoke(request.name()));
  FEDGE_LOG(INFO) << "Admin: operator " << op.name << " revoked enrollment token "
                  << request.name();
  return revoked;
}

absl::StatusOr<v1::RevokeDeviceResponse> AdminApi::RevokeDevice(
    const Operator& op, const v1::RevokeDeviceRequest& request) {
  FEDGE_RETURN_IF_ERROR(CheckString("client_id", request.client_id()));
  FEDGE_RETURN_IF_ERROR(CheckString("reason", request.reason()));
  v1::RevokeDeviceResponse response;
  FEDGE_ASSIGN_OR_RETURN(*response.mutable_record(),
                         coordinator_->RevokeDevice(request.client_id()));
  FEDGE_LOG(INFO) << "Admin: operator " << op.name << " revoked device " << request.client_id()
                  << " (" << request.reason() << ")";
  return response;
}

}  // namespace fedge::server

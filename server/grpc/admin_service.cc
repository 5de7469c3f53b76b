#include "server/grpc/admin_service.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "model/payload.h"
#include "server/grpc/status.h"
#include "server/job_config.h"
#include "server/rate_limiter.h"

namespace fedge::server {
namespace {

using grpc_adapter::ToGrpcStatus;

absl::Status CheckString(absl::string_view field, const std::string& value, size_t max) {
  if (value.size() > max) {
    return absl::InvalidArgumentError(absl::StrCat("AdminService: ", field, " has ", value.size(),
                                                   " bytes, at most ", max));
  }
  return absl::OkStatus();
}

bool Closed(v1::RoundState s) {
  return s == v1::ROUND_STATE_COMPLETED || s == v1::ROUND_STATE_FAILED;
}

}  // namespace

AdminServiceImpl::AdminServiceImpl(Coordinator* coordinator, Store* store, ServiceLimits limits,
                                   AdminAccess access)
    : coordinator_(coordinator), store_(store), limits_(limits), access_(access) {}

absl::StatusOr<Operator> AdminServiceImpl::Authenticate(grpc::ServerContext* context,
                                                        OperatorRole role,
                                                        absl::string_view call) {
  absl::StatusOr<Operator> op = [&]() -> absl::StatusOr<Operator> {
    if (access_.operators == nullptr) {
      return absl::PermissionDeniedError(
          "Admin: not served on the devices' listener; operators connect to the coordinator's "
          "admin listener (--admin-listen) with an operator token");
    }
    if (access_.loopback_only && !IsLoopbackAddress(context->peer())) {
      return absl::PermissionDeniedError(
          "Admin: this plaintext admin listener serves loopback peers only");
    }
    std::string token;
    const auto& metadata = context->client_metadata();
    if (auto it = metadata.find("authorization"); it != metadata.end()) {
      absl::string_view value(it->second.data(), it->second.size());
      if (!absl::ConsumePrefix(&value, "Bearer ")) {
        return absl::UnauthenticatedError("Admin: authorization metadata must be 'Bearer <token>'");
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
      FEDGE_LOG(WARNING) << "AdminService: refused " << call << " from " << context->peer()
                         << " (refusal " << n << "): " << op.status().message();
    }
  }
  return op;
}

absl::StatusOr<std::string> AdminServiceImpl::ResolveJob(const std::string& job_id) {
  FEDGE_RETURN_IF_ERROR(CheckString("job_id", job_id, limits_.max_string_bytes));
  if (!job_id.empty()) return job_id;
  if (std::optional<std::string> running = coordinator_->running_job()) return *running;
  if (store_ != nullptr) {
    FEDGE_ASSIGN_OR_RETURN(std::vector<v1::JobStatus> jobs, store_->ListJobs());
    if (!jobs.empty()) return jobs.front().job_id();
  }
  absl::MutexLock lock(&mu_);
  if (!last_started_.empty()) return last_started_;
  return absl::NotFoundError("AdminService: no job has been started");
}

grpc::Status AdminServiceImpl::StartJob(grpc::ServerContext* context,
                                        const v1::StartJobRequest* request,
                                        v1::StartJobResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kOperator, "StartJob");
  if (!op.ok()) return ToGrpcStatus(op.status());
  v1::JobConfig config;
  switch (request->config_source_case()) {
    case v1::StartJobRequest::kConfig:
      config = request->config();
      break;
    case v1::StartJobRequest::kConfigText: {
      if (request->config_text().size() > kMaxJobConfigTextBytes) {
        return ToGrpcStatus(absl::InvalidArgumentError(
            absl::StrCat("AdminService: config_text has ", request->config_text().size(),
                         " bytes, at most ", kMaxJobConfigTextBytes)));
      }
      absl::StatusOr<v1::JobConfig> parsed = ParseJobConfig(request->config_text(), "config_text");
      if (!parsed.ok()) return ToGrpcStatus(parsed.status());
      config = std::move(parsed).value();
      break;
    }
    default:
      return ToGrpcStatus(
          absl::InvalidArgumentError("AdminService: StartJob needs config or config_text"));
  }
  absl::StatusOr<v1::JobConfig> validated = ValidateJobConfig(config);
  if (!validated.ok()) return ToGrpcStatus(validated.status());
  if (request->dry_run()) {
    *response->mutable_config() = std::move(validated).value();
    return grpc::Status::OK;
  }
  absl::StatusOr<std::string> id = coordinator_->StartJob(*validated);
  if (!id.ok()) return ToGrpcStatus(id.status());
  {
    absl::MutexLock lock(&mu_);
    last_started_ = *id;
  }
  FEDGE_LOG(INFO) << "AdminService: operator " << op->name << " (" << context->peer()
                  << ") started job " << *id;
  response->set_job_id(*id);
  *response->mutable_config() = std::move(validated).value();
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::StopJob(grpc::ServerContext* context,
                                       const v1::StopJobRequest* request,
                                       v1::StopJobResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kOperator, "StopJob");
  if (!op.ok()) return ToGrpcStatus(op.status());
  absl::Status s = CheckString("reason", request->reason(), limits_.max_string_bytes);
  if (!s.ok()) return ToGrpcStatus(s);
  std::string id = request->job_id();
  if (id.empty()) {
    std::optional<std::string> running = coordinator_->running_job();
    if (!running.has_value()) {
      return ToGrpcStatus(absl::FailedPreconditionError("AdminService: no job is running"));
    }
    id = *running;
  }
  s = CheckString("job_id", id, limits_.max_string_bytes);
  if (s.ok()) s = coordinator_->StopJob(id);
  if (!s.ok()) return ToGrpcStatus(s);
  FEDGE_LOG(INFO) << "AdminService: operator " << op->name << " (" << context->peer()
                  << ") stopped job " << id << " ("
                  << request->reason() << ")";
  absl::StatusOr<v1::JobStatus> status = coordinator_->GetJob(id);
  if (status.ok()) *response->mutable_status() = std::move(status).value();
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::GetJob(grpc::ServerContext* context,
                                      const v1::GetJobRequest* request, v1::JobStatus* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kViewer, "GetJob");
  if (!op.ok()) return ToGrpcStatus(op.status());
  absl::StatusOr<std::string> id = ResolveJob(request->job_id());
  if (!id.ok()) return ToGrpcStatus(id.status());
  absl::StatusOr<v1::JobStatus> status = coordinator_->GetJob(*id);
  if (!status.ok()) return ToGrpcStatus(status.status());
  *response = std::move(status).value();
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::ListRounds(grpc::ServerContext* context,
                                          const v1::ListRoundsRequest* request,
                                          v1::ListRoundsResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kViewer, "ListRounds");
  if (!op.ok()) return ToGrpcStatus(op.status());
  absl::StatusOr<std::string> id = ResolveJob(request->job_id());
  if (!id.ok()) return ToGrpcStatus(id.status());
  const int64_t from = std::max<int64_t>(1, request->from_round());
  const int limit = request->limit() <= 0 ? 1000 : std::min(request->limit(), 1000);
  absl::StatusOr<std::vector<v1::RoundRecord>> rounds = coordinator_->ListRounds(*id, from);
  if (!rounds.ok()) return ToGrpcStatus(rounds.status());
  for (v1::RoundRecord& r : *rounds) {
    if (response->rounds_size() >= limit) break;
    *response->add_rounds() = std::move(r);
  }
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::WatchJob(grpc::ServerContext* context,
                                        const v1::WatchJobRequest* request,
                                        grpc::ServerWriter<v1::JobEvent>* writer) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kViewer, "WatchJob");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return ToGrpcStatus(WatchJobImpl(context, *request, writer));
}

absl::Status AdminServiceImpl::WatchJobImpl(grpc::ServerContext* context,
                                            const v1::WatchJobRequest& request,
                                            grpc::ServerWriter<v1::JobEvent>* writer) {
  FEDGE_ASSIGN_OR_RETURN(const std::string id, ResolveJob(request.job_id()));
  // Closed rounds already reported, as (round, closed time): a failed round is retried
  // under the same number.
  absl::flat_hash_set<std::pair<int64_t, int64_t>> reported;
  int64_t announced_open = 0;  // round number last sent as round_opened
  int64_t from = 1;            // rounds before this are completed and reported
  bool first = true;
  auto send = [&](v1::JobEvent event) {
    event.set_unix_ms(absl::ToUnixMillis(absl::Now()));
    return writer->Write(event);
  };
  while (true) {
    if (context->IsCancelled()) return absl::CancelledError("AdminService: watch cancelled");
    if (stopping_.load()) return absl::UnavailableError("AdminService: the coordinator is shutting down");
    FEDGE_ASSIGN_OR_RETURN(v1::JobStatus status, coordinator_->GetJob(id));
    FEDGE_ASSIGN_OR_RETURN(std::vector<v1::RoundRecord> rounds, coordinator_->ListRounds(id, from));
    bool contiguous = true;
    for (const v1::RoundRecord& r : rounds) {
      if (Closed(r.state()) && reported.insert({r.round(), r.closed_unix_ms()}).second &&
          (!first || (request.replay_history() && r.state() == v1::ROUND_STATE_COMPLETED))) {
        v1::JobEvent e;
        *e.mutable_round_closed() = r;
        if (!send(std::move(e))) return absl::CancelledError("AdminService: watcher went away");
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
      if (!send(std::move(e))) return absl::CancelledError("AdminService: watcher went away");
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

grpc::Status AdminServiceImpl::ListClients(grpc::ServerContext* context,
                                           const v1::ListClientsRequest* request,
                                           v1::ListClientsResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kViewer, "ListClients");
  if (!op.ok()) return ToGrpcStatus(op.status());
  absl::StatusOr<std::vector<v1::ClientRecord>> clients = coordinator_->ListClients();
  if (!clients.ok()) return ToGrpcStatus(clients.status());
  const int limit = request->limit() <= 0 ? 10000 : std::min(request->limit(), 10000);
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  for (v1::ClientRecord& c : *clients) {
    if (response->clients_size() >= limit) break;
    if (c.state() == v1::CLIENT_STATE_ACTIVE &&
        now_ms - c.last_seen_unix_ms() > absl::ToInt64Milliseconds(limits_.liveness_timeout)) {
      c.set_state(v1::CLIENT_STATE_EXPIRED);
    }
    if (!request->include_inactive() && c.state() != v1::CLIENT_STATE_ACTIVE) continue;
    *response->add_clients() = std::move(c);
  }
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::ExportModel(grpc::ServerContext* context,
                                           const v1::ExportModelRequest* request,
                                           grpc::ServerWriter<v1::ExportChunk>* writer) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kOperator, "ExportModel");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return ToGrpcStatus(ExportModelImpl(*request, writer));
}

absl::Status AdminServiceImpl::ExportModelImpl(const v1::ExportModelRequest& request,
                                               grpc::ServerWriter<v1::ExportChunk>* writer) {
  FEDGE_ASSIGN_OR_RETURN(const std::string id, ResolveJob(request.job_id()));
  FEDGE_ASSIGN_OR_RETURN(const v1::JobStatus status, coordinator_->GetJob(id));
  v1::ModelProto model;
  int64_t round = request.round();
  if (round < 0 || round > status.completed_rounds()) {
    return absl::NotFoundError(absl::StrCat("AdminService: job ", id, " has no round ", round,
                                            " (", status.completed_rounds(), " completed)"));
  }
  if (round == 0 || round == status.completed_rounds()) {
    round = status.completed_rounds();
    FEDGE_ASSIGN_OR_RETURN(model, coordinator_->ExportModel(id));
  } else if (store_ != nullptr) {
    FEDGE_ASSIGN_OR_RETURN(Checkpoint c, store_->GetCheckpoint(id, round));
    model = std::move(c.model);
  } else {
    return absl::NotFoundError(
        absl::StrCat("AdminService: no checkpoint of round ", round, " (no store)"));
  }
  const std::string bytes = model.SerializeAsString();
  v1::ExportChunk msg;
  v1::ExportHeader* h = msg.mutable_header();
  h->set_job_id(id);
  h->set_round(round);
  *h->mutable_spec() = model.spec();
  h->set_total_bytes(static_cast<int64_t>(bytes.size()));
  if (!writer->Write(msg)) return absl::CancelledError("AdminService: export reader went away");
  const bool sent = model::ForEachChunk(bytes, limits_.chunk_bytes, [&](const v1::DataChunk& c) {
    msg.Clear();
    *msg.mutable_data() = c;
    return writer->Write(msg);
  });
  if (!sent) return absl::CancelledError("AdminService: export reader went away");
  msg.Clear();
  *msg.mutable_trailer() = model::MakeTrailer(bytes);
  if (!writer->Write(msg)) return absl::CancelledError("AdminService: export reader went away");
  return absl::OkStatus();
}

grpc::Status AdminServiceImpl::CreateEnrollmentToken(
    grpc::ServerContext* context, const v1::CreateEnrollmentTokenRequest* request,
    v1::CreateEnrollmentTokenResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kOperator, "CreateEnrollmentToken");
  if (!op.ok()) return ToGrpcStatus(op.status());
  absl::StatusOr<v1::CreateEnrollmentTokenResponse> created =
      coordinator_->enrollment().Create(*request);
  if (!created.ok()) return ToGrpcStatus(created.status());
  FEDGE_LOG(INFO) << "AdminService: operator " << op->name << " created enrollment token "
                  << created->record().name() << " (max uses " << created->record().max_uses()
                  << ", expires " << created->record().expires_unix_ms() << ")";
  *response = *std::move(created);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::ListEnrollmentTokens(grpc::ServerContext* context,
                                                    const v1::ListEnrollmentTokensRequest*,
                                                    v1::ListEnrollmentTokensResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kViewer, "ListEnrollmentTokens");
  if (!op.ok()) return ToGrpcStatus(op.status());
  absl::StatusOr<std::vector<v1::EnrollmentTokenRecord>> all = coordinator_->enrollment().List();
  if (!all.ok()) return ToGrpcStatus(all.status());
  for (v1::EnrollmentTokenRecord& r : *all) *response->add_tokens() = std::move(r);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::RevokeEnrollmentToken(grpc::ServerContext* context,
                                                     const v1::RevokeEnrollmentTokenRequest* request,
                                                     v1::EnrollmentTokenRecord* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kOperator, "RevokeEnrollmentToken");
  if (!op.ok()) return ToGrpcStatus(op.status());
  absl::Status s = CheckString("name", request->name(), limits_.max_string_bytes);
  if (!s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<v1::EnrollmentTokenRecord> revoked = coordinator_->enrollment().Revoke(request->name());
  if (!revoked.ok()) return ToGrpcStatus(revoked.status());
  FEDGE_LOG(INFO) << "AdminService: operator " << op->name << " revoked enrollment token "
                  << request->name();
  *response = *std::move(revoked);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::RevokeDevice(grpc::ServerContext* context,
                                            const v1::RevokeDeviceRequest* request,
                                            v1::RevokeDeviceResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kOperator, "RevokeDevice");
  if (!op.ok()) return ToGrpcStatus(op.status());
  absl::Status s = CheckString("client_id", request->client_id(), limits_.max_string_bytes);
  if (s.ok()) s = CheckString("reason", request->reason(), limits_.max_string_bytes);
  if (!s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<v1::ClientRecord> record = coordinator_->RevokeDevice(request->client_id());
  if (!record.ok()) return ToGrpcStatus(record.status());
  FEDGE_LOG(INFO) << "AdminService: operator " << op->name << " revoked device "
                  << request->client_id() << " (" << request->reason() << ")";
  *response->mutable_record() = *std::move(record);
  return grpc::Status::OK;
}

}  // namespace fedge::server

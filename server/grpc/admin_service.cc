#include "server/grpc/admin_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/payload.h"
#include "server/grpc/status.h"

namespace fedge::server {

AdminLimits AdminLimitsOf(const ServiceLimits& l) {
  AdminLimits a;
  a.max_string_bytes = l.max_string_bytes;
  a.liveness_timeout = l.liveness_timeout;
  a.watch_interval = l.watch_interval;
  return a;
}

namespace {

using grpc_adapter::ToGrpcStatus;

// Answers with `result`'s value, or its error.
template <typename T, typename R>
grpc::Status Reply(absl::StatusOr<T> result, R* response) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace

AdminServiceImpl::AdminServiceImpl(Coordinator* coordinator, Store* store, ServiceLimits limits,
                                   AdminAccess access)
    : api_(coordinator, store, AdminLimitsOf(limits), access), chunk_bytes_(limits.chunk_bytes) {}

absl::StatusOr<Operator> AdminServiceImpl::Authenticate(grpc::ServerContext* context,
                                                        OperatorRole role,
                                                        absl::string_view call) {
  absl::string_view authorization;
  const auto& metadata = context->client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization = absl::string_view(it->second.data(), it->second.size());
  }
  return api_.Authenticate(authorization, context->peer(), role, call);
}

grpc::Status AdminServiceImpl::StartJob(grpc::ServerContext* context,
                                        const v1::StartJobRequest* request,
                                        v1::StartJobResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kOperator, "StartJob");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return Reply(api_.StartJob(*op, context->peer(), *request), response);
}

grpc::Status AdminServiceImpl::StopJob(grpc::ServerContext* context,
                                       const v1::StopJobRequest* request,
                                       v1::StopJobResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kOperator, "StopJob");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return Reply(api_.StopJob(*op, context->peer(), *request), response->mutable_status());
}

grpc::Status AdminServiceImpl::GetJob(grpc::ServerContext* context,
                                      const v1::GetJobRequest* request, v1::JobStatus* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kViewer, "GetJob");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return Reply(api_.GetJob(request->job_id()), response);
}

grpc::Status AdminServiceImpl::ListRounds(grpc::ServerContext* context,
                                          const v1::ListRoundsRequest* request,
                                          v1::ListRoundsResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kViewer, "ListRounds");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return Reply(api_.ListRounds(*request), response);
}

grpc::Status AdminServiceImpl::WatchJob(grpc::ServerContext* context,
                                        const v1::WatchJobRequest* request,
                                        grpc::ServerWriter<v1::JobEvent>* writer) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kViewer, "WatchJob");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return ToGrpcStatus(api_.WatchJob(
      *request, [writer](v1::JobEvent e) { return writer->Write(e); },
      [context] { return context->IsCancelled(); }));
}

grpc::Status AdminServiceImpl::ListClients(grpc::ServerContext* context,
                                           const v1::ListClientsRequest* request,
                                           v1::ListClientsResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kViewer, "ListClients");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return Reply(api_.ListClients(*request), response);
}

grpc::Status AdminServiceImpl::ExportModel(grpc::ServerContext* context,
                                           const v1::ExportModelRequest* request,
                                           grpc::ServerWriter<v1::ExportChunk>* writer) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kOperator, "ExportModel");
  if (!op.ok()) return ToGrpcStatus(op.status());
  absl::StatusOr<ExportedModel> exported = api_.ExportModel(*request);
  if (!exported.ok()) return ToGrpcStatus(exported.status());
  const std::string bytes = exported->model.SerializeAsString();
  v1::ExportChunk msg;
  v1::ExportHeader* h = msg.mutable_header();
  h->set_job_id(exported->job_id);
  h->set_round(exported->round);
  *h->mutable_spec() = exported->model.spec();
  h->set_total_bytes(static_cast<int64_t>(bytes.size()));
  const absl::Status gone = absl::CancelledError("AdminService: export reader went away");
  if (!writer->Write(msg)) return ToGrpcStatus(gone);
  const bool sent = model::ForEachChunk(bytes, chunk_bytes_, [&](const v1::DataChunk& c) {
    msg.Clear();
    *msg.mutable_data() = c;
    return writer->Write(msg);
  });
  if (!sent) return ToGrpcStatus(gone);
  msg.Clear();
  *msg.mutable_trailer() = model::MakeTrailer(bytes);
  if (!writer->Write(msg)) return ToGrpcStatus(gone);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::CreateEnrollmentToken(
    grpc::ServerContext* context, const v1::CreateEnrollmentTokenRequest* request,
    v1::CreateEnrollmentTokenResponse* response) {
  absl::StatusOr<Operator> op =
      Authenticate(context, OperatorRole::kOperator, "CreateEnrollmentToken");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return Reply(api_.CreateEnrollmentToken(*op, *request), response);
}

grpc::Status AdminServiceImpl::ListEnrollmentTokens(grpc::ServerContext* context,
                                                    const v1::ListEnrollmentTokensRequest*,
                                                    v1::ListEnrollmentTokensResponse* response) {
  absl::StatusOr<Operator> op =
      Authenticate(context, OperatorRole::kViewer, "ListEnrollmentTokens");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return Reply(api_.ListEnrollmentTokens(), response);
}

grpc::Status AdminServiceImpl::RevokeEnrollmentToken(
    grpc::ServerContext* context, const v1::RevokeEnrollmentTokenRequest* request,
    v1::EnrollmentTokenRecord* response) {
  absl::StatusOr<Operator> op =
      Authenticate(context, OperatorRole::kOperator, "RevokeEnrollmentToken");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return Reply(api_.RevokeEnrollmentToken(*op, *request), response);
}

grpc::Status AdminServiceImpl::RevokeDevice(grpc::ServerContext* context,
                                            const v1::RevokeDeviceRequest* request,
                                            v1::RevokeDeviceResponse* response) {
  absl::StatusOr<Operator> op = Authenticate(context, OperatorRole::kOperator, "RevokeDevice");
  if (!op.ok()) return ToGrpcStatus(op.status());
  return Reply(api_.RevokeDevice(*op, *request), response);
}

}  // namespace fedge::server

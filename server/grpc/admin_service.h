// The operator-facing gRPC service (proto/admin.proto): an adapter over server::AdminApi
// (server/admin_api.h), which authenticates every call (the `authorization: Bearer <token>`
// metadata, then the role the call needs) and does its work. This file only moves messages
// and statuses between gRPC and the API; see coordinator_service.h for the device side and
// the limits.
//
// Thread safety: thread-safe.
#ifndef FEDGE_SERVER_GRPC_ADMIN_SERVICE_H_
#define FEDGE_SERVER_GRPC_ADMIN_SERVICE_H_

#include <atomic>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/admin.grpc.pb.h"
#include "server/admin_api.h"
#include "server/coordinator.h"
#include "server/grpc/coordinator_service.h"
#include "server/operator_tokens.h"
#include "server/store.h"

namespace fedge::server {

// The operators' API's limits from a listener's (strings, liveness, the watch interval).
AdminLimits AdminLimitsOf(const ServiceLimits& limits);

class AdminServiceImpl final : public v1::Admin::Service {
 public:
  // `coordinator`, `store` (may be null) and access.operators must outlive the service.
  AdminServiceImpl(Coordinator* coordinator, Store* store, ServiceLimits limits,
                   AdminAccess access);

  // WatchJob streams end at their next poll (graceful shutdown).
  void BeginShutdown() { api_.BeginShutdown(); }

  grpc::Status StartJob(grpc::ServerContext* context, const v1::StartJobRequest* request,
                        v1::StartJobResponse* response) override;
  grpc::Status StopJob(grpc::ServerContext* context, const v1::StopJobRequest* request,
                       v1::StopJobResponse* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::JobStatus* response) override;
  grpc::Status ListRounds(grpc::ServerContext* context, const v1::ListRoundsRequest* request,
                          v1::ListRoundsResponse* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status ListClients(grpc::ServerContext* context, const v1::ListClientsRequest* request,
                           v1::ListClientsResponse* response) override;
  grpc::Status ExportModel(grpc::ServerContext* context, const v1::ExportModelRequest* request,
                           grpc::ServerWriter<v1::ExportChunk>* writer) override;
  grpc::Status CreateEnrollmentToken(grpc::ServerContext* context,
                                     const v1::CreateEnrollmentTokenRequest* request,
                                     v1::CreateEnrollmentTokenResponse* response) override;
  grpc::Status ListEnrollmentTokens(grpc::ServerContext* context,
                                    const v1::ListEnrollmentTokensRequest* request,
                                    v1::ListEnrollmentTokensResponse* response) override;
  grpc::Status RevokeEnrollmentToken(grpc::ServerContext* context,
                                     const v1::RevokeEnrollmentTokenRequest* request,
                                     v1::EnrollmentTokenRecord* response) override;
  grpc::Status RevokeDevice(grpc::ServerContext* context, const v1::RevokeDeviceRequest* request,
                            v1::RevokeDeviceResponse* response) override;

 private:
  // The calling operator (AdminApi::Authenticate with the call's metadata and peer).
  absl::StatusOr<Operator> Authenticate(grpc::ServerContext* context, OperatorRole role,
                                        absl::string_view call);

  AdminApi api_;
  const int32_t chunk_bytes_;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_GRPC_ADMIN_SERVICE_H_

// The operator-facing gRPC service (proto/admin.proto) over server::Coordinator; see
// coordinator_service.h for the device side and the limits.
//
// Every call first authenticates its caller: an operator token in the metadata
// `authorization: Bearer <token>` (operator_tokens.h), then the role the call needs —
// viewer for GetJob, ListRounds, WatchJob, ListClients and ListEnrollmentTokens; operator
// for StartJob (dry runs too), StopJob, ExportModel, CreateEnrollmentToken,
// RevokeEnrollmentToken and RevokeDevice. No token: UNAUTHENTICATED; a token that is not an
// operator's (a device's enrollment or session token), a revoked one, or too low a role:
// PERMISSION_DENIED. A service built without operator tokens (the copy registered on the
// devices' listener) refuses every call with PERMISSION_DENIED: devices are never operators.
// With `loopback_only`, calls from a peer that is not on loopback are refused too (a
// plaintext admin listener).
//
// Job ids: an empty job_id means the running job, else the most recently created one
// (from the Store when there is one, else the last job this service started).
// ExportModel of round 0 (or of the latest completed round) sends the job's current
// central model; an older round needs the Store's checkpoint of that round.
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
#include "server/coordinator.h"
#include "server/grpc/coordinator_service.h"
#include "server/operator_tokens.h"
#include "server/store.h"

namespace fedge::server {

// Who may call: the operators' tokens (null: nobody, the devices' listener) and whether
// only loopback peers may connect.
struct AdminAccess {
  OperatorTokens* operators = nullptr;
  bool loopback_only = false;
};

class AdminServiceImpl final : public v1::Admin::Service {
 public:
  // `coordinator`, `store` (may be null) and access.operators must outlive the service.
  AdminServiceImpl(Coordinator* coordinator, Store* store, ServiceLimits limits,
                   AdminAccess access);

  // WatchJob streams end at their next poll (graceful shutdown).
  void BeginShutdown() { stopping_.store(true); }

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
  // The calling operator, when it may make `call` (which needs `role`); the errors above.
  // Logs refusals (with the peer) so that an operator sees probing.
  absl::StatusOr<Operator> Authenticate(grpc::ServerContext* context, OperatorRole role,
                                        absl::string_view call);
  // `job_id`, or the running job, or the most recent one; NOT_FOUND when there is none.
  absl::StatusOr<std::string> ResolveJob(const std::string& job_id);
  absl::Status WatchJobImpl(grpc::ServerContext* context, const v1::WatchJobRequest& request,
                            grpc::ServerWriter<v1::JobEvent>* writer);
  absl::Status ExportModelImpl(const v1::ExportModelRequest& request,
                               grpc::ServerWriter<v1::ExportChunk>* writer);

  Coordinator* const coordinator_;
  Store* const store_;
  const ServiceLimits limits_;
  const AdminAccess access_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> refusals_{0};
  absl::Mutex mu_;
  std::string last_started_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_GRPC_ADMIN_SERVICE_H_

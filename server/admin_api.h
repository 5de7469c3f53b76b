// The operators' API, transport-free: who may make each call (operator tokens and roles,
// operator_tokens.h) and what each call does over the Coordinator and the Store. Two
// adapters serve it: the Admin gRPC service (server/grpc/admin_service.h, for fedgectl and
// fedge.Admin) and the web console's JSON API (server/grpc/console_http.h), so both check
// credentials, roles and bounds in this one place.
//
//   AdminApi api(coordinator, store, limits, AdminAccess{&tokens, /*loopback_only=*/false});
//   FEDGE_ASSIGN_OR_RETURN(Operator op, api.Authenticate("Bearer fedge-op-…", peer,
//                                                        OperatorRole::kOperator, "StopJob"));
//   FEDGE_ASSIGN_OR_RETURN(v1::JobStatus s, api.StopJob(op, peer, request));
//
// Authenticate: `authorization` is the caller's `authorization` metadata or header, which
// must be "Bearer <token>". No token: UNAUTHENTICATED; a token that is not an operator's (a
// device's enrollment or session token), a revoked one, or too low a role:
// PERMISSION_DENIED. An API built without operator tokens (the copy on the devices'
// listener) refuses every call with PERMISSION_DENIED: devices are never operators. With
// `loopback_only`, a peer that is not on loopback is refused too (plaintext listeners).
// Refusals are logged (the first 20, then one in 1000) with the peer.
//
// Roles: viewer for GetJob, ListJobs, ListRounds, WatchJob, ListClients and
// ListEnrollmentTokens; operator for StartJob (dry runs too), StopJob, ExportModel,
// CreateEnrollmentToken, RevokeEnrollmentToken and RevokeDevice. Each call below is made
// after Authenticate with the role it needs; the ones taking an Operator log its name.
//
// Job ids: an empty job_id means the running job, else the most recently created one (from
// the Store when there is one, else the last job this API started). Strings from the
// network longer than limits.max_string_bytes are INVALID_ARGUMENT.
//
// Thread safety: thread-safe.
#ifndef FEDGE_SERVER_ADMIN_API_H_
#define FEDGE_SERVER_ADMIN_API_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/admin.pb.h"
#include "proto/job.pb.h"
#include "proto/model.pb.h"
#include "server/coordinator.h"
#include "server/operator_tokens.h"
#include "server/store.h"

namespace fedge::server {

// Who may call: the operators' tokens (null: nobody, the devices' listener) and whether
// only loopback peers may connect.
struct AdminAccess {
  OperatorTokens* operators = nullptr;
  bool loopback_only = false;
};

struct AdminLimits {
  size_t max_string_bytes = 1024;
  // A device silent this long lists as EXPIRED.
  absl::Duration liveness_timeout = absl::Seconds(60);
  // How often WatchJob polls the job.
  absl::Duration watch_interval = absl::Milliseconds(200);
};

// A checkpointed model for ExportModel.
struct ExportedModel {
  std::string job_id;
  int64_t round = 0;
  v1::ModelProto model;
};

class AdminApi {
 public:
  // `coordinator`, `store` (may be null) and access.operators must outlive the API.
  AdminApi(Coordinator* coordinator, Store* store, AdminLimits limits, AdminAccess access);

  // The calling operator, when it may make `call`, which needs `role` (errors above).
  absl::StatusOr<Operator> Authenticate(absl::string_view authorization, absl::string_view peer,
                                        OperatorRole role, absl::string_view call);

  absl::StatusOr<v1::StartJobResponse> StartJob(const Operator& op, absl::string_view peer,
                                                const v1::StartJobRequest& request);
  // An empty job_id stops the running job (FAILED_PRECONDITION when none runs).
  absl::StatusOr<v1::JobStatus> StopJob(const Operator& op, absl::string_view peer,
                                        const v1::StopJobRequest& request);
  absl::StatusOr<v1::JobStatus> GetJob(const std::string& job_id);
  // Every job, the most recent first (from the Store; without one, the job GetJob("") gives).
  absl::StatusOr<std::vector<v1::JobStatus>> ListJobs(int limit);
  // From request.from_round (0 = 1), up to request.limit (0 or more than 1000 = 1000).
  absl::StatusOr<v1::ListRoundsResponse> ListRounds(const v1::ListRoundsRequest& request);
  // ACTIVE devices silent past the liveness timeout list as EXPIRED; include_inactive adds
  // those; at most request.limit (0 or more than 10000 = 10000).
  absl::StatusOr<v1::ListClientsResponse> ListClients(const v1::ListClientsRequest& request);
  // Calls `send` with each event of the job (replay_history: first a round_closed event per
  // completed round) until the job is no longer running (its job_changed event is the last),
  // `send` returns false (CANCELLED), `cancelled()` is true (CANCELLED), or BeginShutdown
  // (UNAVAILABLE). Polls every limits.watch_interval.
  absl::Status WatchJob(const v1::WatchJobRequest& request,
                        const std::function<bool(v1::JobEvent)>& send,
                        const std::function<bool()>& cancelled);
  // Round 0 or the latest completed round: the current central model; an older round: the
  // Store's checkpoint of it. NOT_FOUND for a round that does not exist.
  absl::StatusOr<ExportedModel> ExportModel(const v1::ExportModelRequest& request);

  absl::StatusOr<v1::CreateEnrollmentTokenResponse> CreateEnrollmentToken(
      const Operator& op, const v1::CreateEnrollmentTokenRequest& request);
  absl::StatusOr<v1::ListEnrollmentTokensResponse> ListEnrollmentTokens();
  absl::StatusOr<v1::EnrollmentTokenRecord> RevokeEnrollmentToken(
      const Operator& op, const v1::RevokeEnrollmentTokenRequest& request);
  absl::StatusOr<v1::RevokeDeviceResponse> RevokeDevice(const Operator& op,
                                                        const v1::RevokeDeviceRequest& request);

  // Watches end at their next poll (graceful shutdown).
  void BeginShutdown() { stopping_.store(true); }

  const AdminLimits& limits() const { return limits_; }

 private:
  absl::Status CheckString(absl::string_view field, const std::string& value) const;
  // `job_id`, or the running job, or the most recent one; NOT_FOUND when there is none.
  absl::StatusOr<std::string> ResolveJob(const std::string& job_id);

  Coordinator* const coordinator_;
  Store* const store_;
  const AdminLimits limits_;
  const AdminAccess access_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> refusals_{0};
  absl::Mutex mu_;
  std::string last_started_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_ADMIN_API_H_

// The root's gRPC service for its relays (proto/relay.proto, docs/relays.md): an adapter
// over server::Coordinator's relay calls, served on the operators' listener beside the
// Admin service. Every call authenticates with AdminApi::Authenticate (the `authorization:
// Bearer <token>` metadata) and needs the relay role; the token's name is the relay's id,
// so a relay speaks only for itself. Bounds: strings (ServiceLimits.max_string_bytes), the
// devices one sync reports (kMaxRelaySyncClients, each id at most 128 bytes), a part's
// aggregate (what the running job's sums can take, Coordinator::RelayPartLimit, and at most
// kMaxPartialBytes; the assembler's memory grows with the bytes that arrive), and one part
// upload and one model download in flight per relay (RESOURCE_EXHAUSTED beyond). The model
// is serialized once per job and version and sent from that copy to every relay.
//
// Thread safety: thread-safe (the Coordinator is).
#ifndef FEDGE_SERVER_GRPC_RELAY_SERVICE_H_
#define FEDGE_SERVER_GRPC_RELAY_SERVICE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/relay.grpc.pb.h"
#include "server/admin_api.h"
#include "server/coordinator.h"
#include "server/grpc/coordinator_service.h"

namespace fedge::server {

// The largest aggregate a relay's part may announce: the exact sums of a model of 2^27
// parameters with coverage (32 bytes a coordinate).
inline constexpr int64_t kMaxPartialBytes = int64_t{4} << 30;

class RelayServiceImpl final : public v1::Relay::Service {
 public:
  // `coordinator` and access.operators must outlive the service.
  RelayServiceImpl(Coordinator* coordinator, ServiceLimits limits, AdminAccess access);

  grpc::Status RegisterDevice(grpc::ServerContext* context, const v1::RegisterRequest* request,
                              v1::RegisterResponse* response) override;
  grpc::Status Sync(grpc::ServerContext* context, const v1::RelaySyncRequest* request,
                    v1::RelayAssignment* response) override;
  grpc::Status FetchModel(grpc::ServerContext* context, const v1::RelayModelRequest* request,
                          grpc::ServerWriter<v1::RelayModelChunk>* writer) override;
  grpc::Status UploadPartial(grpc::ServerContext* context,
                             grpc::ServerReader<v1::PartialChunk>* reader,
                             v1::PartialResponse* response) override;

 private:
  // The calling relay's id (the token's name), when its token has the relay role and
  // `claimed` (a relay id in the message) is empty or that id.
  absl::StatusOr<std::string> Relay(grpc::ServerContext* context, absl::string_view call,
                                    absl::string_view claimed = {});

  // Marks `relay` busy with `what` (its uploads or its downloads) for the call's life;
  // RESOURCE_EXHAUSTED when it is already.
  class InFlight;
  absl::StatusOr<InFlight> Claim(absl::flat_hash_set<std::string>& set, const std::string& relay,
                                 absl::string_view what);

  Coordinator* const coordinator_;
  const ServiceLimits limits_;
  AdminApi api_;  // authentication only
  // The model serialized once per job and version, for every relay that fetches it.
  struct SerializedModel {
    std::string job_id;
    int64_t version = -1;
    std::shared_ptr<const std::string> bytes;
  };
  absl::StatusOr<SerializedModel> Model(const std::string& job_id);

  absl::Mutex mu_;
  absl::flat_hash_set<std::string> uploading_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> downloading_ ABSL_GUARDED_BY(mu_);
  absl::Mutex model_mu_;  // held while a new version is serialized: others wait for it
  SerializedModel model_ ABSL_GUARDED_BY(model_mu_);
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_GRPC_RELAY_SERVICE_H_

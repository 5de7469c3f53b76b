// A relay's link to its root (docs/relays.md): the gRPC client of the root's Relay service
// (relay_service.h) and the loop that keeps a relay coordinator (Coordinator with
// CoordinatorOptions.relay_id) in step with its root.
//
//   RelayLink link(options);                                 // the channel, no call yet
//   co.upstream_register = [&](const auto& r) { return link.RegisterDevice(r); };
//   auto relay = Coordinator::Create(co, nullptr);
//   link.Start(relay.get());                                 // the loop, on its own thread
//   ...
//   link.Stop();
//
// The loop, every sync_interval: the relay's part of a closed round goes up first (its
// devices' outcomes and summed updates; sent again while the root is unreachable, dropped
// when the root refuses it); then Sync (the devices that called the relay since the last
// sync, the assignment back), the central model when its version changed (FetchModel), and
// Coordinator::Follow; then Tick, and a part that closed goes up at once. A root that
// cannot be reached is logged once per outage and tried again at the next interval: the
// relay keeps serving its devices' open round meanwhile, and its devices see no job once
// the root is gone longer than the round.
//
// Thread safety: RegisterDevice is thread-safe (the device service calls it); Start and
// Stop from one thread.
#ifndef FEDGE_SERVER_GRPC_RELAY_LINK_H_
#define FEDGE_SERVER_GRPC_RELAY_LINK_H_

#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <grpcpp/channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "proto/relay.grpc.pb.h"
#include "server/coordinator.h"

namespace fedge::server {

struct RelayLinkOptions {
  std::string upstream;  // the root's operators' listener, host:port
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // required
  std::string token;  // a token of the relay role; its name is the relay's id
  absl::Duration sync_interval = absl::Seconds(1);
  absl::Duration call_timeout = absl::Seconds(60);
  int64_t max_message_bytes = int64_t{8} << 20;
  int32_t chunk_bytes = 1 << 20;
};

class RelayLink {
 public:
  explicit RelayLink(RelayLinkOptions options);
  ~RelayLink();  // Stop

  // A device's Register, forwarded to the root (the relay's upstream_register).
  absl::StatusOr<v1::RegisterResponse> RegisterDevice(const v1::RegisterRequest& request);
  // The first sync, to check the root and the token before serving: the relay's id (its
  // token's name), or the root's error (UNAVAILABLE, UNAUTHENTICATED, PERMISSION_DENIED).
  absl::StatusOr<std::string> Check();
  // Starts the loop for `relay` (which must outlive the link).
  void Start(Coordinator* relay);
  void Stop();

 private:
  // One turn of the loop.
  void Turn();
  absl::Status SyncAndFollow();
  absl::StatusOr<Coordinator::VersionedModel> FetchModel(const std::string& job_id);
  absl::Status Upload(const Coordinator::Partial& part);
  // The part waiting to go up, sent (or dropped when the root refuses it).
  void SendPending();
  std::unique_ptr<grpc::ClientContext> Context() const;

  const RelayLinkOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Relay::Stub> stub_;
  Coordinator* relay_ = nullptr;
  std::thread loop_;
  absl::Notification stop_;
  std::optional<Coordinator::Partial> pending_;
  absl::Time last_sync_ = absl::InfinitePast();
  std::string last_error_;  // logged once per outage
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_GRPC_RELAY_LINK_H_

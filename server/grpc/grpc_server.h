// The coordinator's gRPC servers, plus a thread that drives Coordinator::Tick. Used by
// fedge-coordinator and by the integration tests.
//
//   - The devices' listener (listen_address): the Coordinator service (coordinator_service.h),
//     health checking and, when asked for, reflection. Admin calls arriving here are refused
//     with PERMISSION_DENIED: a device is never an operator.
//   - The admin listener (admin_listen_address): the Admin service (admin_service.h) for
//     operators with a token, and the Relay service (relay_service.h) for relays with a
//     token of the relay role, on its own server and thread pool, so that no crowd of
//     device connections can starve an operator's or a relay's calls. Plaintext only on
//     loopback.
//
//   GrpcServerOptions o;  o.listen_address = "127.0.0.1:0";  o.credentials = ...;
//   o.admin_listen_address = "127.0.0.1:0";  o.admin_credentials = ...;  o.operators = &tokens;
//   FEDGE_ASSIGN_OR_RETURN(auto server, GrpcCoordinatorServer::Start(o, coordinator, store));
//   server->port();  server->admin_port();   // the ports bound (useful with port 0)
//   server->Shutdown(absl::Seconds(5));
#ifndef FEDGE_SERVER_GRPC_GRPC_SERVER_H_
#define FEDGE_SERVER_GRPC_GRPC_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/coordinator.h"
#include "server/grpc/admin_service.h"
#include "server/grpc/coordinator_service.h"
#include "server/grpc/relay_service.h"
#include "server/operator_tokens.h"
#include "server/store.h"

namespace fedge::server {

struct GrpcServerOptions {
  std::string listen_address = "127.0.0.1:50051";
  // Required: grpc::SslServerCredentials(...) for TLS, or grpc::InsecureServerCredentials()
  // when the operator asked for it explicitly.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // The operators' listener. Empty: no admin listener (an embedded coordinator driven in
  // process). admin_credentials: TLS (with the operators' CA, if any, as client CA), or
  // insecure, which requires a loopback admin_listen_address (INVALID_ARGUMENT otherwise)
  // and admits loopback peers only.
  std::string admin_listen_address;
  std::shared_ptr<grpc::ServerCredentials> admin_credentials;
  bool admin_plaintext = false;  // admin_credentials are insecure ones
  OperatorTokens* operators = nullptr;  // required with an admin listener; must outlive the server
  int admin_max_threads = 256;
  ServiceLimits limits;
  // The synchronous server holds one thread per call in flight (a long poll included);
  // past this many, new calls fail with RESOURCE_EXHAUSTED and clients back off. Bounds the
  // memory a crowd of connections can take. 0 = gRPC's default (unbounded).
  int max_threads = 1024;
  // How often the tick thread calls Coordinator::Tick; zero = no tick thread (the caller
  // drives the coordinator).
  absl::Duration tick_interval = absl::Milliseconds(200);
  // gRPC server reflection (grpc.reflection.v1alpha): lists every service and message to
  // whoever connects. Off unless asked for (fedge-coordinator --reflection).
  bool reflection = false;
};

class GrpcCoordinatorServer {
 public:
  // Binds and starts serving. `coordinator` and `store` (may be null) must outlive the
  // server. UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<GrpcCoordinatorServer>> Start(
      const GrpcServerOptions& options, Coordinator* coordinator, Store* store);
  ~GrpcCoordinatorServer();  // Shutdown(zero deadline) if not done

  int port() const { return port_; }
  int admin_port() const { return admin_port_; }  // 0 without an admin listener

  // Stops the tick thread, ends long polls and watches, lets calls in flight finish until
  // `deadline` from now, then cancels the rest. Idempotent.
  void Shutdown(absl::Duration deadline);

 private:
  GrpcCoordinatorServer(Coordinator* coordinator, Store* store, const GrpcServerOptions& o);
  void TickLoop(absl::Duration interval);

  Coordinator* const coordinator_;
  CoordinatorServiceImpl coordinator_service_;
  AdminServiceImpl refused_admin_service_;  // on the devices' listener: refuses every call
  AdminServiceImpl admin_service_;
  RelayServiceImpl relay_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> admin_server_;
  int port_ = 0;
  int admin_port_ = 0;
  absl::Notification stop_ticking_;
  std::thread ticker_;
  std::atomic<bool> shut_down_{false};
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_GRPC_GRPC_SERVER_H_

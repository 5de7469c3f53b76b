#include "server/grpc/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/impl/server_builder_option.h>

#include <algorithm>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/server_builder.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "server/rate_limiter.h"

namespace fedge::server {

namespace {

// Reflection on or off for one ServerBuilder. gRPC's reflection library registers its plugin
// for every server of the process as soon as it is linked (a static initializer), so "off"
// removes it and "on" makes sure there is one.
class ReflectionOption final : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionOption(bool on) : on_(on) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    const std::string name = grpc::reflection::ProtoServerReflectionPlugin().name();
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [&](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                                    return p->name() == name;
                                  }),
                   plugins->end());
    if (on_) plugins->push_back(std::make_unique<grpc::reflection::ProtoServerReflectionPlugin>());
  }

 private:
  const bool on_;
};

}  // namespace

GrpcCoordinatorServer::GrpcCoordinatorServer(Coordinator* coordinator, Store* store,
                                             const GrpcServerOptions& o)
    : coordinator_(coordinator),
      coordinator_service_(coordinator, o.limits),
      refused_admin_service_(coordinator, store, o.limits, AdminAccess{}),
      admin_service_(coordinator, store, o.limits,
                     AdminAccess{o.operators, /*loopback_only=*/o.admin_plaintext}),
      relay_service_(coordinator, o.limits,
                     AdminAccess{o.operators, /*loopback_only=*/o.admin_plaintext}) {}

absl::StatusOr<std::unique_ptr<GrpcCoordinatorServer>> GrpcCoordinatorServer::Start(
    const GrpcServerOptions& options, Coordinator* coordinator, Store* store) {
  if (coordinator == nullptr || options.credentials == nullptr) {
    return absl::InvalidArgumentError("GrpcCoordinatorServer: needs a coordinator and credentials");
  }
  if (!options.admin_listen_address.empty()) {
    if (options.admin_credentials == nullptr || options.operators == nullptr) {
      return absl::InvalidArgumentError(
          "GrpcCoordinatorServer: an admin listener needs credentials and operator tokens");
    }
    if (options.admin_plaintext && !IsLoopbackAddress(options.admin_listen_address)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GrpcCoordinatorServer: the admin listener ", options.admin_listen_address,
          " is plaintext and not on loopback; give TLS credentials or a 127.0.0.1 address"));
    }
  }
  std::unique_ptr<GrpcCoordinatorServer> s(new GrpcCoordinatorServer(coordinator, store, options));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.SetOption(std::make_unique<ReflectionOption>(options.reflection));
  builder.AddListeningPort(options.listen_address, options.credentials, &s->port_);
  const int max_message = static_cast<int>(
      std::min<int64_t>(options.limits.max_message_bytes, std::numeric_limits<int>::max()));
  builder.SetMaxReceiveMessageSize(max_message);
  builder.SetMaxSendMessageSize(max_message);
  // A fixed per-stream receive window instead of gRPC's BDP-probed one (which grows to
  // megabytes on a fast link): bytes a device has sent but the upload handler has not yet
  // taken are lost when the connection breaks, so the window bounds what a resumed upload
  // sends twice (less than one 1 MiB chunk per cut).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  // A port another process holds is an error, not a share: with gRPC's default
  // SO_REUSEPORT two coordinators (a stale one, a test's neighbour) would split the
  // connections between them silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, options.limits.stream_window_bytes);
  if (options.max_threads > 0) {
    grpc::ResourceQuota quota("fedge-coordinator");
    quota.SetMaxThreads(options.max_threads);
    builder.SetResourceQuota(quota);
  }
  builder.RegisterService(&s->coordinator_service_);
  builder.RegisterService(&s->refused_admin_service_);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("GrpcCoordinatorServer: cannot listen on ", options.listen_address));
  }
  if (!options.admin_listen_address.empty()) {
    grpc::ServerBuilder admin;
    admin.SetOption(std::make_unique<ReflectionOption>(false));
    admin.AddListeningPort(options.admin_listen_address, options.admin_credentials,
                           &s->admin_port_);
    admin.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    admin.SetMaxReceiveMessageSize(max_message);
    admin.SetMaxSendMessageSize(max_message);
    grpc::ResourceQuota quota("fedge-admin");
    quota.SetMaxThreads(std::max(8, options.admin_max_threads));
    admin.SetResourceQuota(quota);
    admin.RegisterService(&s->admin_service_);
    admin.RegisterService(&s->relay_service_);
    s->admin_server_ = admin.BuildAndStart();
    if (s->admin_server_ == nullptr || s->admin_port_ == 0) {
      s->server_->Shutdown();
      s->server_->Wait();
      return absl::UnavailableError(absl::StrCat(
          "GrpcCoordinatorServer: cannot listen on the admin address ", options.admin_listen_address));
    }
  }
  if (auto* health = s->server_->GetHealthCheckService()) health->SetServingStatus(true);
  if (options.tick_interval > absl::ZeroDuration()) {
    GrpcCoordinatorServer* raw = s.get();
    const absl::Duration interval = options.tick_interval;
    s->ticker_ = std::thread([raw, interval] { raw->TickLoop(interval); });
  }
  return s;
}

void GrpcCoordinatorServer::TickLoop(absl::Duration interval) {
  std::string last_error;
  while (!stop_ticking_.WaitForNotificationWithTimeout(interval)) {
    absl::Status s = coordinator_->Tick();
    if (!s.ok() && std::string(s.message()) != last_error) {
      FEDGE_LOG(ERROR) << "GrpcCoordinatorServer: tick failed (will retry): " << s;
    }
    last_error = s.ok() ? std::string() : std::string(s.message());
  }
}

void GrpcCoordinatorServer::Shutdown(absl::Duration deadline) {
  if (shut_down_.exchange(true)) return;
  if (!stop_ticking_.HasBeenNotified()) stop_ticking_.Notify();
  if (ticker_.joinable()) ticker_.join();
  coordinator_service_.BeginShutdown();
  admin_service_.BeginShutdown();
  const auto until = std::chrono::system_clock::now() +
                     std::chrono::milliseconds(absl::ToInt64Milliseconds(deadline));
  if (admin_server_ != nullptr) {
    admin_server_->Shutdown(until);
    admin_server_->Wait();
  }
  if (server_ != nullptr) {
    if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(false);
    server_->Shutdown(until);
    server_->Wait();
  }
}

GrpcCoordinatorServer::~GrpcCoordinatorServer() { Shutdown(absl::ZeroDuration()); }

}  // namespace fedge::server

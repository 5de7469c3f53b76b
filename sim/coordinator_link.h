// A virtual device's link (client/device_link.h) straight into an in-process
// server::Coordinator: what a fleet device's gRPC link carries over the network, here a
// function call. fedge-sim's devices send their updates, declines and secure-aggregation
// messages through it, so the device round above it is the fleet's.
//
// It adds the device's credentials (client id, session token) as the gRPC link does. The
// simulator steps secure-aggregation phases itself (all devices of a phase, then the next),
// so the link never waits: Pause returns false.
//
// Thread safety: as the coordinator's methods (thread-safe); one device's round at a time.
#ifndef FEDGE_SIM_COORDINATOR_LINK_H_
#define FEDGE_SIM_COORDINATOR_LINK_H_

#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "client/device_link.h"
#include "client/device_round.h"
#include "server/coordinator.h"

namespace fedge::sim {

class CoordinatorLink final : public client::DeviceLink {
 public:
  using UploadHook = std::function<void(const v1::UpdateHeader&, std::string_view payload)>;
  // `coordinator` must outlive the link; `on_upload` (may be empty) sees every update as it
  // reaches the coordinator, credentials included.
  CoordinatorLink(server::Coordinator& coordinator, std::string client_id,
                  std::string session_token, const UploadHook* on_upload = nullptr)
      : coordinator_(coordinator),
        client_id_(std::move(client_id)),
        session_token_(std::move(session_token)),
        on_upload_(on_upload) {}

  absl::Status Upload(const v1::TaskHeader& task, const client::EncodedUpdate& update) override;
  absl::Status Decline(const v1::TaskHeader& task, const v1::UpdateHeader& header) override;
  absl::StatusOr<v1::SecAggStepResponse> SecureAggregationStep(
      const v1::TaskHeader& task, v1::SecAggStepRequest request) override;
  bool Pause(absl::Duration) override { return false; }

 private:
  server::Coordinator& coordinator_;
  const std::string client_id_;
  const std::string session_token_;
  const UploadHook* on_upload_;
};

}  // namespace fedge::sim

#endif  // FEDGE_SIM_COORDINATOR_LINK_H_

// What the device round needs of the path to its coordinator, and nothing of how it is
// carried. The gRPC runtime (client/grpc/client_runtime.cc) implements it over the network
// with its retries, backoff and upload resumption; fedge-sim (sim/simulator.cc) implements
// it in-process, straight into server::Coordinator. The device round above it
// (client/device_round.h SendUpdate, client/secagg_device.h RunSecureAggregation) is then
// the same code in the fleet and in the simulator.
//
// Every call carries this device's credentials (the link adds its client id and session
// token to the headers and requests it is given); a call's error is the coordinator's
// answer or the transport's, after whatever retrying the link does itself.
//
// Thread safety: a link serves one device's round at a time, from one thread.
#ifndef FEDGE_CLIENT_DEVICE_LINK_H_
#define FEDGE_CLIENT_DEVICE_LINK_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/coordinator.pb.h"
#include "proto/job.pb.h"

namespace fedge::client {

struct EncodedUpdate;  // client/device_round.h

class DeviceLink {
 public:
  virtual ~DeviceLink() = default;

  // Sends `update` (header without credentials, payload in the task's update encoding) for
  // `task`. OK once the coordinator accepted it (also when it already had it).
  virtual absl::Status Upload(const v1::TaskHeader& task, const EncodedUpdate& update) = 0;
  // Tells the coordinator this device declines `task` (header from DeclineHeader), so the
  // round stops waiting for it and records why.
  virtual absl::Status Decline(const v1::TaskHeader& task, const v1::UpdateHeader& header) = 0;
  // One SecureAggregationStep for `task` (a phase's message or a poll); the link fills the
  // request's client id, session token, job, round and task id.
  virtual absl::StatusOr<v1::SecAggStepResponse> SecureAggregationStep(
      const v1::TaskHeader& task, v1::SecAggStepRequest request) = 0;
  // Waits `d` before the device asks again (a phase not yet closed). False when the device
  // is stopping: the round is then given up.
  virtual bool Pause(absl::Duration d) = 0;
};

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_DEVICE_LINK_H_

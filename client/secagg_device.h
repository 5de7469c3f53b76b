// A device's side of a round's secure aggregation (coordinator.proto SecureAggregationStep,
// docs/privacy.md), transport-free: from the trained update to the four messages the device
// sends, one phase at a time. The gRPC runtime runs it over the network with
// RunSecureAggregation; fedge-sim steps its virtual devices through it phase by phase, so a
// simulated SecAgg or SecAgg+ round runs the protocol the fleet runs.
//
//   FEDGE_ASSIGN_OR_RETURN(auto device, SecAggDevice::Create(task, update, {}));
//   FEDGE_ASSIGN_OR_RETURN(v1::SecAggStepRequest keys, device->Start());        // phase 0
//   ... send it; poll phase 0 until its result (the key list) comes ...
//   FEDGE_ASSIGN_OR_RETURN(v1::SecAggStepRequest shares, device->Continue(result));  // 1
//   ... and so on until done(): the masked input (2), then the unmasking shares (3).
//
// What the device sends (SecureAggregationSession): Δ flattened in the task model's
// parameter order (already clipped by the training), with adaptive clipping one more
// coordinate (clip_norm when ‖Δ‖ ≤ clip_norm, else 0); with distributed DP its share of the
// noise added (noise_stddev per coordinate, count_noise_stddev on the count); then encoded
// in fixed point (max_abs_value, max_summands; values beyond the bound are clamped) and
// masked. The clear vector never leaves the device.
//
// Noise. From the OS CSPRNG. For reproducible simulations and tests only, a seed instead
// (DeviceNoiseSeed): noise others can predict gives no privacy.
//
// Not thread-safe; one object per device and round.
#ifndef FEDGE_CLIENT_SECAGG_DEVICE_H_
#define FEDGE_CLIENT_SECAGG_DEVICE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/device_link.h"
#include "client/local_trainer.h"
#include "privacy/secagg.h"
#include "privacy/sodium.h"
#include "proto/coordinator.pb.h"
#include "proto/job.pb.h"

namespace fedge::client {

class SecAggDevice final {
 public:
  struct Options {
    // Seeds the distributed-DP noise share (reproducible runs only); unset: the CSPRNG.
    std::optional<privacy::Seed> noise_seed;
    // Reported with the masked input (UpdateMetrics.peak_rss_bytes).
    int64_t peak_rss_bytes = 0;
  };
  // Builds the device's fixed-point input for the task's session. FAILED_PRECONDITION for an
  // update whose length is not the session's; INVALID_ARGUMENT for a bad session.
  static absl::StatusOr<std::unique_ptr<SecAggDevice>> Create(const v1::TaskHeader& task,
                                                              const LocalUpdate& update,
                                                              const Options& options);

  // Phase 0's message: the device's public keys.
  absl::StatusOr<v1::SecAggStepRequest> Start();
  // `result`, the answer to this device's poll of phase phase(), gives the message of the
  // next phase. INTERNAL for an answer of the wrong kind; the protocol's errors
  // (privacy/secagg.h) for a key list, shares or unmasking request this device must refuse.
  absl::StatusOr<v1::SecAggStepRequest> Continue(const v1::SecAggStepResponse& result);

  // The phase of the last message made (−1 before Start).
  int phase() const { return phase_; }
  // Whether the last message (the unmasking shares, phase 3) is made.
  bool done() const { return phase_ == 3; }
  // The fixed-point input that the masked message hides: what the coordinator's released sum
  // adds up (tests and the simulator check the sum against it).
  const std::vector<uint32_t>& input() const { return input_; }
  // Values clamped to the fixed-point bound.
  int64_t clamped() const { return clamped_; }

 private:
  SecAggDevice(int num_clients, std::unique_ptr<privacy::SecAggClient> client)
      : num_clients_(num_clients), client_(std::move(client)) {}

  const int num_clients_;
  std::unique_ptr<privacy::SecAggClient> client_;
  std::vector<uint32_t> input_;
  int64_t clamped_ = 0;
  v1::SecAggMaskedInput masked_metrics_;  // the masked input's count and metrics
  int phase_ = -1;
};

// The seed of a device's noise share in one round, from a run's base seed (reproducible
// simulations and tests only; see above). The same for a fleet device and a virtual one
// with the same id.
privacy::Seed DeviceNoiseSeed(uint64_t base_seed, const v1::TaskHeader& task,
                              absl::string_view client_id);

// Runs `device`'s whole protocol for `task` over `link`: each phase's message, then polls of
// that phase (pausing as the coordinator asks) until its result. Returns the bytes sent.
// Errors: the device's (above), the link's, CANCELLED when the link stops pausing.
absl::StatusOr<int64_t> RunSecureAggregation(SecAggDevice& device, const v1::TaskHeader& task,
                                             DeviceLink& link);

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_SECAGG_DEVICE_H_

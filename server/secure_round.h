// One round's secure aggregation at the coordinator (privacy/secagg.h): maps the
// round's sampled client ids to SecAgg indices, feeds their wire messages to a
// privacy::SecAggServer, closes its four phases and keeps each phase's result for the
// devices' polls. Transport-free and not thread-safe: the Coordinator calls it under its
// mutex. It never holds a clear update: only keys, encrypted shares, masked vectors and, at
// the end, the sum.
//
// Phases: 0 keys, 1 shares, 2 masked input, 3 unmasking; then kFinished (the sum is
// available) or kFailed (nothing released). A phase is closed by the coordinator when every
// device still in the round has sent its message for it, or at the phase's deadline.
#ifndef FEDGE_SERVER_SECURE_ROUND_H_
#define FEDGE_SERVER_SECURE_ROUND_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "aggregation/update.h"
#include "absl/status/statusor.h"
#include "privacy/fixed_point.h"
#include "privacy/secagg.h"
#include "proto/coordinator.pb.h"
#include "proto/job.pb.h"

namespace fedge::server {

class SecureRound final {
 public:
  static constexpr int kFinished = 4;
  static constexpr int kFailed = 5;

  // What each device sends: its update clipped to clip_norm plus distributed noise of
  // noise_stddev per coordinate, and with adaptive clipping one more coordinate (clip_norm
  // if its update was within it, else 0, plus noise of count_noise_stddev).
  struct Encoding {
    double clip_norm = 0;
    double noise_stddev = 0;
    bool clipped_count = false;
    double count_noise_stddev = 0;
  };

  // `participants`: the round's sampled clients; index i is participants[i]. The masked
  // vectors have `vector_length` values (the count included). INVALID_ARGUMENT /
  // FAILED_PRECONDITION from the SecAgg plan.
  static absl::StatusOr<std::unique_ptr<SecureRound>> Create(
      const v1::PrivacyConfig& privacy, const std::vector<std::string>& participants,
      int64_t vector_length, const Encoding& encoding);

  // The session for `client_id`'s task header. REQUIRES a participant.
  v1::SecureAggregationSession SessionFor(const std::string& client_id) const;
  bool IsParticipant(const std::string& client_id) const { return index_.contains(client_id); }
  // Whether the client has sent its keys: it is inside the protocol, and its task is not
  // handed out again (a device that lost its protocol state cannot rejoin the session).
  bool Joined(const std::string& client_id) const;

  int phase() const { return phase_; }
  // One device's message for the current phase (keys, shares, masked input or unmasking
  // shares; not a poll). An error means the device must be dropped from the round: it is
  // then treated as gone by the protocol (a dropout).
  absl::Status Receive(const std::string& client_id, const v1::SecAggStepRequest& request);
  // What `client_id` polling for `phase` gets: the phase's result once it closed, else
  // retry_after_ms. FAILED_PRECONDITION if it polls a phase it is not part of or a future one.
  absl::StatusOr<v1::SecAggStepResponse> Poll(const std::string& client_id, int phase) const;

  // Whether every client in `remaining` sent its message for the current phase.
  bool PhaseComplete(const absl::flat_hash_set<std::string>& remaining) const;
  // Closes the current phase with the messages received. Returns the clients that take part
  // in the next phase (empty once finished or failed). On a protocol failure (fewer than t)
  // the session is failed and the error explains why; nothing is released.
  absl::StatusOr<std::vector<std::string>> ClosePhase();

  // After kFinished: the sum Σ_{U3} x_u mod 2^32, decoded into floats, and U3's ids.
  const std::vector<uint32_t>& sum() const { return sum_; }
  std::vector<float> DecodedSum() const;
  std::vector<std::string> Survivors() const;
  // Clients found revealing bad shares (they should be dropped from later rounds).
  std::vector<std::string> Misbehaving() const;

  // Closes every phase that is complete (each client still in `waiting` sent its message)
  // or whose deadline passed (the round's deadline for the training phase, then
  // `phase_timeout` after each close); clients that missed a phase leave `waiting` (they
  // are dropouts). True once the sum is released; a protocol failure (fewer than t) is
  // returned and empties `waiting`, and nothing is released.
  // With `unmask` false it stops before closing the unmasking phase (the costly step: the
  // caller runs it apart, see UnmaskDue).
  absl::StatusOr<bool> Advance(absl::Time now, absl::Duration phase_timeout,
                               absl::flat_hash_set<std::string>& waiting, bool unmask = true);
  // Whether the unmasking phase is ready to close (every client in `waiting` sent its
  // shares, or its deadline passed).
  bool UnmaskDue(absl::Time now, const absl::flat_hash_set<std::string>& waiting) const {
    return phase_ == 3 && (PhaseComplete(waiting) || now >= phase_deadline_);
  }
  void set_phase_deadline(absl::Time t) { phase_deadline_ = t; }
  // After kFinished: the survivors' mean in the shapes of `model` (one update of weight
  // |U3|), and the count coordinate divided by the clip norm (adaptive clipping's noised
  // count of unclipped updates) when the session carries one.
  struct Release {
    aggregation::Update mean;
    std::optional<double> noised_unclipped;
  };
  Release Released(const aggregation::ModelWeights& model) const;

  v1::SecureAggregationRoundMetrics& metrics() { return metrics_; }
  const privacy::FixedPointEncoder& encoder() const { return encoder_; }

 private:
  SecureRound(privacy::SecAggConfig config, privacy::FixedPointEncoder encoder,
              std::unique_ptr<privacy::SecAggServer> server, const Encoding& encoding)
      : config_(std::move(config)),
        encoder_(encoder),
        server_(std::move(server)),
        encoding_(encoding) {}
  std::vector<std::string> Names(const std::vector<uint32_t>& indices) const;

  privacy::SecAggConfig config_;
  privacy::FixedPointEncoder encoder_;
  std::unique_ptr<privacy::SecAggServer> server_;
  Encoding encoding_;
  std::vector<std::string> participants_;
  absl::flat_hash_map<std::string, uint32_t> index_;
  int phase_ = 0;
  std::set<uint32_t> sent_;  // senders of the current phase's message
  // Phase results.
  std::optional<v1::SecAggKeyList> keys_;
  std::map<uint32_t, v1::SecAggShareList> shares_;
  std::optional<v1::SecAggUnmaskingRequest> unmasking_;
  std::set<uint32_t> in_phase_[4];  // who took part in each phase (sent its message)
  std::vector<uint32_t> sum_;
  v1::SecureAggregationRoundMetrics metrics_;
  absl::Time phase_deadline_ = absl::InfiniteFuture();
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_SECURE_ROUND_H_

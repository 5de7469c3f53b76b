// A job's differential privacy (a room of server::Coordinator; DP-FedAvg, McMahan et al.
// 2018): the clip norm of each round (fixed, or adaptive: Andrew et al. 2021), the clip
// check of every update, the Gaussian noise on the aggregate, the Rényi accountant and the
// ε budget.
//
//   FEDGE_ASSIGN_OR_RETURN(auto dp, RoundPrivacy::Create(config.privacy(), job_id, seed));
//   dp->Restore(completed_rounds_records, completed);          // a resumed job
//   FEDGE_ASSIGN_OR_RETURN(RoundPrivacy::Opening o, dp->Open(round, sampled, live));
//   if (o.over_budget) finish the job with *o.over_budget;
//   per update: dp->CheckClipped(norm, id, o.round) ... dp->CountMeasuredNorm(norm, round)
//   at close:  dp->Close(round, delta, &metrics);               // noise, ε, next C
//
// Central mode (no secure aggregation): devices clip Δ to C; an update over C (+1e-4
// relative slack for float rounding) is refused; every participant counts once (weight
// 1); the mean of m participants gets N(0, (z_Δ·C/m)²) per coordinate. With secure
// aggregation the devices add the noise (distributed DP): Close adds none. Either way the
// accountant composes the round's (q = sampled / live, z) and ε at δ goes into the round's
// metrics. Adaptive clipping moves C towards the target quantile of the update norms the
// devices report (central mode) or from the noised count the masked sum carries (secure
// aggregation); z_Δ > z then pays for the count's privacy.
// Budget: with epsilon_budget, Open refuses a round whose ε would exceed it.
//
// Thread safety: none; the coordinator calls it under its lock.
#ifndef FEDGE_SERVER_ROUND_PRIVACY_H_
#define FEDGE_SERVER_ROUND_PRIVACY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aggregation/aggregator.h"
#include "aggregation/update.h"
#include "privacy/dp.h"
#include "privacy/rdp_accountant.h"
#include "proto/job.pb.h"
#include "server/secure_round.h"

namespace fedge::server {

class RoundPrivacy {
 public:
  // `noise_seed`: reproducible noise (simulations; mixed with the job id), else the OS
  // CSPRNG. Errors: an adaptive-clipping configuration AdaptiveClipping refuses.
  static absl::StatusOr<std::unique_ptr<RoundPrivacy>> Create(const v1::PrivacyConfig& privacy,
                                                              const std::string& job_id,
                                                              std::optional<uint64_t> noise_seed);

  // A resumed job: composes the completed rounds' (q, z) again and continues adaptive
  // clipping from the clip norm the last of them chose.
  absl::Status Restore(const std::vector<v1::RoundRecord>& rounds, int64_t completed_rounds);

  // True when the job adds noise and accounts for it (noise_multiplier > 0).
  bool accounts() const { return accountant_.has_value(); }

  // One round's privacy state, kept by the round.
  struct Round {
    double sampling_rate = 0;     // q: sampled / live registered
    double clip_norm = 0;         // C the round's devices clip to (0: no clipping)
    int64_t unclipped = 0;        // central mode: accepted updates whose reported norm ≤ C
    double noised_unclipped = 0;  // secure aggregation: the same count, noised by the devices
  };
  struct Opening {
    Round round;
    // Set when the round would bring ε over the budget: why the job ends instead.
    std::optional<std::string> over_budget;
  };
  // The round `number` that samples `sampled` of `live` clients, after `completed` rounds.
  absl::StatusOr<Opening> Open(int64_t number, size_t sampled, size_t live,
                               int64_t completed) const;

  // The masked vectors' encoding for a secure-aggregation round of threshold `threshold`:
  // the clip norm, each device's share of the noise, the adaptive-clipping count.
  absl::StatusOr<SecureRound::Encoding> SecureEncoding(const Round& round, int threshold) const;
  // The count coordinate of a released sum (adaptive clipping under secure aggregation).
  bool clipped_count() const { return clipper_ != nullptr; }

  // INVALID_ARGUMENT when `norm`, the L2 norm of `client`'s update as received, exceeds the
  // round's clip norm.
  absl::Status CheckClipped(double norm, const std::string& client, const Round& round) const;
  // An accepted update's norm as the coordinator measured it (never the device's report:
  // a device reporting 0 would move everyone's clip norm): counted for adaptive clipping as
  // unclipped when it is under C (a device that clipped sends exactly C, up to rounding).
  // Ignores a negative or NaN norm.
  static void CountMeasuredNorm(double norm, Round& round);
  // The weight an accepted update gets: 1 when accounting (each participant counts once).
  double Weight(double num_examples) const { return accounts() ? 1.0 : num_examples; }

  // Closes the round: noise on `delta` (central mode: `secure` false), the accountant, the
  // adaptive clip norm for the next round; the dp_* fields and ε into `metrics`.
  // `participants`: the round's accepted clients. A no-op without noise.
  absl::Status Close(const Round& round, bool secure, int64_t participants,
                     aggregation::ModelDelta& delta, v1::RoundMetrics* metrics);

 private:
  explicit RoundPrivacy(v1::PrivacyConfig privacy) : privacy_(std::move(privacy)) {}

  const v1::PrivacyConfig privacy_;
  std::optional<privacy::RdpAccountant> accountant_;
  std::unique_ptr<privacy::NoiseGenerator> noise_;
  // Adaptive clipping: the clip norm for the next round, and the multiplier the update sum
  // gets beside the noised count (z_Δ; z without it).
  std::unique_ptr<privacy::AdaptiveClipping> clipper_;
  double update_noise_multiplier_ = 0;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_ROUND_PRIVACY_H_

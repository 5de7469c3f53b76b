#include "server/round_privacy.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_format.h"
#include "base/rng.h"
#include "base/status_macros.h"

namespace fedge::server {
namespace {

// Relative slack on the clip norm for float rounding: a device's clipped update arrives at C
// give or take this much.
constexpr double kClipTolerance = 1e-4;

// The job's adaptive clipping, starting from `initial_clip_norm` (the configured one, or the
// one the last completed round chose when a job resumes).
absl::StatusOr<std::unique_ptr<privacy::AdaptiveClipping>> MakeClipper(
    const v1::PrivacyConfig& privacy, double initial_clip_norm) {
  const v1::AdaptiveClippingConfig& ac = privacy.adaptive_clipping();
  privacy::AdaptiveClipping::Options o;
  o.initial_clip_norm = initial_clip_norm;
  o.target_quantile = ac.target_quantile();
  o.learning_rate = ac.learning_rate();
  o.clipped_count_stddev = ac.count_noise_stddev();
  return privacy::AdaptiveClipping::Create(o);
}

}  // namespace

absl::StatusOr<std::unique_ptr<RoundPrivacy>> RoundPrivacy::Create(
    const v1::PrivacyConfig& privacy, const std::string& job_id,
    std::optional<uint64_t> noise_seed) {
  std::unique_ptr<RoundPrivacy> dp(new RoundPrivacy(privacy));
  if (privacy.has_adaptive_clipping()) {
    FEDGE_ASSIGN_OR_RETURN(dp->clipper_, MakeClipper(privacy, privacy.clip_norm()));
    FEDGE_ASSIGN_OR_RETURN(dp->update_noise_multiplier_,
                           dp->clipper_->UpdateNoiseMultiplier(privacy.noise_multiplier()));
  } else {
    dp->update_noise_multiplier_ = privacy.noise_multiplier();
  }
  if (privacy.noise_multiplier() > 0) {
    dp->accountant_.emplace();
    if (noise_seed.has_value()) {
      privacy::Seed seed;
      base::Rng rng(*noise_seed, base::Fnv1a(job_id));
      for (uint8_t& b : seed) b = static_cast<uint8_t>(rng.NextU64());
      dp->noise_ = privacy::NoiseGenerator::CreateFromSeed(seed);
    } else {
      FEDGE_ASSIGN_OR_RETURN(dp->noise_, privacy::NoiseGenerator::Create());
    }
  }
  return dp;
}

absl::Status RoundPrivacy::Restore(const std::vector<v1::RoundRecord>& rounds,
                                   int64_t completed_rounds) {
  if (!accountant_.has_value()) return absl::OkStatus();
  for (const v1::RoundRecord& r : rounds) {
    if (r.state() != v1::ROUND_STATE_COMPLETED || r.round() > completed_rounds) continue;
    const v1::RoundMetrics& m = r.metrics();
    if (m.dp_noise_multiplier() > 0) {
      FEDGE_RETURN_IF_ERROR(accountant_->Compose(m.dp_sampling_rate(), m.dp_noise_multiplier()));
    }
    if (clipper_ != nullptr && m.dp_next_clip_norm() > 0) {
      // Adaptive clipping continues from the clip norm the last round chose.
      FEDGE_ASSIGN_OR_RETURN(clipper_, MakeClipper(privacy_, m.dp_next_clip_norm()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RoundPrivacy::Opening> RoundPrivacy::Open(int64_t number, size_t sampled,
                                                         size_t live, int64_t completed) const {
  Opening o;
  o.round.clip_norm = clipper_ != nullptr ? clipper_->clip_norm() : privacy_.clip_norm();
  if (!accountant_.has_value()) return o;
  o.round.sampling_rate = static_cast<double>(sampled) / static_cast<double>(std::max<size_t>(live, 1));
  if (privacy_.epsilon_budget() > 0) {
    privacy::RdpAccountant next = *accountant_;
    FEDGE_RETURN_IF_ERROR(next.Compose(o.round.sampling_rate, privacy_.noise_multiplier()));
    FEDGE_ASSIGN_OR_RETURN(privacy::EpsilonAndOrder e, next.Epsilon(privacy_.delta()));
    if (e.epsilon > privacy_.epsilon_budget()) {
      o.over_budget = absl::StrFormat(
          "privacy budget: round %d would bring epsilon to %.4g, over the budget %.4g "
          "(delta %g); stopped after %d rounds",
          number, e.epsilon, privacy_.epsilon_budget(), privacy_.delta(), completed);
    }
  }
  return o;
}

absl::StatusOr<SecureRound::Encoding> RoundPrivacy::SecureEncoding(const Round& round,
                                                                   int threshold) const {
  SecureRound::Encoding e;
  e.clip_norm = round.clip_norm;
  if (privacy_.noise_multiplier() > 0) {
    FEDGE_ASSIGN_OR_RETURN(e.noise_stddev, privacy::DistributedNoiseStddev(
                                               update_noise_multiplier_, round.clip_norm,
                                               threshold));
  }
  if (clipper_ != nullptr) {
    // The count coordinate is clip_norm per unclipped device: its noise scales with C too.
    e.clipped_count = true;
    e.count_noise_stddev = privacy_.adaptive_clipping().count_noise_stddev() * round.clip_norm /
                           std::sqrt(static_cast<double>(threshold));
  }
  return e;
}

absl::Status RoundPrivacy::CheckClipped(double norm, const std::string& client,
                                        const Round& round) const {
  const double clip = round.clip_norm;
  if (clip <= 0) return absl::OkStatus();
  // Devices clip to C before uploading; an update over C would break the DP guarantee.
  if (!(norm <= clip * (1 + kClipTolerance))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Coordinator: client %s sent an update of L2 norm %.6g, over privacy.clip_norm %.6g",
        client, norm, clip));
  }
  return absl::OkStatus();
}

void RoundPrivacy::CountMeasuredNorm(double norm, Round& round) {
  // Adaptive clipping counts the updates that were within C: a clipped one arrives at C.
  if (std::isfinite(norm) && norm >= 0 && norm < round.clip_norm * (1 - kClipTolerance)) {
    ++round.unclipped;
  }
}

absl::Status RoundPrivacy::Close(const Round& round, bool secure, int64_t participants,
                                 aggregation::ModelDelta& delta, v1::RoundMetrics* m) {
  if (!accountant_.has_value()) return absl::OkStatus();
  // N(0, (z·S)²) on the sum is N(0, (z·S/m)²) on the mean of the m participants.
  FEDGE_ASSIGN_OR_RETURN(const double stddev,
                         privacy::CentralNoiseStddev(update_noise_multiplier_, round.clip_norm));
  const double on_mean = stddev / std::max<double>(1.0, delta.total_weight);
  // Under secure aggregation the devices added the noise (distributed DP).
  if (!secure) {
    for (aggregation::Tensor& t : delta.tensors) {
      noise_->AddGaussianNoise(absl::MakeSpan(t.values), on_mean);
    }
  }
  FEDGE_RETURN_IF_ERROR(accountant_->Compose(round.sampling_rate, privacy_.noise_multiplier()));
  FEDGE_ASSIGN_OR_RETURN(privacy::EpsilonAndOrder e, accountant_->Epsilon(privacy_.delta()));
  m->set_epsilon(e.epsilon);
  m->set_dp_sampling_rate(round.sampling_rate);
  m->set_dp_noise_multiplier(privacy_.noise_multiplier());
  m->set_dp_clip_norm(round.clip_norm);
  if (clipper_ != nullptr) {
    const int64_t n = std::max<int64_t>(1, participants);
    absl::StatusOr<double> b_bar = secure
                                       ? clipper_->UpdateFromNoisedCount(round.noised_unclipped, n)
                                       : clipper_->Update(round.unclipped, n, *noise_);
    FEDGE_RETURN_IF_ERROR(b_bar.status());
    m->set_dp_unclipped_fraction(*b_bar);
    m->set_dp_next_clip_norm(clipper_->clip_norm());
  }
  return absl::OkStatus();
}

}  // namespace fedge::server

#include "privacy/dp.h"

#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace fedge::privacy {
namespace {

absl::Status CheckPositiveFinite(const char* what, double v) {
  if (!(v > 0.0) || std::isinf(v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("DP: ", what, " must be finite and > 0, got ", v));
  }
  return absl::OkStatus();
}

}  // namespace

double GlobalL2Norm(absl::Span<const absl::Span<float>> tensors) {
  double sq = 0.0;
  for (absl::Span<float> t : tensors) {
    for (float v : t) sq += static_cast<double>(v) * v;
  }
  return std::sqrt(sq);
}

absl::StatusOr<double> ClipToL2Norm(absl::Span<const absl::Span<float>> tensors,
                                    double clip_norm) {
  FEDGE_RETURN_IF_ERROR(CheckPositiveFinite("clip norm", clip_norm));
  for (size_t k = 0; k < tensors.size(); ++k) {
    for (size_t i = 0; i < tensors[k].size(); ++i) {
      if (!std::isfinite(tensors[k][i])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "DP: update tensor ", k, " has a non-finite value at coordinate ", i));
      }
    }
  }
  const double norm = GlobalL2Norm(tensors);
  if (norm > clip_norm) {
    const double scale = clip_norm / norm;
    for (absl::Span<float> t : tensors) {
      for (float& v : t) v = static_cast<float>(v * scale);
    }
  }
  return norm;
}

absl::StatusOr<double> CentralNoiseStddev(double noise_multiplier, double clip_norm) {
  if (!(noise_multiplier >= 0.0) || std::isinf(noise_multiplier)) {
    return absl::InvalidArgumentError(
        absl::StrCat("DP: noise multiplier must be finite and >= 0, got ", noise_multiplier));
  }
  FEDGE_RETURN_IF_ERROR(CheckPositiveFinite("clip norm", clip_norm));
  return noise_multiplier * clip_norm;
}

absl::StatusOr<double> DistributedNoiseStddev(double noise_multiplier, double clip_norm,
                                              int64_t threshold) {
  if (threshold < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("DP: secure-aggregation threshold must be >= 1, got ", threshold));
  }
  FEDGE_ASSIGN_OR_RETURN(double central, CentralNoiseStddev(noise_multiplier, clip_norm));
  return central / std::sqrt(static_cast<double>(threshold));
}

absl::StatusOr<std::unique_ptr<NoiseGenerator>> NoiseGenerator::Create() {
  FEDGE_RETURN_IF_ERROR(EnsureSodium());
  return std::unique_ptr<NoiseGenerator>(new NoiseGenerator(RandomSeed()));
}

std::unique_ptr<NoiseGenerator> NoiseGenerator::CreateFromSeed(const Seed& seed) {
  return std::unique_ptr<NoiseGenerator>(new NoiseGenerator(seed));
}

double NoiseGenerator::StandardNormal() {
  if (has_cached_) {
    has_cached_ = false;
    return cached_;
  }
  const double u1 = stream_.UniformOpenClosed();
  const double u2 = stream_.UniformOpenClosed();
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double theta = 2.0 * M_PI * u2;
  cached_ = r * std::sin(theta);
  has_cached_ = true;
  return r * std::cos(theta);
}

void NoiseGenerator::AddGaussianNoise(absl::Span<float> values, double stddev) {
  FEDGE_CHECK(stddev >= 0.0 && std::isfinite(stddev));
  if (stddev == 0.0) return;
  for (float& v : values) v = static_cast<float>(v + stddev * StandardNormal());
}

absl::StatusOr<std::unique_ptr<AdaptiveClipping>> AdaptiveClipping::Create(
    const Options& o) {
  FEDGE_RETURN_IF_ERROR(CheckPositiveFinite("initial clip norm", o.initial_clip_norm));
  FEDGE_RETURN_IF_ERROR(CheckPositiveFinite("clip learning rate", o.learning_rate));
  if (!(o.target_quantile > 0.0 && o.target_quantile < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("DP: target quantile must be in (0, 1), got ", o.target_quantile));
  }
  if (!(o.clipped_count_stddev >= 0.0) || std::isinf(o.clipped_count_stddev)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DP: clipped-count stddev must be finite and >= 0, got ", o.clipped_count_stddev));
  }
  return std::unique_ptr<AdaptiveClipping>(new AdaptiveClipping(o));
}

absl::StatusOr<double> AdaptiveClipping::Update(int64_t num_unclipped, int64_t num_clients,
                                                NoiseGenerator& noise) {
  if (num_clients <= 0 || num_unclipped < 0 || num_unclipped > num_clients) {
    return absl::InvalidArgumentError(absl::StrCat("DP: adaptive clipping got ", num_unclipped,
                                                   " unclipped of ", num_clients, " clients"));
  }
  return UpdateFromNoisedCount(static_cast<double>(num_unclipped) +
                                   options_.clipped_count_stddev * noise.StandardNormal(),
                               num_clients);
}

absl::StatusOr<double> AdaptiveClipping::UpdateFromNoisedCount(double noised_unclipped,
                                                               int64_t num_clients) {
  if (num_clients <= 0 || !std::isfinite(noised_unclipped)) {
    return absl::InvalidArgumentError(absl::StrCat("DP: adaptive clipping got a count of ",
                                                   noised_unclipped, " of ", num_clients,
                                                   " clients"));
  }
  const double b_bar = noised_unclipped / static_cast<double>(num_clients);
  clip_norm_ *= std::exp(-options_.learning_rate * (b_bar - options_.target_quantile));
  return b_bar;
}

absl::StatusOr<double> AdaptiveClipping::UpdateNoiseMultiplier(double noise_multiplier) const {
  FEDGE_RETURN_IF_ERROR(CheckPositiveFinite("noise multiplier", noise_multiplier));
  const double sb = options_.clipped_count_stddev;
  const double inv = 1.0 / (noise_multiplier * noise_multiplier) -
                     (sb > 0 ? 1.0 / (4.0 * sb * sb) : std::numeric_limits<double>::infinity());
  if (!(inv > 0.0)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "DP: clipped-count stddev ", sb, " is too small for noise multiplier ",
        noise_multiplier, " (need 2*stddev > z)"));
  }
  return 1.0 / std::sqrt(inv);
}

}  // namespace fedge::privacy

#include "client/grpc/backoff.h"

#include <algorithm>
#include <cmath>

#include "base/status_macros.h"

namespace fedge::client {

absl::Status ValidateBackoffOptions(const BackoffOptions& o) {
  if (o.initial <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("Backoff: initial delay must be > 0");
  }
  if (o.max < o.initial) return absl::InvalidArgumentError("Backoff: max must be ≥ initial");
  if (!(o.multiplier >= 1.0) || !std::isfinite(o.multiplier)) {
    return absl::InvalidArgumentError("Backoff: multiplier must be finite and ≥ 1");
  }
  if (!(o.jitter >= 0.0 && o.jitter <= 1.0)) {
    return absl::InvalidArgumentError("Backoff: jitter must be in [0, 1]");
  }
  return absl::OkStatus();
}

Backoff::Backoff(const BackoffOptions& options, uint64_t seed)
    : options_(options), rng_(seed, /*stream=*/0xbac0ff) {
  FEDGE_CHECK(ValidateBackoffOptions(options).ok());
}

absl::Duration Backoff::NextDelay() {
  const double initial_s = absl::ToDoubleSeconds(options_.initial);
  const double max_s = absl::ToDoubleSeconds(options_.max);
  // Cap the exponent so the power never overflows; the min() below does the rest.
  const double base_s =
      std::min(max_s, initial_s * std::pow(options_.multiplier, std::min(attempt_, 64)));
  if (attempt_ < 1000) ++attempt_;
  const double factor = 1.0 + options_.jitter * (2.0 * rng_.Uniform() - 1.0);
  return absl::Seconds(base_s * factor);
}

}  // namespace fedge::client

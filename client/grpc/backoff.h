// Jittered exponential backoff for reconnecting to the coordinator.
//
//   Backoff backoff(BackoffOptions{}, /*seed=*/42);
//   while (!Connect().ok()) Sleep(backoff.NextDelay());
//   backoff.Reset();   // after a success
//
// The k-th delay (k = 0, 1, ...) is min(initial · multiplier^k, max) scaled by a factor drawn
// uniformly from [1 − jitter, 1 + jitter] (base::Rng, so a seed reproduces the schedule).
// Jitter keeps a fleet that lost the coordinator at the same moment from reconnecting in
// lockstep. Not thread-safe.
#ifndef FEDGE_CLIENT_GRPC_BACKOFF_H_
#define FEDGE_CLIENT_GRPC_BACKOFF_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "base/rng.h"

namespace fedge::client {

struct BackoffOptions {
  absl::Duration initial = absl::Milliseconds(500);
  absl::Duration max = absl::Seconds(30);
  double multiplier = 2.0;  // ≥ 1
  double jitter = 0.5;      // in [0, 1]
};

// INVALID_ARGUMENT ("Backoff: ...") for a non-positive initial delay, max < initial,
// multiplier < 1 or jitter outside [0, 1].
absl::Status ValidateBackoffOptions(const BackoffOptions& options);

class Backoff {
 public:
  // REQUIRES: ValidateBackoffOptions(options).ok().
  Backoff(const BackoffOptions& options, uint64_t seed);

  // The delay to wait before the next attempt; grows until Reset().
  absl::Duration NextDelay();
  // Back to the initial delay (call after a successful call).
  void Reset() { attempt_ = 0; }
  int attempt() const { return attempt_; }

 private:
  BackoffOptions options_;
  base::Rng rng_;
  int attempt_ = 0;
};

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_GRPC_BACKOFF_H_

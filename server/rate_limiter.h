// Token buckets per key (a room of the gRPC service: registrations per peer address). Each
// key may take `burst` calls at once, then `per_second` on average; a call over that is
// refused and the caller backs off. Memory is bounded: beyond `max_keys` keys, the keys whose
// bucket has refilled (nothing to remember) are forgotten, and if none has, new keys are
// refused until one does.
//
// Thread safety: thread-safe (one mutex).
#ifndef FEDGE_SERVER_RATE_LIMITER_H_
#define FEDGE_SERVER_RATE_LIMITER_H_

#include <cstddef>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"

namespace fedge::server {

class RateLimiter {
 public:
  struct Options {
    double per_second = 20;   // sustained rate per key (> 0)
    double burst = 500;       // bucket size (≥ 1)
    size_t max_keys = 100000;
  };
  // `clock` must outlive the limiter (null: the system clock).
  RateLimiter(Options options, base::Clock* clock);

  // Takes one token of `key`'s bucket: false when it is empty.
  bool Allow(absl::string_view key);

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time updated;
  };
  // Forgets the keys whose bucket is full again (at `now`).
  void ForgetFull(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  base::Clock& clock_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

// A gRPC peer string ("ipv4:10.0.0.7:51234", "ipv6:[::1]:5555") without its port: the
// address that connections from one host share.
std::string PeerHost(absl::string_view peer);

// True when `address` names this machine's loopback: a host or host:port ("127.0.0.1:50052",
// "[::1]:50052", "localhost:50052"), or a gRPC peer string ("ipv4:127.0.0.1:5555",
// "ipv6:[::1]:5555", "ipv6:%5B::ffff:127.0.0.1%5D:5555"). Any 127.0.0.0/8 address counts.
bool IsLoopbackAddress(absl::string_view address);

}  // namespace fedge::server

#endif  // FEDGE_SERVER_RATE_LIMITER_H_

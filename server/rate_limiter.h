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
#include <utility>

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

// Calls in flight per key (a room of the gRPC service: long polls and uploads per peer
// address). A call takes a slot for its lifetime; past `max_per_key` slots of one key, a
// new call is refused and the caller backs off. Memory: one entry per key with a call in
// flight.
//
// Thread safety: thread-safe (one mutex).
class ConcurrencyLimiter {
 public:
  explicit ConcurrencyLimiter(int max_per_key) : max_per_key_(max_per_key) {}

  // Holds one slot of a key until destroyed (movable; empty after a move).
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& o) noexcept : owner_(std::exchange(o.owner_, nullptr)), key_(std::move(o.key_)) {}
    Slot& operator=(Slot&&) = delete;
    ~Slot() {
      if (owner_ != nullptr) owner_->Release(key_);
    }
    explicit operator bool() const { return owner_ != nullptr; }

   private:
    friend class ConcurrencyLimiter;
    Slot(ConcurrencyLimiter* owner, std::string key) : owner_(owner), key_(std::move(key)) {}
    ConcurrencyLimiter* owner_ = nullptr;
    std::string key_;
  };

  // A slot of `key`, or an empty one when `key` has max_per_key calls in flight.
  Slot TryAcquire(absl::string_view key);
  int InFlight(absl::string_view key) const;

 private:
  void Release(const std::string& key);

  const int max_per_key_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> in_flight_ ABSL_GUARDED_BY(mu_);
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

#include "server/rate_limiter.h"

#include <arpa/inet.h>

#include <algorithm>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"

namespace fedge::server {

RateLimiter::RateLimiter(Options options, base::Clock* clock)
    : options_(options), clock_(clock != nullptr ? *clock : base::RealClock()) {}

void RateLimiter::ForgetFull(absl::Time now) {
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    const double refilled =
        it->second.tokens + absl::ToDoubleSeconds(now - it->second.updated) * options_.per_second;
    if (refilled >= options_.burst) {
      buckets_.erase(it++);
    } else {
      ++it;
    }
  }
}

bool RateLimiter::Allow(absl::string_view key) {
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= options_.max_keys) ForgetFull(now);
    if (buckets_.size() >= options_.max_keys) return false;
    it = buckets_.emplace(std::string(key), Bucket{options_.burst, now}).first;
  }
  Bucket& b = it->second;
  b.tokens = std::min(options_.burst,
                      b.tokens + absl::ToDoubleSeconds(now - b.updated) * options_.per_second);
  b.updated = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

ConcurrencyLimiter::Slot ConcurrencyLimiter::TryAcquire(absl::string_view key) {
  absl::MutexLock lock(&mu_);
  int& n = in_flight_[key];
  if (n >= max_per_key_) {
    if (n == 0) in_flight_.erase(std::string(key));
    return Slot();
  }
  ++n;
  return Slot(this, std::string(key));
}

int ConcurrencyLimiter::InFlight(absl::string_view key) const {
  absl::MutexLock lock(&mu_);
  auto it = in_flight_.find(key);
  return it == in_flight_.end() ? 0 : it->second;
}

void ConcurrencyLimiter::Release(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = in_flight_.find(key);
  if (it != in_flight_.end() && --it->second <= 0) in_flight_.erase(it);
}

std::string PeerHost(absl::string_view peer) {
  const size_t colon = peer.rfind(':');
  const size_t scheme = peer.find(':');
  // "ipv4:HOST:PORT" and "ipv6:[HOST]:PORT": drop the last ":PORT"; anything else as is.
  if (colon == absl::string_view::npos || colon == scheme) return std::string(peer);
  return std::string(peer.substr(0, colon));
}

bool IsLoopbackAddress(absl::string_view address) {
  std::string a(address);
  for (const char* scheme : {"ipv4:", "ipv6:"}) {
    if (absl::StartsWith(a, scheme)) a = a.substr(5);
  }
  a = absl::StrReplaceAll(a, {{"%5B", "["}, {"%5D", "]"}, {"%5b", "["}, {"%5d", "]"}});
  std::string host = a;
  if (!a.empty() && a[0] == '[') {
    const size_t close = a.find(']');
    if (close == std::string::npos) return false;
    host = a.substr(1, close - 1);
  } else if (std::count(a.begin(), a.end(), ':') == 1) {
    host = a.substr(0, a.find(':'));  // host:port
  }
  if (absl::StartsWith(host, "::ffff:")) host = host.substr(7);
  if (host == "localhost" || host == "::1") return true;
  in_addr v4;
  return inet_pton(AF_INET, host.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

}  // namespace fedge::server

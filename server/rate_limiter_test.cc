#include "server/rate_limiter.h"

#include "gtest/gtest.h"

namespace fedge::server {
namespace {

TEST(RateLimiterTest, BurstThenSustainedRatePerKey) {
  base::ManualClock clock;
  RateLimiter limiter({/*per_second=*/2, /*burst=*/5, /*max_keys=*/100}, &clock);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.Allow("ipv4:10.0.0.7")) << i;
  EXPECT_FALSE(limiter.Allow("ipv4:10.0.0.7"));
  EXPECT_TRUE(limiter.Allow("ipv4:10.0.0.8"));  // another host has its own bucket
  clock.Advance(absl::Milliseconds(500));         // one token back
  EXPECT_TRUE(limiter.Allow("ipv4:10.0.0.7"));
  EXPECT_FALSE(limiter.Allow("ipv4:10.0.0.7"));
  clock.Advance(absl::Hours(1));                  // never more than the burst
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.Allow("ipv4:10.0.0.7")) << i;
  EXPECT_FALSE(limiter.Allow("ipv4:10.0.0.7"));
}

TEST(RateLimiterTest, RemembersABoundedNumberOfKeys) {
  base::ManualClock clock;
  RateLimiter limiter({/*per_second=*/1, /*burst=*/2, /*max_keys=*/3}, &clock);
  for (const char* k : {"a", "b", "c"}) EXPECT_TRUE(limiter.Allow(k));
  EXPECT_FALSE(limiter.Allow("d"));  // three buckets still refilling: no room
  clock.Advance(absl::Seconds(2));   // all full again: forgotten, room for new keys
  EXPECT_TRUE(limiter.Allow("d"));
}

TEST(RateLimiterTest, PeerHostDropsThePort) {
  EXPECT_EQ(PeerHost("ipv4:10.0.0.7:51234"), "ipv4:10.0.0.7");
  EXPECT_EQ(PeerHost("ipv6:[::1]:5555"), "ipv6:[::1]");
  EXPECT_EQ(PeerHost("unix:/tmp/sock"), "unix:/tmp/sock");
  EXPECT_EQ(PeerHost("garbage"), "garbage");
}

TEST(ConcurrencyLimiterTest, SlotsPerKeyAreReleasedWithTheCall) {
  ConcurrencyLimiter limiter(2);
  ConcurrencyLimiter::Slot a = limiter.TryAcquire("ipv4:10.0.0.7");
  ConcurrencyLimiter::Slot b = limiter.TryAcquire("ipv4:10.0.0.7");
  EXPECT_TRUE(a && b);
  EXPECT_FALSE(limiter.TryAcquire("ipv4:10.0.0.7"));  // full
  EXPECT_TRUE(limiter.TryAcquire("ipv4:10.0.0.8"));   // another address; released at once
  EXPECT_EQ(limiter.InFlight("ipv4:10.0.0.8"), 0);
  {
    ConcurrencyLimiter::Slot moved = std::move(a);
    EXPECT_EQ(limiter.InFlight("ipv4:10.0.0.7"), 2);
  }
  EXPECT_EQ(limiter.InFlight("ipv4:10.0.0.7"), 1);
  EXPECT_TRUE(limiter.TryAcquire("ipv4:10.0.0.7"));
  ConcurrencyLimiter none(0);
  EXPECT_FALSE(none.TryAcquire("x"));
  EXPECT_EQ(none.InFlight("x"), 0);
}

TEST(RateLimiterTest, LoopbackAddressesAreRecognised) {
  for (const char* a : {"127.0.0.1:50052", "127.1.2.3", "[::1]:5", "::1", "localhost:1",
                        "ipv4:127.0.0.1:5555", "ipv6:[::1]:5555", "ipv6:%5B::1%5D:5555",
                        "ipv6:%5B::ffff:127.0.0.1%5D:5555"}) {
    EXPECT_TRUE(IsLoopbackAddress(a)) << a;
  }
  for (const char* a : {"0.0.0.0:50052", "10.0.0.7:1", "[::]:5", "ipv4:192.168.1.2:7",
                        "ipv6:[2001:db8::1]:5", "example.com:1", "128.0.0.1", "", "[::1"}) {
    EXPECT_FALSE(IsLoopbackAddress(a)) << a;
  }
}

}  // namespace
}  // namespace fedge::server

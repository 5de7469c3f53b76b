#include "privacy/sodium.h"

#include <sodium.h>

#include <vector>

#include "gtest/gtest.h"

namespace fedge::privacy {
namespace {

// Reading the stream in odd-sized pieces across buffer refills gives exactly the one-shot
// crypto_stream_chacha20 keystream for the same key and nonce.
TEST(ChaChaStreamTest, MatchesOneShotKeystreamAcrossRefills) {
  ASSERT_TRUE(EnsureSodium().ok());
  Seed seed;
  for (int i = 0; i < 32; ++i) seed[i] = static_cast<uint8_t>(i * 7 + 1);
  const uint64_t nonce = 0x0102030405060708ull;
  std::vector<uint8_t> expected(5000);
  uint8_t n[8];
  for (int i = 0; i < 8; ++i) n[i] = static_cast<uint8_t>(nonce >> (8 * i));
  crypto_stream_chacha20(expected.data(), expected.size(), n, seed.data());
  ChaChaStream s(seed, nonce);
  std::vector<uint8_t> got(5000);
  size_t off = 0;
  for (size_t piece : {1u, 63u, 1000u, 7u, 2000u}) {
    s.Fill(absl::MakeSpan(got.data() + off, piece));
    off += piece;
  }
  s.Fill(absl::MakeSpan(got.data() + off, got.size() - off));
  EXPECT_EQ(got, expected);
}

TEST(ChaChaStreamTest, UniformIsInOpenClosedUnitInterval) {
  Seed seed{};
  ChaChaStream s(seed);
  double lo = 1.0, hi = 0.0;
  for (int i = 0; i < 100000; ++i) {
    const double u = s.UniformOpenClosed();
    lo = std::min(lo, u);
    hi = std::max(hi, u);
  }
  EXPECT_GT(lo, 0.0);
  EXPECT_LE(hi, 1.0);
  EXPECT_LT(lo, 1e-3);
  EXPECT_GT(hi, 1 - 1e-3);
}

TEST(SodiumTest, RandomSeedsDiffer) {
  ASSERT_TRUE(EnsureSodium().ok());
  EXPECT_NE(RandomSeed(), RandomSeed());
}

}  // namespace
}  // namespace fedge::privacy

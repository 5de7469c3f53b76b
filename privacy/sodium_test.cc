#include "privacy/sodium.h"

#include <sodium.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
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

// FIPS 180-2's test vectors; a file's digest is its bytes' whatever the read size.
TEST(SodiumTest, Sha256MatchesTheStandardsVectors) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const std::string path =
      (std::filesystem::temp_directory_path() / ("sha_test_" + std::to_string(::getpid()))).string();
  std::string big(3 * (1 << 20) + 17, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7919 % 251);
  {
    std::ofstream out(path, std::ios::binary);
    out.write(big.data(), static_cast<std::streamsize>(big.size()));
  }
  auto file = Sha256FileHex(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file, Sha256Hex(big));
  std::filesystem::remove(path);
  EXPECT_EQ(Sha256FileHex(path).status().code(), absl::StatusCode::kNotFound);
}

TEST(SodiumTest, RandomSeedsDiffer) {
  ASSERT_TRUE(EnsureSodium().ok());
  EXPECT_NE(RandomSeed(), RandomSeed());
}

}  // namespace
}  // namespace fedge::privacy

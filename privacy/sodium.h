// Thin libsodium wrappers shared by privacy/: one-time library initialisation, OS-random
// seeds, a ChaCha20 keystream used as a seeded PRG (DP noise, secure-aggregation masks), and
// SHA-256 digests of files (what names a language model's base file).
#ifndef FEDGE_PRIVACY_SODIUM_H_
#define FEDGE_PRIVACY_SODIUM_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace fedge::privacy {

using Seed = std::array<uint8_t, 32>;

// sodium_init(), once per process; thread-safe and cheap after the first call.
// INTERNAL if libsodium cannot initialise (no entropy source).
absl::Status EnsureSodium();

// 32 bytes from libsodium's randombytes_buf (the OS CSPRNG). REQUIRES EnsureSodium() ok.
Seed RandomSeed();

// SHA-256 of `bytes`, as 64 lowercase hex characters.
std::string Sha256Hex(absl::string_view bytes);
// SHA-256 of the file at `path`, read in 1 MiB pieces (never held whole), as
// 64 lowercase hex characters. NOT_FOUND when it cannot be opened; DATA_LOSS when a read
// fails.
absl::StatusOr<std::string> Sha256FileHex(const std::string& path);

// The ChaCha20 keystream (crypto_stream_chacha20: 256-bit key = seed, 64-bit nonce, 64-bit
// block counter from 0) read sequentially: byte i of the stream is byte i of
// crypto_stream_chacha20(out, len, nonce, seed). Deterministic in (seed, nonce).
// Not thread-safe; a value type.
class ChaChaStream final {
 public:
  explicit ChaChaStream(const Seed& seed, uint64_t nonce = 0);
  ~ChaChaStream();  // wipes key and buffer

  void Fill(absl::Span<uint8_t> out);
  uint64_t NextU64();  // 8 little-endian stream bytes
  uint32_t NextU32();  // 4 little-endian stream bytes
  // Uniform in (0, 1]: (k + 1) / 2^53 for 53 stream bits k (never 0, so log() is finite).
  double UniformOpenClosed();

 private:
  void Refill();

  Seed key_;
  std::array<uint8_t, 8> nonce_;
  uint64_t next_block_ = 0;
  std::array<uint8_t, 1024> buf_;  // 16 ChaCha20 blocks
  size_t pos_ = sizeof(buf_);
};

}  // namespace fedge::privacy

#endif  // FEDGE_PRIVACY_SODIUM_H_

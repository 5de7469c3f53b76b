#include "privacy/sodium.h"

#include <sodium.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace fedge::privacy {

absl::Status EnsureSodium() {
  static const int rc = sodium_init();  // 0 first time, 1 if already initialised, -1 error
  if (rc < 0) return absl::InternalError("sodium: sodium_init failed");
  return absl::OkStatus();
}

Seed RandomSeed() {
  Seed s;
  randombytes_buf(s.data(), s.size());
  return s;
}

std::string Sha256Hex(absl::string_view bytes) {
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(out, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(out), sizeof(out)));
}

absl::StatusOr<std::string> Sha256FileHex(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("Sha256FileHex: cannot open ", path));
  crypto_hash_sha256_state state;
  crypto_hash_sha256_init(&state);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n > 0) {
      crypto_hash_sha256_update(&state, reinterpret_cast<const unsigned char*>(buf.data()),
                                static_cast<unsigned long long>(n));
    }
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("Sha256FileHex: reading ", path, " failed"));
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&state, out);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(out), sizeof(out)));
}

ChaChaStream::ChaChaStream(const Seed& seed, uint64_t nonce) : key_(seed) {
  static_assert(crypto_stream_chacha20_KEYBYTES == 32, "ChaCha20 key is 32 bytes");
  static_assert(crypto_stream_chacha20_NONCEBYTES == 8, "ChaCha20 nonce is 8 bytes");
  for (int i = 0; i < 8; ++i) nonce_[i] = static_cast<uint8_t>(nonce >> (8 * i));
}

ChaChaStream::~ChaChaStream() {
  sodium_memzero(key_.data(), key_.size());
  sodium_memzero(buf_.data(), buf_.size());
}

void ChaChaStream::Refill() {
  std::memset(buf_.data(), 0, buf_.size());
  crypto_stream_chacha20_xor_ic(buf_.data(), buf_.data(), buf_.size(), nonce_.data(),
                                next_block_, key_.data());
  next_block_ += buf_.size() / 64;
  pos_ = 0;
}

void ChaChaStream::Fill(absl::Span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    if (pos_ == buf_.size()) Refill();
    const size_t n = std::min(out.size() - done, buf_.size() - pos_);
    std::memcpy(out.data() + done, buf_.data() + pos_, n);
    pos_ += n;
    done += n;
  }
}

uint64_t ChaChaStream::NextU64() {
  uint8_t b[8];
  Fill(absl::MakeSpan(b, 8));
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

uint32_t ChaChaStream::NextU32() {
  uint8_t b[4];
  Fill(absl::MakeSpan(b, 4));
  return static_cast<uint32_t>(b[0]) | static_cast<uint32_t>(b[1]) << 8 |
         static_cast<uint32_t>(b[2]) << 16 | static_cast<uint32_t>(b[3]) << 24;
}

double ChaChaStream::UniformOpenClosed() {
  return static_cast<double>((NextU64() >> 11) + 1) * 0x1.0p-53;
}

}  // namespace fedge::privacy

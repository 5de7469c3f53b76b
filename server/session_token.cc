#include "server/session_token.h"

#include <sodium.h>

#include "base/status_macros.h"

namespace fedge::server {
namespace {

void EnsureSodium() {
  // sodium_init is thread-safe and idempotent; it fails only when no entropy source exists.
  FEDGE_CHECK(sodium_init() >= 0);
}

}  // namespace

std::string GenerateSessionToken() {
  EnsureSodium();
  unsigned char raw[32];
  randombytes_buf(raw, sizeof(raw));
  char hex[2 * sizeof(raw) + 1];
  sodium_bin2hex(hex, sizeof(hex), raw, sizeof(raw));
  sodium_memzero(raw, sizeof(raw));
  return std::string(hex, 2 * sizeof(raw));
}

std::string HashSessionToken(absl::string_view token) {
  EnsureSodium();
  static_assert(crypto_hash_sha256_BYTES == kSessionTokenHashBytes, "SHA-256 is 32 bytes");
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(out, reinterpret_cast<const unsigned char*>(token.data()), token.size());
  return std::string(reinterpret_cast<const char*>(out), sizeof(out));
}

bool SessionTokenHashesEqual(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace fedge::server

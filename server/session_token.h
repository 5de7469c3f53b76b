// Session tokens: random bearer secrets handed to a client at registration. The coordinator
// keeps only their SHA-256 (a leaked database or log does not let anyone impersonate a
// client) and compares hashes in constant time.
#ifndef FEDGE_SERVER_SESSION_TOKEN_H_
#define FEDGE_SERVER_SESSION_TOKEN_H_

#include <string>

#include "absl/strings/string_view.h"

namespace fedge::server {

inline constexpr size_t kSessionTokenHashBytes = 32;

// 32 bytes from libsodium's CSPRNG, as 64 lowercase hex characters.
std::string GenerateSessionToken();

// SHA-256 of the token: kSessionTokenHashBytes raw bytes.
std::string HashSessionToken(absl::string_view token);

// Constant-time equality of two hashes (false when the lengths differ).
bool SessionTokenHashesEqual(absl::string_view a, absl::string_view b);

}  // namespace fedge::server

#endif  // FEDGE_SERVER_SESSION_TOKEN_H_

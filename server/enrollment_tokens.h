// Who may enrol a device (a room of the coordinator, used by its registry and by the Admin
// service): the deployment's enrollment token (fedge-coordinator --enrollment-token-file;
// no limits) and named tokens an operator creates (fedgectl enrollment create), each with a
// use count (the new devices it may enrol), an expiry and a registration rate of its own,
// revocable. A token is shown once at creation; the store (or, without one, this room)
// keeps only its SHA-256.
//
//   FEDGE_ASSIGN_OR_RETURN(std::string name, tokens.Check(request.enrollment_token()));
//   ... a new id for the device ...  FEDGE_RETURN_IF_ERROR(tokens.Use(name));
//
// A token's limits (uses, expiry, revocation) apply to new devices: a device re-registering
// under its proven id (its device key) needs only a token that exists, and counts no use.
// To cut a device off, revoke the device (Admin.RevokeDevice).
// Errors: UNAUTHENTICATED for a token that is none of these; PERMISSION_DENIED (Use) for a
// revoked, expired or used-up one; RESOURCE_EXHAUSTED past its registration rate.
//
// Thread safety: thread-safe.
#ifndef FEDGE_SERVER_ENROLLMENT_TOKENS_H_
#define FEDGE_SERVER_ENROLLMENT_TOKENS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/clock.h"
#include "proto/admin.pb.h"
#include "server/rate_limiter.h"
#include "server/store.h"

namespace fedge::server {

struct EnrollmentOptions {
  std::string deployment_token;  // required
  base::Clock* clock = nullptr;  // required
  // Registrations per token (the deployment's included): a burst, then a rate; 0 = no limit
  // (in-process callers such as the simulator, which enrol a population at once).
  double per_token_per_second = 0;
  double per_token_burst = 2000;
};

class EnrollmentTokens {
 public:
  // `store` may be null (named tokens then live in memory); it must outlive this.
  EnrollmentTokens(EnrollmentOptions options, Store* store);

  // The token's name ("" for the deployment's): UNAUTHENTICATED when it is no token;
  // RESOURCE_EXHAUSTED past its rate (each call counts).
  absl::StatusOr<std::string> Check(const std::string& token);
  // One more device enrolled with named token `name` (nothing for ""). PERMISSION_DENIED
  // when it was revoked, expired or used up since Check.
  absl::Status Use(const std::string& name);

  // ---- operators (Admin) ----
  // INVALID_ARGUMENT for a name outside [A-Za-z0-9._@-]{1,64} or negative counts;
  // ALREADY_EXISTS for a name used before.
  absl::StatusOr<v1::CreateEnrollmentTokenResponse> Create(
      const v1::CreateEnrollmentTokenRequest& request);
  absl::StatusOr<std::vector<v1::EnrollmentTokenRecord>> List();
  absl::StatusOr<v1::EnrollmentTokenRecord> Revoke(const std::string& name);

 private:
  struct Entry {
    v1::EnrollmentTokenRecord record;
    std::string hash;
  };
  int64_t NowMs() const;
  // Without a store: the record whose hash this is.
  Entry* FindLocked(const std::string& hash) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Why a record admits no new device now ("" when it does).
  std::string Refusal(const v1::EnrollmentTokenRecord& r) const;

  const EnrollmentOptions options_;
  const std::string deployment_hash_;
  Store* const store_;
  std::unique_ptr<RateLimiter> rate_;  // null: no limit
  absl::Mutex mu_;
  std::vector<Entry> memory_ ABSL_GUARDED_BY(mu_);  // without a store
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_ENROLLMENT_TOKENS_H_

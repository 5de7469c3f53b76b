#include "server/enrollment_tokens.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/session_token.h"

namespace fedge::server {
namespace {

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '@' || c == '-';
    if (!ok) return false;
  }
  return true;
}

constexpr char kTokenPrefix[] = "fedge-enrol-";

}  // namespace

EnrollmentTokens::EnrollmentTokens(EnrollmentOptions options, Store* store)
    : options_(std::move(options)),
      deployment_hash_(HashSessionToken(options_.deployment_token)),
      store_(store) {
  if (options_.per_token_per_second > 0) {
    rate_ = std::make_unique<RateLimiter>(
        RateLimiter::Options{options_.per_token_per_second, options_.per_token_burst, 100000},
        options_.clock);
  }
}

int64_t EnrollmentTokens::NowMs() const { return absl::ToUnixMillis(options_.clock->Now()); }

std::string EnrollmentTokens::Refusal(const v1::EnrollmentTokenRecord& r) const {
  if (r.revoked()) return "was revoked";
  if (r.expires_unix_ms() != 0 && r.expires_unix_ms() <= NowMs()) return "has expired";
  if (r.max_uses() != 0 && r.uses() >= r.max_uses()) {
    return absl::StrCat("is used up (", r.uses(), " of ", r.max_uses(), " devices)");
  }
  return "";
}

EnrollmentTokens::Entry* EnrollmentTokens::FindLocked(const std::string& hash) {
  for (Entry& e : memory_) {
    if (SessionTokenHashesEqual(e.hash, hash)) return &e;
  }
  return nullptr;
}

absl::StatusOr<std::string> EnrollmentTokens::Check(const std::string& token) {
  const std::string hash = HashSessionToken(token);
  std::string name;
  if (!SessionTokenHashesEqual(hash, deployment_hash_)) {
    v1::EnrollmentTokenRecord record;
    if (store_ != nullptr) {
      absl::StatusOr<v1::EnrollmentTokenRecord> found = store_->FindEnrollmentToken(hash);
      if (absl::IsNotFound(found.status())) {
        return absl::UnauthenticatedError("Coordinator: wrong enrollment token");
      }
      FEDGE_RETURN_IF_ERROR(found.status());
      record = *std::move(found);
    } else {
      absl::MutexLock lock(&mu_);
      const Entry* e = FindLocked(hash);
      if (e == nullptr) return absl::UnauthenticatedError("Coordinator: wrong enrollment token");
      record = e->record;
    }
    name = record.name();  // its limits apply to new devices only (Use)
  }
  if (rate_ != nullptr && !rate_->Allow(name)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "Coordinator: too many registrations with enrollment token '",
        name.empty() ? "(the deployment's)" : name, "'; retry later"));
  }
  return name;
}

absl::Status EnrollmentTokens::Use(const std::string& name) {
  if (name.empty()) return absl::OkStatus();
  if (store_ != nullptr) {
    absl::Status s = store_->UseEnrollmentToken(name, NowMs());
    if (!absl::IsPermissionDenied(s)) return s;
    // Say which limit it hit.
    FEDGE_ASSIGN_OR_RETURN(std::vector<v1::EnrollmentTokenRecord> all, store_->ListEnrollmentTokens());
    for (const v1::EnrollmentTokenRecord& r : all) {
      if (r.name() == name && !Refusal(r).empty()) {
        return absl::PermissionDeniedError(
            absl::StrCat("Coordinator: enrollment token '", name, "' ", Refusal(r)));
      }
    }
    return absl::PermissionDeniedError(
        absl::StrCat("Coordinator: enrollment token '", name, "' admits no new device"));
  }
  absl::MutexLock lock(&mu_);
  for (Entry& e : memory_) {
    if (e.record.name() != name) continue;
    if (const std::string why = Refusal(e.record); !why.empty()) {
      return absl::PermissionDeniedError(
          absl::StrCat("Coordinator: enrollment token '", name, "' ", why));
    }
    e.record.set_uses(e.record.uses() + 1);
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat("Coordinator: no enrollment token '", name, "'"));
}

absl::StatusOr<v1::CreateEnrollmentTokenResponse> EnrollmentTokens::Create(
    const v1::CreateEnrollmentTokenRequest& request) {
  if (!ValidName(request.name())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Admin: an enrollment token's name has 1-64 characters from A-Z a-z 0-9 . _ @ -; got '",
        absl::CEscape(request.name().substr(0, 80)), "'"));
  }
  if (request.max_uses() < 0 || request.expires_in_seconds() < 0 ||
      request.expires_in_seconds() > int64_t{10} * 365 * 86400) {
    return absl::InvalidArgumentError(
        "Admin: max_uses must be ≥ 0 and expires_in_seconds in [0, 10 years]");
  }
  v1::CreateEnrollmentTokenResponse response;
  response.set_token(absl::StrCat(kTokenPrefix, GenerateSessionToken()));
  const std::string hash = HashSessionToken(response.token());
  v1::EnrollmentTokenRecord& r = *response.mutable_record();
  r.set_name(request.name());
  r.set_max_uses(request.max_uses());
  r.set_created_unix_ms(NowMs());
  if (request.expires_in_seconds() > 0) {
    r.set_expires_unix_ms(r.created_unix_ms() + request.expires_in_seconds() * 1000);
  }
  if (store_ != nullptr) {
    FEDGE_RETURN_IF_ERROR(store_->CreateEnrollmentToken(r, hash));
    return response;
  }
  absl::MutexLock lock(&mu_);
  for (const Entry& e : memory_) {
    if (e.record.name() == r.name()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "Admin: enrollment token '", r.name(), "' exists (names are never reused)"));
    }
  }
  memory_.push_back(Entry{r, hash});
  return response;
}

absl::StatusOr<std::vector<v1::EnrollmentTokenRecord>> EnrollmentTokens::List() {
  if (store_ != nullptr) return store_->ListEnrollmentTokens();
  absl::MutexLock lock(&mu_);
  std::vector<v1::EnrollmentTokenRecord> out;
  for (const Entry& e : memory_) out.push_back(e.record);
  return out;
}

absl::StatusOr<v1::EnrollmentTokenRecord> EnrollmentTokens::Revoke(const std::string& name) {
  if (store_ != nullptr) return store_->RevokeEnrollmentToken(name);
  absl::MutexLock lock(&mu_);
  for (Entry& e : memory_) {
    if (e.record.name() != name) continue;
    e.record.set_revoked(true);
    return e.record;
  }
  return absl::NotFoundError(absl::StrCat("Admin: no enrollment token '", absl::CEscape(name), "'"));
}

}  // namespace fedge::server

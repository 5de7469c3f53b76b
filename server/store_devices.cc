// server::Store, the devices' tables: client records (state, session and device-key
// hashes, last seen) and enrollment tokens (uses, expiry, revocation). The opening,
// migrations, jobs, rounds and checkpoints are in server/store.cc.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "server/session_token.h"
#include "server/store.h"
#include "server/store_database.h"

namespace fedge::server {

using store_internal::CheckId;
using store_internal::kMaxIdBytes;
using store_internal::ClientStateName;
using store_internal::ParseClientState;
using store_internal::SerializeSmall;

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

absl::Status Store::PutClient(const v1::ClientRecord& record,
                              absl::string_view session_token_hash,
                              absl::string_view device_key_hash) {
  FEDGE_RETURN_IF_ERROR(CheckId("client", record.client_id()));
  if (session_token_hash.size() != kSessionTokenHashBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("Store: session token hash of client '", record.client_id(), "' has ",
                     session_token_hash.size(), " bytes, expected ", kSessionTokenHashBytes));
  }
  if (!device_key_hash.empty() && device_key_hash.size() != kSessionTokenHashBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("Store: device key hash of client '", record.client_id(), "' has ",
                     device_key_hash.size(), " bytes, expected ", kSessionTokenHashBytes));
  }
  if (record.tier().size() > kMaxIdBytes || record.relay().size() > kMaxIdBytes) {
    return absl::InvalidArgumentError("Store: client tier or relay name too long");
  }
  const char* state = ClientStateName(record.state());
  if (state == nullptr) state = "active";
  FEDGE_ASSIGN_OR_RETURN(std::string profile, SerializeSmall(record.profile(), "device profile"));
  absl::MutexLock lock(&mu_);
  const int64_t now = Now();
  FEDGE_ASSIGN_OR_RETURN(
      Statement q,
      Prepare("INSERT INTO clients (id, profile, token_hash, state, tier, enrolled_ms, "
              "                     last_seen_ms, rounds_participated, device_key_hash, relay) "
              "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
              "ON CONFLICT (id) DO UPDATE SET profile = excluded.profile, "
              "token_hash = excluded.token_hash, state = excluded.state, tier = excluded.tier, "
              "relay = excluded.relay, last_seen_ms = excluded.last_seen_ms, device_key_hash = "
              "CASE WHEN length(excluded.device_key_hash) = 32 THEN excluded.device_key_hash "
              "ELSE clients.device_key_hash END"));
  return q.BindText(1, record.client_id())
      .BindBlob(2, profile)
      .BindBlob(3, session_token_hash)
      .BindText(4, state)
      .BindText(5, record.tier())
      .Bind(6, record.enrolled_unix_ms() > 0 ? record.enrolled_unix_ms() : now)
      .Bind(7, record.last_seen_unix_ms() > 0 ? record.last_seen_unix_ms() : now)
      .Bind(8, record.rounds_participated())
      .BindBlob(9, device_key_hash)
      .BindText(10, record.relay())
      .Run("write client");
}

absl::StatusOr<v1::ClientRecord> Store::GetClient(const std::string& client_id) {
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(
      Statement q,
      Prepare("SELECT id, profile, state, tier, enrolled_ms, last_seen_ms, rounds_participated, "
              "relay FROM clients WHERE id = $1"));
  FEDGE_ASSIGN_OR_RETURN(bool row, q.BindText(1, client_id).Next("read client"));
  if (!row) return absl::NotFoundError(absl::StrCat("Store: no client '", client_id, "'"));
  v1::ClientRecord c;
  c.set_client_id(q.Text(0));
  const absl::string_view profile = q.Blob(1);
  if (!c.mutable_profile()->ParseFromArray(profile.data(), static_cast<int>(profile.size()))) {
    return absl::DataLossError(
        absl::StrCat("Store: profile of client '", client_id, "' does not parse (", path(), ")"));
  }
  c.set_state(ParseClientState(q.Text(2)));
  c.set_tier(q.Text(3));
  c.set_enrolled_unix_ms(q.Int(4));
  c.set_last_seen_unix_ms(q.Int(5));
  c.set_rounds_participated(q.Int(6));
  c.set_relay(q.Text(7));
  return c;
}

absl::StatusOr<std::vector<v1::ClientRecord>> Store::ListClients(bool include_inactive) {
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(
      Statement q,
      Prepare(include_inactive
                  ? "SELECT id, profile, state, tier, enrolled_ms, last_seen_ms, "
                    "rounds_participated, relay FROM clients ORDER BY id"
                  : "SELECT id, profile, state, tier, enrolled_ms, last_seen_ms, "
                    "rounds_participated, relay FROM clients WHERE state = 'active' ORDER BY id"));
  std::vector<v1::ClientRecord> clients;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Next("list clients"));
    if (!row) break;
    v1::ClientRecord c;
    c.set_client_id(q.Text(0));
    const absl::string_view profile = q.Blob(1);
    if (!c.mutable_profile()->ParseFromArray(profile.data(), static_cast<int>(profile.size()))) {
      return absl::DataLossError(absl::StrCat("Store: profile of client '", c.client_id(),
                                              "' does not parse (", path(), ")"));
    }
    c.set_state(ParseClientState(q.Text(2)));
    c.set_tier(q.Text(3));
    c.set_enrolled_unix_ms(q.Int(4));
    c.set_last_seen_unix_ms(q.Int(5));
    c.set_rounds_participated(q.Int(6));
    c.set_relay(q.Text(7));
    clients.push_back(std::move(c));
  }
  return clients;
}

absl::Status Store::SetClientRelay(const std::string& client_id, const std::string& relay) {
  if (relay.size() > kMaxIdBytes) return absl::InvalidArgumentError("Store: relay name too long");
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(Statement q, Prepare("UPDATE clients SET relay = $2 WHERE id = $1"));
  FEDGE_RETURN_IF_ERROR(q.BindText(1, client_id).BindText(2, relay).Run("update client relay"));
  if (q.changes() == 0) return absl::NotFoundError(absl::StrCat("Store: no client '", client_id, "'"));
  return absl::OkStatus();
}

absl::Status Store::SetClientState(const std::string& client_id, v1::ClientState state) {
  const char* name = ClientStateName(state);
  if (name == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("Store: invalid client state ", v1::ClientState_Name(state)));
  }
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(Statement q, Prepare("UPDATE clients SET state = $2 WHERE id = $1"));
  FEDGE_RETURN_IF_ERROR(q.BindText(1, client_id).BindText(2, name).Run("update client state"));
  if (q.changes() == 0) return absl::NotFoundError(absl::StrCat("Store: no client '", client_id, "'"));
  return absl::OkStatus();
}

absl::Status Store::TouchClients(const std::vector<std::string>& client_ids) {
  if (client_ids.empty()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  Transaction tx(db_.get());
  FEDGE_RETURN_IF_ERROR(tx.Begin());
  FEDGE_ASSIGN_OR_RETURN(Statement q,
                         Prepare("UPDATE clients SET last_seen_ms = $2 WHERE id = $1"));
  const int64_t now = Now();
  for (const std::string& id : client_ids) {
    FEDGE_RETURN_IF_ERROR(q.Reset().BindText(1, id).Bind(2, now).Run("touch client"));
  }
  return tx.Commit();
}

absl::Status Store::VerifyClientSecret(const std::string& client_id, absl::string_view secret,
                                       const char* column, absl::string_view what) {
  const std::string presented = HashSessionToken(secret);
  std::string stored;
  {
    absl::MutexLock lock(&mu_);
    const std::string sql = absl::StrCat("SELECT ", column, " FROM clients WHERE id = $1");
    FEDGE_ASSIGN_OR_RETURN(Statement q, Prepare(sql.c_str()));
    FEDGE_ASSIGN_OR_RETURN(bool row, q.BindText(1, client_id).Next("read a client's secret hash"));
    if (row) stored = std::string(q.Blob(0));
  }
  if (stored.size() != kSessionTokenHashBytes || !SessionTokenHashesEqual(stored, presented)) {
    return absl::UnauthenticatedError(
        absl::StrCat("Store: unknown client '", client_id, "' or wrong ", what));
  }
  return absl::OkStatus();
}

absl::Status Store::VerifySessionToken(const std::string& client_id,
                                       absl::string_view session_token) {
  return VerifyClientSecret(client_id, session_token, "token_hash", "session token");
}

absl::Status Store::VerifyDeviceKey(const std::string& client_id, absl::string_view device_key) {
  return VerifyClientSecret(client_id, device_key, "device_key_hash", "device key");
}

// ---------------------------------------------------------------------------------------
// Enrollment tokens
// ---------------------------------------------------------------------------------------

namespace {
constexpr char kEnrollmentColumns[] =
    "name, max_uses, uses, expires_ms, created_ms, revoked FROM enrollment_tokens";
v1::EnrollmentTokenRecord EnrollmentRecordOf(int64_t max_uses, int64_t uses, int64_t expires,
                                             int64_t created, bool revoked, std::string name) {
  v1::EnrollmentTokenRecord r;
  r.set_name(std::move(name));
  r.set_max_uses(max_uses);
  r.set_uses(uses);
  r.set_expires_unix_ms(expires);
  r.set_created_unix_ms(created);
  r.set_revoked(revoked);
  return r;
}
}  // namespace

absl::Status Store::CreateEnrollmentToken(const v1::EnrollmentTokenRecord& record,
                                          absl::string_view token_hash) {
  FEDGE_RETURN_IF_ERROR(CheckId("enrollment token", record.name()));
  if (token_hash.size() != kSessionTokenHashBytes) {
    return absl::InvalidArgumentError("Store: an enrollment token hash has 32 bytes");
  }
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(Statement q,
                         Prepare("INSERT INTO enrollment_tokens (name, token_hash, max_uses, expires_ms, "
                                 "created_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"));
  FEDGE_RETURN_IF_ERROR(q.BindText(1, record.name())
                            .BindBlob(2, token_hash)
                            .Bind(3, record.max_uses())
                            .Bind(4, record.expires_unix_ms())
                            .Bind(5, record.created_unix_ms())
                            .Run("create an enrollment token"));
  if (q.changes() == 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("Store: enrollment token '", record.name(), "' exists (names are never reused)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::EnrollmentTokenRecord>> Store::ListEnrollmentTokens() {
  absl::MutexLock lock(&mu_);
  const std::string sql = absl::StrCat("SELECT ", kEnrollmentColumns, " ORDER BY created_ms, name");
  FEDGE_ASSIGN_OR_RETURN(Statement q, Prepare(sql.c_str()));
  std::vector<v1::EnrollmentTokenRecord> out;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Next("list enrollment tokens"));
    if (!row) break;
    out.push_back(EnrollmentRecordOf(q.Int(1), q.Int(2), q.Int(3), q.Int(4), q.Int(5) != 0, q.Text(0)));
  }
  return out;
}

absl::StatusOr<v1::EnrollmentTokenRecord> Store::RevokeEnrollmentToken(const std::string& name) {
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(Statement u,
                         Prepare("UPDATE enrollment_tokens SET revoked = 1 WHERE name = $1"));
  FEDGE_RETURN_IF_ERROR(u.BindText(1, name).Run("revoke an enrollment token"));
  if (u.changes() == 0) {
    return absl::NotFoundError(absl::StrCat("Store: no enrollment token '", name, "'"));
  }
  const std::string sql = absl::StrCat("SELECT ", kEnrollmentColumns, " WHERE name = $1");
  FEDGE_ASSIGN_OR_RETURN(Statement q, Prepare(sql.c_str()));
  FEDGE_ASSIGN_OR_RETURN(bool row, q.BindText(1, name).Next("read an enrollment token"));
  if (!row) return absl::NotFoundError(absl::StrCat("Store: no enrollment token '", name, "'"));
  return EnrollmentRecordOf(q.Int(1), q.Int(2), q.Int(3), q.Int(4), q.Int(5) != 0, q.Text(0));
}

absl::StatusOr<v1::EnrollmentTokenRecord> Store::FindEnrollmentToken(absl::string_view token_hash) {
  absl::MutexLock lock(&mu_);
  const std::string sql = absl::StrCat("SELECT ", kEnrollmentColumns, " WHERE token_hash = $1");
  FEDGE_ASSIGN_OR_RETURN(Statement q, Prepare(sql.c_str()));
  FEDGE_ASSIGN_OR_RETURN(bool row, q.BindBlob(1, token_hash).Next("find an enrollment token"));
  if (!row) return absl::NotFoundError("Store: no such enrollment token");
  return EnrollmentRecordOf(q.Int(1), q.Int(2), q.Int(3), q.Int(4), q.Int(5) != 0, q.Text(0));
}

absl::Status Store::UseEnrollmentToken(const std::string& name, int64_t now_unix_ms) {
  absl::MutexLock lock(&mu_);
  // One statement: the checks and the count move together (no use past max_uses).
  FEDGE_ASSIGN_OR_RETURN(
      Statement q, Prepare("UPDATE enrollment_tokens SET uses = uses + 1 WHERE name = $1 AND "
                           "revoked = 0 AND (max_uses = 0 OR uses < max_uses) AND "
                           "(expires_ms = 0 OR expires_ms > $2)"));
  FEDGE_RETURN_IF_ERROR(q.BindText(1, name).Bind(2, now_unix_ms).Run("use an enrollment token"));
  if (q.changes() == 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "Store: enrollment token '", name, "' is revoked, expired or used up"));
  }
  return absl::OkStatus();
}

}  // namespace fedge::server

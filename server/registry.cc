#include "server/registry.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace fedge::server {
namespace {

int64_t UnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

// An id a trusted caller may ask for: 1-128 characters from [A-Za-z0-9_.-].
bool NameableId(const std::string& id) {
  return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

}  // namespace

uint32_t ClientRegistry::StringPool::Intern(const std::string& s) {
  auto [it, inserted] = index_.try_emplace(s, static_cast<uint32_t>(strings_.size()));
  if (inserted) strings_.push_back(s);
  return it->second;
}

ClientRegistry::ClientRegistry(RegistryOptions options, Store* store)
    : options_(std::move(options)), store_(store) {}

absl::Status ClientRegistry::Restore() {
  if (store_ == nullptr) return absl::OkStatus();
  FEDGE_ASSIGN_OR_RETURN(std::vector<v1::ClientRecord> records, store_->ListClients(true));
  const absl::Time now = options_.clock->Now();
  absl::MutexLock lock(&mu_);
  for (const v1::ClientRecord& r : records) {
    // Active devices, and revoked ones (whose id must stay refused).
    if (r.state() != v1::CLIENT_STATE_ACTIVE && r.state() != v1::CLIENT_STATE_REVOKED) continue;
    Entry& e = clients_[r.client_id()];
    e = Entry{};
    e.last_seen = now;
    e.enrolled_unix_ms = r.enrolled_unix_ms();
    e.rounds_participated = r.rounds_participated();
    SetProfile(e, r.profile());
    e.tier = strings_.Intern(r.tier());
    e.state = static_cast<uint8_t>(r.state());
    e.relay = strings_.Intern(r.relay());
    // A device stored without a relay may be the root's own or a relay's from before the
    // store kept relays: the first relay that reports it gets it, until it is seen.
    e.restored = r.relay().empty();
    if (!r.declined_reason().empty()) declined_reasons_[r.client_id()] = r.declined_reason();
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::RegisterResponse> ClientRegistry::Register(const v1::RegisterRequest& request,
                                                              const std::string& relay_id) {
  FEDGE_ASSIGN_OR_RETURN(const std::string token_name,
                         options_.enrollment->Check(request.enrollment_token()));
  const v1::DeviceProfile& p = request.profile();
  if (p.memory_budget_bytes() < 0 || p.num_examples() < 0 ||
      p.num_examples() > options_.max_examples_per_client || p.platform().size() > 128 ||
      p.client_version().size() > 128 || request.previous_client_id().size() > 128 ||
      request.device_key().size() > 128) {
    return absl::InvalidArgumentError(
        "Coordinator: device profile out of bounds (negative sizes, too many examples, or "
        "strings over 128 bytes)");
  }
  const std::string token = GenerateSessionToken();
  const std::string token_hash = HashSessionToken(token);
  const absl::Time now = options_.clock->Now();
  absl::MutexLock lock(&mu_);
  std::string id = request.previous_client_id();
  const auto known = clients_.find(id);
  // The old id only with the device's key: anyone with the enrollment token could name it.
  const bool proven = known != clients_.end() && DeviceKeyMatches(id, known->second,
                                                                  request.device_key());
  if (proven && known->second.state == v1::CLIENT_STATE_REVOKED) {
    return absl::PermissionDeniedError(
        absl::StrCat("Coordinator: device ", id, " was revoked by an operator"));
  }
  const bool named = !proven && known == clients_.end() &&
                     options_.accept_requested_client_ids && NameableId(id);
  if (!proven && !named) id = absl::StrCat("c-", GenerateSessionToken().substr(0, 16));
  // A new device counts one use of a named token (a proven re-registration none).
  if (!proven) FEDGE_RETURN_IF_ERROR(options_.enrollment->Use(token_name));
  // A new id comes with a new device key; the registry keeps only its hash.
  const std::string device_key = proven ? std::string() : GenerateSessionToken();
  const std::string key_hash = proven ? std::string() : HashSessionToken(device_key);
  Entry& e = clients_[id];
  SetProfile(e, p);
  e.relay = strings_.Intern(relay_id);
  e.restored = false;
  e.state = v1::CLIENT_STATE_ACTIVE;
  e.declined_in_job = false;  // its profile may have changed
  declined_reasons_.erase(id);
  if (e.enrolled_unix_ms == 0) e.enrolled_unix_ms = UnixMs(now);
  e.last_seen = now;
  if (store_ != nullptr) {
    FEDGE_RETURN_IF_ERROR(store_->PutClient(RecordOf(id, e), token_hash, key_hash));
  } else {
    FEDGE_CHECK(token_hash.size() == e.token_hash.size());
    std::copy(token_hash.begin(), token_hash.end(), e.token_hash.begin());
    e.has_token_hash = true;
    if (!proven) {
      FEDGE_CHECK(key_hash.size() == e.key_hash.size());
      std::copy(key_hash.begin(), key_hash.end(), e.key_hash.begin());
      e.has_key_hash = true;
    }
  }
  v1::RegisterResponse response;
  response.set_client_id(id);
  response.set_session_token(token);
  response.set_liveness_timeout_ms(absl::ToInt64Milliseconds(options_.liveness_timeout));
  response.set_device_key(device_key);
  return response;
}

void ClientRegistry::Reserve(size_t clients) {
  absl::MutexLock lock(&mu_);
  clients_.reserve(clients);
}

bool ClientRegistry::DeviceKeyMatches(const std::string& client_id, const Entry& e,
                                      const std::string& device_key) {
  if (device_key.empty()) return false;
  if (store_ != nullptr) return store_->VerifyDeviceKey(client_id, device_key).ok();
  return e.has_key_hash &&
         SessionTokenHashesEqual(absl::string_view(e.key_hash.data(), e.key_hash.size()),
                                 HashSessionToken(device_key));
}

absl::Status ClientRegistry::CheckSession(const std::string& client_id,
                                          const std::string& session_token) {
  auto it = clients_.find(client_id);
  if (it == clients_.end() || it->second.state == v1::CLIENT_STATE_LEFT ||
      it->second.state == v1::CLIENT_STATE_REVOKED) {
    return absl::UnauthenticatedError("Coordinator: unknown client or wrong session token");
  }
  if (store_ != nullptr) return store_->VerifySessionToken(client_id, session_token);
  const Entry& e = it->second;
  if (!e.has_token_hash ||
      !SessionTokenHashesEqual(absl::string_view(e.token_hash.data(), e.token_hash.size()),
                               HashSessionToken(session_token))) {
    return absl::UnauthenticatedError("Coordinator: unknown client or wrong session token");
  }
  return absl::OkStatus();
}

size_t ClientRegistry::SeenThroughRelay(const std::string& relay_id,
                                        const std::vector<std::string>& client_ids) {
  const absl::Time now = options_.clock->Now();
  absl::MutexLock lock(&mu_);
  const uint32_t relay = strings_.Intern(relay_id);
  size_t marked = 0;
  for (const std::string& id : client_ids) {
    auto it = clients_.find(id);
    if (it == clients_.end() || it->second.state != v1::CLIENT_STATE_ACTIVE) continue;
    Entry& e = it->second;
    if (e.relay != relay && !e.restored) continue;
    if (e.relay != relay && store_ != nullptr && !store_->SetClientRelay(id, relay_id).ok()) {
      continue;  // not kept: the device stays unclaimed
    }
    e.last_seen = now;
    e.relay = relay;
    e.restored = false;
    ++marked;
  }
  return marked;
}

std::string ClientRegistry::RelayOf(const std::string& client_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = clients_.find(client_id);
  return it == clients_.end() ? std::string() : strings_.Get(it->second.relay);
}

void ClientRegistry::Adopt(const v1::RegisterResponse& granted, const v1::DeviceProfile& profile) {
  const std::string token_hash = HashSessionToken(granted.session_token());
  absl::MutexLock lock(&mu_);
  Entry& e = clients_[granted.client_id()];
  SetProfile(e, profile);
  e.state = v1::CLIENT_STATE_ACTIVE;
  e.declined_in_job = false;
  declined_reasons_.erase(granted.client_id());
  const absl::Time now = options_.clock->Now();
  if (e.enrolled_unix_ms == 0) e.enrolled_unix_ms = UnixMs(now);
  e.last_seen = now;
  FEDGE_CHECK(token_hash.size() == e.token_hash.size());
  std::copy(token_hash.begin(), token_hash.end(), e.token_hash.begin());
  e.has_token_hash = true;
}

std::vector<std::string> ClientRegistry::SeenSince(absl::Time since) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [id, e] : clients_) {
    if (e.state == v1::CLIENT_STATE_ACTIVE && e.last_seen >= since) out.push_back(id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::Status ClientRegistry::Authenticate(const std::string& client_id,
                                          const std::string& session_token, Seen seen) {
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(CheckSession(client_id, session_token));
  Entry& e = clients_[client_id];
  e.last_seen = options_.clock->Now();
  if (seen == Seen::kFetching) {
    e.state = v1::CLIENT_STATE_ACTIVE;
    if (e.relay != 0 && store_ != nullptr) {
      // It moved off its relay to the root itself: the store keeps that.
      FEDGE_RETURN_IF_ERROR(store_->SetClientRelay(client_id, ""));
    }
    e.relay = 0;
    e.restored = false;
  }
  return absl::OkStatus();
}

absl::Status ClientRegistry::Leave(const std::string& client_id,
                                   const std::string& session_token) {
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(CheckSession(client_id, session_token));
  clients_[client_id].state = v1::CLIENT_STATE_LEFT;
  if (store_ != nullptr) return store_->SetClientState(client_id, v1::CLIENT_STATE_LEFT);
  return absl::OkStatus();
}

absl::StatusOr<v1::ClientRecord> ClientRegistry::Revoke(const std::string& client_id) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client_id);
  if (it == clients_.end()) {
    return absl::NotFoundError(absl::StrCat("Coordinator: no device '", client_id, "'"));
  }
  it->second.state = v1::CLIENT_STATE_REVOKED;
  it->second.has_token_hash = false;  // its session ends (with a store: CheckSession refuses)
  if (store_ != nullptr) {
    FEDGE_RETURN_IF_ERROR(store_->SetClientState(client_id, v1::CLIENT_STATE_REVOKED));
  }
  return RecordOf(client_id, it->second);
}

bool ClientRegistry::LiveLocked(const Entry& e, absl::Time now) const {
  return e.state == v1::CLIENT_STATE_ACTIVE && now - e.last_seen <= options_.liveness_timeout;
}

bool ClientRegistry::Live(const std::string& client_id, absl::Time now) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = clients_.find(client_id);
  return it != clients_.end() && LiveLocked(it->second, now);
}

bool ClientRegistry::Known(const std::string& client_id) const {
  absl::ReaderMutexLock lock(&mu_);
  return clients_.contains(client_id);
}

std::vector<std::string> ClientRegistry::LiveIds(absl::Time now, bool relayed) const {
  absl::ReaderMutexLock lock(&mu_);
  // Pointers first (8 bytes a device), sorted, then the ids copied once.
  std::vector<const std::string*> live;
  live.reserve(clients_.size());
  for (const auto& [id, e] : clients_) {
    if (LiveLocked(e, now) && !e.declined_in_job && (relayed || e.relay == 0)) {
      live.push_back(&id);
    }
  }
  std::sort(live.begin(), live.end(),
            [](const std::string* a, const std::string* b) { return *a < *b; });
  std::vector<std::string> out;
  out.reserve(live.size());
  for (const std::string* id : live) out.push_back(*id);
  return out;
}

size_t ClientRegistry::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return clients_.size();
}

void ClientRegistry::SetProfile(Entry& e, const v1::DeviceProfile& profile) {
  e.memory_budget_bytes = profile.memory_budget_bytes();
  e.num_examples = profile.num_examples();
  e.compute_class = profile.compute_class();
  e.platform = strings_.Intern(profile.platform());
  e.client_version = strings_.Intern(profile.client_version());
}

v1::DeviceProfile ClientRegistry::ProfileOfLocked(const Entry& e) const {
  v1::DeviceProfile p;
  p.set_memory_budget_bytes(e.memory_budget_bytes);
  p.set_compute_class(static_cast<v1::ComputeClass>(e.compute_class));
  p.set_num_examples(e.num_examples);
  p.set_platform(strings_.Get(e.platform));
  p.set_client_version(strings_.Get(e.client_version));
  return p;
}

v1::DeviceProfile ClientRegistry::ProfileOf(const std::string& client_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = clients_.find(client_id);
  return it == clients_.end() ? v1::DeviceProfile() : ProfileOfLocked(it->second);
}

void ClientRegistry::SetTier(const std::string& client_id, const std::string& tier) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client_id);
  if (it != clients_.end()) it->second.tier = strings_.Intern(tier);
}

void ClientRegistry::MarkDeclined(const std::string& client_id, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client_id);
  if (it == clients_.end()) return;
  it->second.declined_in_job = true;
  declined_reasons_[client_id] = reason;
}

void ClientRegistry::ClearJobDeclines() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, e] : clients_) e.declined_in_job = false;
}

void ClientRegistry::CountParticipation(const std::vector<std::string>& client_ids) {
  absl::MutexLock lock(&mu_);
  for (const std::string& id : client_ids) {
    auto it = clients_.find(id);
    if (it != clients_.end()) ++it->second.rounds_participated;
  }
}

v1::ClientRecord ClientRegistry::RecordOf(const std::string& client_id, const Entry& e) const {
  v1::ClientRecord r;
  r.set_client_id(client_id);
  *r.mutable_profile() = ProfileOfLocked(e);
  r.set_state(static_cast<v1::ClientState>(e.state));
  r.set_enrolled_unix_ms(e.enrolled_unix_ms);
  r.set_last_seen_unix_ms(UnixMs(e.last_seen));
  r.set_rounds_participated(e.rounds_participated);
  r.set_tier(strings_.Get(e.tier));
  r.set_relay(strings_.Get(e.relay));
  if (auto it = declined_reasons_.find(client_id); it != declined_reasons_.end()) {
    r.set_declined_reason(it->second);
  }
  return r;
}

std::vector<v1::ClientRecord> ClientRegistry::Records() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<v1::ClientRecord> out;
  out.reserve(clients_.size());
  for (const auto& [id, e] : clients_) out.push_back(RecordOf(id, e));
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.client_id() < b.client_id(); });
  return out;
}

}  // namespace fedge::server

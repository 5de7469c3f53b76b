// The coordinator's registry of devices (a room of server::Coordinator): enrollment,
// session authentication, profiles, liveness, and each device's record for operators and
// the store.
//
//   ClientRegistry registry(options, store);        // store may be null (memory only)
//   registry.Restore();                              // a restarted coordinator's devices
//   auto r = registry.Register(request);             // a device enrolls (or re-enrolls)
//   registry.Authenticate(id, token, kFetching);     // every later call of that device
//   std::vector<std::string> live = registry.LiveIds(now);   // who a round may sample
//
// Enrollment: the token must be the deployment's or a live named one (enrollment_tokens.h,
// which compares SHA-256 hashes in constant time); a new device counts one use of a named
// token. A device gets a random id ("c-" and 16 hex characters), a session token and a
// device key (each 32 random bytes in hex). Identity: a device that names its previous id
// keeps it, a fresh session replacing the old one, only when it also presents that id's
// device key (compared as SHA-256, in constant time); anyone else naming the id, enrollment
// token or not, gets a new id and key, and the named device's session is untouched. The
// registry keeps only the key's hash (in the store, or in the entry without one). With
// accept_requested_client_ids (trusted in-process callers: the simulator) a new device gets
// the id it asks for.
// Sessions: with a store, the store keeps SHA-256 of the session token; without one, the
// registry does (in the entry). A device that left is unknown until it registers again.
// Memory: about 175 bytes a device (the simulator registers 100,000): profile strings are
// interned (a fleet has a handful of platforms and versions).
// Declines: a device that declined a task of the running job (over its memory budget) is
// not sampled again until it registers again (its profile may change) or a new job starts.
//
// Thread safety: thread-safe (one mutex of its own; it calls nothing that calls back).
#ifndef FEDGE_SERVER_REGISTRY_H_
#define FEDGE_SERVER_REGISTRY_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "proto/coordinator.pb.h"
#include "server/enrollment_tokens.h"
#include "server/session_token.h"
#include "server/store.h"

namespace fedge::server {

struct RegistryOptions {
  base::Clock* clock = nullptr;  // required
  EnrollmentTokens* enrollment = nullptr;  // required; must outlive the registry
  // A device that has not been seen for this long is not live (not sampled).
  absl::Duration liveness_timeout = absl::Seconds(60);
  int64_t max_examples_per_client = int64_t{1} << 30;
  bool accept_requested_client_ids = false;
};

class ClientRegistry {
 public:
  // `store` may be null; otherwise it must outlive the registry.
  ClientRegistry(RegistryOptions options, Store* store);

  // Loads the store's devices; they count as seen now (devices reconnect by themselves).
  absl::Status Restore();

  // UNAUTHENTICATED for a wrong enrollment token; INVALID_ARGUMENT for a profile out of
  // bounds (negative sizes, more examples than max_examples_per_client, strings over 128
  // bytes). Errors of the store. RegisterResponse.device_key is set when the id is new.
  // `relay_id`: the relay that forwarded the registration (the device is that relay's);
  // empty: the device called the root itself.
  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request,
                                                const std::string& relay_id = "");
  // Room for `clients` devices in all (the table is sized once).
  void Reserve(size_t clients);

  // How a call marks the device: any call counts as seen; a FetchTask also makes it
  // ACTIVE again, and the root's own device (no relay's).
  enum class Seen { kCall, kFetching };
  // UNAUTHENTICATED for an unknown device, one that left, or a wrong session token.
  absl::Status Authenticate(const std::string& client_id, const std::string& session_token,
                            Seen seen = Seen::kCall);
  // The device leaves (its session ends). Errors: Authenticate's, the store's.
  absl::Status Leave(const std::string& client_id, const std::string& session_token);
  // An operator revokes the device: state REVOKED; its session and its id are refused from
  // now on (a Register naming the id with its key is PERMISSION_DENIED; without the key it
  // is a new device, as for anyone). Returns its record. NOT_FOUND for an unknown id.
  absl::StatusOr<v1::ClientRecord> Revoke(const std::string& client_id);

  bool Live(const std::string& client_id, absl::Time now) const;
  // The ids of the live devices that did not decline a task of the running job, sorted.
  // `relayed`: with the devices a relay serves.
  std::vector<std::string> LiveIds(absl::Time now, bool relayed = true) const;
  // Whether the registry holds `client_id` (in any state).
  bool Known(const std::string& client_id) const;
  size_t size() const;

  // The device's profile as it registered it (an empty profile for an unknown id).
  v1::DeviceProfile ProfileOf(const std::string& client_id) const;
  // The sub-model tier the device was last given ("" = the full model).
  void SetTier(const std::string& client_id, const std::string& tier);
  // The device declined a task of the running job, saying why.
  void MarkDeclined(const std::string& client_id, const std::string& reason);
  // A new job: every device may be sampled again (reasons stay on the records).
  void ClearJobDeclines();
  // One more completed round for each of `client_ids`.
  void CountParticipation(const std::vector<std::string>& client_ids);

  // Every device's record, sorted by id.
  std::vector<v1::ClientRecord> Records() const;

  // ---- relays (docs/relays.md) ----
  // Root: relay `relay_id` saw `client_ids` call it: each active device of that relay
  // (it registered through it) counts as seen now. A relay cannot claim another relay's
  // devices or the root's own: those, and unknown, departed and revoked ids, are skipped.
  // The exception is a device restored from the store that has not been seen since (the
  // store does not keep which relay a device is on): the first relay to report it gets it.
  // Returns how many were marked.
  size_t SeenThroughRelay(const std::string& relay_id, const std::vector<std::string>& client_ids);
  // The relay that last saw the device ("": it calls the root itself).
  std::string RelayOf(const std::string& client_id) const;
  // Relay: a device the root registered (the relay forwarded its Register): its id and
  // session, with its profile, replacing any earlier session of that id. A relay has no
  // store.
  void Adopt(const v1::RegisterResponse& granted, const v1::DeviceProfile& profile);
  // The devices seen since `since` (a relay's report to its root), sorted.
  std::vector<std::string> SeenSince(absl::Time since) const;

 private:
  // One device, compact: the fields of its v1::ClientRecord, with the profile's and the
  // tier's strings interned in strings_.
  struct Entry {
    absl::Time last_seen;
    int64_t enrolled_unix_ms = 0;
    int64_t rounds_participated = 0;
    int64_t memory_budget_bytes = 0;  // DeviceProfile
    int64_t num_examples = 0;         // DeviceProfile
    int32_t compute_class = 0;        // DeviceProfile, a v1::ComputeClass
    uint32_t platform = 0;            // DeviceProfile, index into strings_
    uint32_t client_version = 0;      // DeviceProfile, index into strings_
    uint32_t tier = 0;                // index into strings_ ("" = the full model)
    uint32_t relay = 0;               // index into strings_ ("" = no relay)
    bool restored = false;            // from the store, not seen since (its relay unknown)
    uint8_t state = v1::CLIENT_STATE_UNSPECIFIED;  // a v1::ClientState
    bool declined_in_job = false;
    // Without a store: SHA-256 of the session token (the store keeps it otherwise).
    bool has_token_hash = false;
    std::array<char, kSessionTokenHashBytes> token_hash{};
    // Without a store: SHA-256 of the device key (the store keeps it otherwise).
    bool has_key_hash = false;
    std::array<char, kSessionTokenHashBytes> key_hash{};
  };
  // Interned strings (platforms, client versions, tier names). Index 0 is "". Never shrinks.
  class StringPool {
   public:
    uint32_t Intern(const std::string& s);
    // Valid until the next Intern.
    const std::string& Get(uint32_t index) const { return strings_[index]; }

   private:
    std::vector<std::string> strings_{std::string()};
    absl::flat_hash_map<std::string, uint32_t> index_{{std::string(), 0}};
  };

  bool LiveLocked(const Entry& e, absl::Time now) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void SetProfile(Entry& e, const v1::DeviceProfile& profile) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::DeviceProfile ProfileOfLocked(const Entry& e) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  v1::ClientRecord RecordOf(const std::string& client_id, const Entry& e) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Whether `device_key` is the key issued to `client_id` (entry `e`).
  bool DeviceKeyMatches(const std::string& client_id, const Entry& e,
                        const std::string& device_key) ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Authenticate's checks, the lock held.
  absl::Status CheckSession(const std::string& client_id, const std::string& session_token)
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const RegistryOptions options_;
  Store* const store_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> clients_ ABSL_GUARDED_BY(mu_);
  StringPool strings_ ABSL_GUARDED_BY(mu_);
  // ClientRecord.declined_reason of the devices that have one (few).
  absl::flat_hash_map<std::string, std::string> declined_reasons_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_REGISTRY_H_

// The coordinator's durable state: jobs, rounds (with their metrics), the client registry,
// enrollment tokens and the model checkpoints of the last K completed rounds of each job.
// It lives in one SQLite file, <state_dir>/coordinator.db (the default: embedded, one
// machine), or in a PostgreSQL database (two coordinators on two machines, one active and
// one standby). Both run the same statements and the same migrations
// (server/store_database.h).
//
// Durability. SQLite runs in WAL mode with synchronous=FULL: every commit fsyncs the
// WAL before it returns, so a round that CommitRound reported as committed survives not
// only kill -9 of the coordinator (which NORMAL would also survive) but a power cut or
// kernel crash (which NORMAL may roll back). The coordinator commits a few times per round
// (seconds to minutes apart), so the extra fsync costs nothing that matters; losing a
// completed round would cost a round of every client's work. PostgreSQL gives the same
// with its defaults (synchronous_commit=on). A round's record, its metrics
// and its model checkpoint commit in ONE transaction (CommitRound), so after any crash the
// latest checkpoint is the model of the last completed round, and a restart resumes there.
//
// Exclusivity. SQLite: Open takes an advisory lock (flock) on
// <state_dir>/coordinator.db.lock, so a second coordinator on the same state dir fails fast
// with a clear error instead of interleaving rounds. The kernel drops the lock when the
// process dies, even by SIGKILL. Read-only inspection with the sqlite3 shell stays possible
// while a coordinator runs.
//
// PostgreSQL: a lease row (table fedge_lease) names the one process that may write, until
// an expiry computed by the database's clock (no trust in the coordinators' clocks). Open
// waits until it can take the lease: a second coordinator is a standby that takes over
// when the holder stops renewing (killed, machine lost, cut off), at most one lease plus
// one poll later (StoreOptions::lease); it waits through database outages too. Every write
// runs in a transaction that first renews the lease of this process (locking its row until
// the commit, so no takeover slips in) and renews it again at the commit (a write longer
// than the lease keeps it; a standby finding the row locked sees a live holder). A holder
// whose lease another process took can never write again, even once that process is gone:
// it learns so on its next write or renewal (on_lease_lost), and its in-memory state is
// stale. Holder names carry a random nonce, so two processes never share one. A database
// restart is waited out: calls reconnect for up to StoreOptions::reconnect_wait, and a
// write whose connection broke before its commit was sent is retried whole. One row holds
// at most 1 GiB (PostgreSQL's message limit): a checkpoint's model and optimizer state
// together must fit.
//
// Text. Ids are UTF-8 without NUL on both engines (INVALID_ARGUMENT otherwise); a job's
// message is cut at a character boundary, ill-formed bytes replaced.
//
// Schema. A one-row table schema_version holds the version; Open applies the migrations
// from the stored version up to kSchemaVersion in one transaction (version 0 = empty file),
// and refuses a database written by a newer fedge.
//
// Secrets. The clients table keeps SHA-256 hashes of session tokens, never the tokens.
//
// Errors. Every method returns absl::Status / StatusOr whose message starts with "Store: ".
// NOT_FOUND for a missing job, round, client or checkpoint; ALREADY_EXISTS for a duplicate
// job or a round committed twice; FAILED_PRECONDITION for out-of-order rounds and a schema
// from a newer fedge; INVALID_ARGUMENT for oversized inputs; DATA_LOSS for a corrupt file
// or a row that does not parse; UNAVAILABLE when the state dir is locked by another
// process or the database cannot be reached; PERMISSION_DENIED for a write after this
// process lost the lease; INTERNAL for other database errors.
//
// Thread safety: all methods are thread-safe (one connection, serialized by a mutex; the
// PostgreSQL lease is renewed on a connection of its own).
// Values are bound to prepared statements; no SQL is built from values.
#ifndef FEDGE_SERVER_STORE_H_
#define FEDGE_SERVER_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "proto/admin.pb.h"
#include "proto/job.pb.h"
#include "proto/model.pb.h"

namespace fedge::server {

namespace store_internal {
class Database;
}  // namespace store_internal

// SQLite's default SQLITE_MAX_LENGTH (10^9 bytes): the largest blob it stores.
inline constexpr int64_t kDefaultMaxModelBytes = 1000 * 1000 * 1000;
// Job configs, metrics and device profiles are small; anything larger is a bug or an attack.
inline constexpr int64_t kMaxSmallBlobBytes = 16 << 20;

struct StoreOptions {
  // A checkpoint whose serialized ModelProto exceeds this is refused (INVALID_ARGUMENT).
  // At most kDefaultMaxModelBytes.
  int64_t max_model_bytes = kDefaultMaxModelBytes;
  // How long a statement waits for a lock held by a reader (e.g. the sqlite3 shell).
  int busy_timeout_ms = 5000;
  // Run PRAGMA quick_check at open (reads the whole file: slow for big checkpoints).
  bool verify_on_open = false;
  // Clock of created/updated/last-seen times (stored as Unix milliseconds). Not owned; must
  // outlive the Store. Default: base::RealClock().
  const base::Clock* clock = nullptr;
  // Testing only: called inside CommitRound's transaction at "after_round",
  // "after_checkpoint" and "after_prune"; a non-OK status aborts the commit there, as an
  // SQLite error at that point would.
  std::function<absl::Status(absl::string_view point)> fault_hook_for_testing;

  // ---- PostgreSQL only ----
  // How long a lease lasts without renewal; the holder renews it every third of that, a
  // standby polls as often. A standby takes over at most lease + one poll after the
  // holder stopped renewing.
  absl::Duration lease = absl::Seconds(15);
  // Names this process in the lease row and in a standby's log (default host:pid); a
  // random nonce is appended ("#" and 16 hex digits), so no two processes share a name.
  std::string holder;
  // Called once when another process took the lease: this process's writes are refused
  // from then on, and it should stop. Called from the lease thread or from a writing
  // thread with the store's mutex held: it must not call the store.
  std::function<void(const absl::Status&)> on_lease_lost;
  // Called while Open waits as a standby, every poll, with the holder and its expiry;
  // returning false stops the wait (Open returns CANCELLED), e.g. on SIGTERM.
  std::function<bool(absl::string_view holder, int64_t expires_unix_ms)> on_standby;
  // How long a call waits for the database to come back (a restart) before failing
  // UNAVAILABLE.
  absl::Duration reconnect_wait = absl::Seconds(60);
};

// A stored model checkpoint.
struct Checkpoint {
  int64_t round = 0;
  v1::ModelProto model;
  int64_t created_unix_ms = 0;
  // The strategy's SerializeState() after this round (empty: none stored, e.g. a
  // checkpoint written before schema version 2).
  std::string strategy_state;
};

class Store final {
 public:
  static constexpr char kDatabaseFileName[] = "coordinator.db";
  static constexpr int kSchemaVersion = 5;

  // Opens the store at `location` and migrates its schema:
  //  - a directory: the SQLite file in it (both created if missing), the dir locked for
  //    this process (UNAVAILABLE when another process holds it);
  //  - a postgresql:// (or postgres://) URL: that database, once this process holds its
  //    lease; until then Open waits as a standby (see PostgreSQL above).
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& location,
                                                     StoreOptions options = {});
  // True when `location` names a PostgreSQL database rather than a state dir.
  static bool IsPostgresUrl(absl::string_view location);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Where the data lives: the database file's path, or the URL without its password.
  const std::string& path() const;

  // ---- jobs ----

  // A new job in state RUNNING. ALREADY_EXISTS when the id is taken.
  absl::Status CreateJob(const std::string& job_id, const v1::JobConfig& config);
  // RUNNING, STOPPED, FINISHED or FAILED, with a reason (may be empty).
  absl::Status SetJobState(const std::string& job_id, v1::JobState state,
                           absl::string_view message);
  // The job with completed_rounds and latest_metrics filled from its rounds;
  // current_round is the round OPEN in the store, if any.
  absl::StatusOr<v1::JobStatus> GetJob(const std::string& job_id);
  // Every job, most recently created first.
  absl::StatusOr<std::vector<v1::JobStatus>> ListJobs();

  // ---- rounds ----

  // Records that `round` of `job_id` is in flight (state OPEN). `round` must be greater than
  // the job's last completed round (FAILED_PRECONDITION otherwise). Reopening a round that
  // is OPEN, FAILED or ABANDONED (a retry) resets it.
  absl::Status OpenRound(const std::string& job_id, int64_t round, int64_t started_unix_ms);
  // Closes a round that did not complete: state FAILED or ABANDONED.
  absl::Status CloseRound(const std::string& job_id, int64_t round, v1::RoundState state,
                          int64_t closed_unix_ms);
  // Marks every OPEN round of the job ABANDONED (after a restart); returns how many.
  absl::StatusOr<int> AbandonOpenRounds(const std::string& job_id);

  // In ONE transaction: marks `round` COMPLETED with `metrics` (its started/closed times
  // come from metrics.started_unix_ms / closed_unix_ms), stores `model` as the round's
  // checkpoint, deletes the job's checkpoints older than the newest `keep_checkpoints`,
  // and adds one to rounds_participated of each registered client in `participants`.
  // Either all of it is visible afterwards or none of it. `round` must exceed the last
  // completed round (ALREADY_EXISTS when it is that round, FAILED_PRECONDITION when older);
  // metrics.round must be 0 or `round`.
  absl::Status CommitRound(const std::string& job_id, int64_t round,
                           const v1::RoundMetrics& metrics, const v1::ModelProto& model,
                           int keep_checkpoints,
                           const std::vector<std::string>& participants = {},
                           absl::string_view strategy_state = {});

  absl::StatusOr<v1::RoundRecord> GetRound(const std::string& job_id, int64_t round);
  // Rounds in increasing order, starting at `from_round`, at most `limit`.
  absl::StatusOr<std::vector<v1::RoundRecord>> ListRounds(const std::string& job_id,
                                                          int64_t from_round = 1,
                                                          int limit = 1000);

  // ---- checkpoints ----

  // The checkpoint of the job's highest checkpointed round (= its last completed round).
  // NOT_FOUND when the job has none.
  absl::StatusOr<Checkpoint> LatestCheckpoint(const std::string& job_id);
  absl::StatusOr<Checkpoint> GetCheckpoint(const std::string& job_id, int64_t round);
  // Rounds that have a checkpoint, increasing.
  absl::StatusOr<std::vector<int64_t>> ListCheckpointRounds(const std::string& job_id);

  // ---- clients ----

  // Inserts the client, or replaces the profile, state, tier and token hash of an existing
  // one (re-registration keeps its enrollment time and participation count).
  // `session_token_hash` is HashSessionToken(token) (session_token.h): 32 bytes.
  // `device_key_hash` likewise for a new device key; empty keeps the stored one.
  // enrolled_unix_ms / last_seen_unix_ms of 0 mean now.
  absl::Status PutClient(const v1::ClientRecord& record, absl::string_view session_token_hash,
                         absl::string_view device_key_hash = {});
  absl::StatusOr<v1::ClientRecord> GetClient(const std::string& client_id);
  // Clients ordered by id; only ACTIVE ones unless `include_inactive`.
  absl::StatusOr<std::vector<v1::ClientRecord>> ListClients(bool include_inactive = true);
  absl::Status SetClientState(const std::string& client_id, v1::ClientState state);
  // The relay the device is on ("": the coordinator itself). NOT_FOUND for an unknown id.
  absl::Status SetClientRelay(const std::string& client_id, const std::string& relay);
  // Sets last_seen to now for each client, in one transaction (a registry flushes its
  // in-memory liveness this way rather than once per call). Unknown ids are ignored.
  absl::Status TouchClients(const std::vector<std::string>& client_ids);
  // OK when `session_token` hashes to the stored hash of `client_id`; UNAUTHENTICATED
  // otherwise, with the same message for an unknown client and a wrong token.
  absl::Status VerifySessionToken(const std::string& client_id, absl::string_view session_token);
  // OK when `device_key` hashes to the device key hash stored for `client_id`;
  // UNAUTHENTICATED otherwise (an unknown client, one without a key, a wrong key).
  absl::Status VerifyDeviceKey(const std::string& client_id, absl::string_view device_key);

  // ---- enrollment tokens (enrollment_tokens.h) ----

  // A new token (its SHA-256: 32 bytes). ALREADY_EXISTS for a name taken before, even if
  // revoked.
  absl::Status CreateEnrollmentToken(const v1::EnrollmentTokenRecord& record,
                                     absl::string_view token_hash);
  // Every token, oldest first.
  absl::StatusOr<std::vector<v1::EnrollmentTokenRecord>> ListEnrollmentTokens();
  // Marks it revoked and returns it. NOT_FOUND for an unknown name.
  absl::StatusOr<v1::EnrollmentTokenRecord> RevokeEnrollmentToken(const std::string& name);
  // The token with this hash; NOT_FOUND when none.
  absl::StatusOr<v1::EnrollmentTokenRecord> FindEnrollmentToken(absl::string_view token_hash);
  // Counts one device enrolled with it, atomically with the checks: PERMISSION_DENIED when
  // it is revoked, expired at `now_unix_ms`, used up, or unknown.
  absl::Status UseEnrollmentToken(const std::string& name, int64_t now_unix_ms);

  // ---- maintenance ----

  // PRAGMA integrity_check; DATA_LOSS listing the problems when it fails.
  absl::Status CheckIntegrity();

 private:
  class Statement;
  class Transaction;

  Store(std::unique_ptr<store_internal::Database> db, StoreOptions options);

  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Exec(const char* sql, absl::string_view what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A client's secret (`column`: its hash) against `secret`; `what` names it in the error.
  absl::Status VerifyClientSecret(const std::string& client_id, absl::string_view secret,
                                  const char* column, absl::string_view what);
  absl::StatusOr<Statement> Prepare(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Fault(absl::string_view point);
  int64_t Now() const;

  absl::StatusOr<int64_t> LastCompletedRound(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RequireJob(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::JobStatus> GetJobLocked(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& job_id, int64_t round,
                                            bool latest) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const StoreOptions options_;
  struct {
    int64_t max_row_bytes = 0;  // a checkpoint's model and strategy state together
  } db_limits_;
  absl::Mutex mu_;
  const std::unique_ptr<store_internal::Database> db_ ABSL_PT_GUARDED_BY(mu_);
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_STORE_H_

#include "server/store.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "server/store_database.h"

namespace fedge::server {

using store_internal::CheckId;
using store_internal::kMaxIdBytes;
using store_internal::ClientStateName;
using store_internal::ParseClientState;
using store_internal::SerializeSmall;

namespace {

// Schema migrations: kMigrations[v] turns a version v−1 database into version v.
// Append a new entry (and bump Store::kSchemaVersion) to change the schema; never edit a
// released entry.
constexpr const char* kMigrations[] = {
    nullptr,
    // v1: jobs, rounds, clients, checkpoints.
    R"sql(
CREATE TABLE jobs (
  id          TEXT PRIMARY KEY,
  config      {BLOB} NOT NULL,                -- serialized fedge.v1.JobConfig
  state       TEXT NOT NULL CHECK (state IN ('running', 'stopped', 'finished', 'failed')),
  message     TEXT NOT NULL DEFAULT '',
  created_ms  {INT} NOT NULL,
  updated_ms  {INT} NOT NULL
);
CREATE TABLE rounds (
  job_id      TEXT NOT NULL REFERENCES jobs(id),
  round       {INT} NOT NULL CHECK (round > 0),
  state       TEXT NOT NULL CHECK (state IN ('open', 'completed', 'failed', 'abandoned')),
  started_ms  {INT} NOT NULL,
  closed_ms   {INT},
  metrics     {BLOB},                         -- serialized fedge.v1.RoundMetrics
  PRIMARY KEY (job_id, round)
);
CREATE TABLE clients (
  id                  TEXT PRIMARY KEY,
  profile             {BLOB} NOT NULL,        -- serialized fedge.v1.DeviceProfile
  token_hash          {BLOB} NOT NULL CHECK (length(token_hash) = 32),  -- SHA-256
  state               TEXT NOT NULL CHECK (state IN ('active', 'left', 'expired')),
  tier                TEXT NOT NULL DEFAULT '',
  enrolled_ms         {INT} NOT NULL,
  last_seen_ms        {INT} NOT NULL,
  rounds_participated {INT} NOT NULL DEFAULT 0
);
CREATE TABLE checkpoints (
  job_id      TEXT NOT NULL,
  round       {INT} NOT NULL,
  model       {BLOB} NOT NULL,                -- serialized fedge.v1.ModelProto
  created_ms  {INT} NOT NULL,
  PRIMARY KEY (job_id, round),
  FOREIGN KEY (job_id, round) REFERENCES rounds(job_id, round)
);
)sql",
    // v2: the server optimizer's state (FedAdam/FedYogi moments) beside each checkpoint.
    R"sql(
ALTER TABLE checkpoints ADD COLUMN strategy_state {BLOB};
)sql",
    // v3: SHA-256 of each device's key, the proof of its id at re-registration (a client
    // enrolled before has none: naming its id gives a new one).
    R"sql(
ALTER TABLE clients ADD COLUMN device_key_hash {BLOB};
)sql",
    // v4: a client state for devices an operator revoked (SQLite cannot change a CHECK:
    // the table is rebuilt), and enrollment tokens beside the deployment's, with a use
    // count and an expiry.
    R"sql(
CREATE TABLE clients_v4 (
  id                  TEXT PRIMARY KEY,
  profile             {BLOB} NOT NULL,
  token_hash          {BLOB} NOT NULL CHECK (length(token_hash) = 32),
  state               TEXT NOT NULL CHECK (state IN ('active', 'left', 'expired', 'revoked')),
  tier                TEXT NOT NULL DEFAULT '',
  enrolled_ms         {INT} NOT NULL,
  last_seen_ms        {INT} NOT NULL,
  rounds_participated {INT} NOT NULL DEFAULT 0,
  device_key_hash     {BLOB}
);
INSERT INTO clients_v4 SELECT id, profile, token_hash, state, tier, enrolled_ms, last_seen_ms,
                              rounds_participated, device_key_hash FROM clients;
DROP TABLE clients;
ALTER TABLE clients_v4 RENAME TO clients;
CREATE TABLE enrollment_tokens (
  name        TEXT PRIMARY KEY,
  token_hash  {BLOB} NOT NULL UNIQUE CHECK (length(token_hash) = 32),  -- SHA-256
  max_uses    {INT} NOT NULL CHECK (max_uses >= 0),                -- 0 = unlimited
  uses        {INT} NOT NULL DEFAULT 0,
  expires_ms  {INT} NOT NULL DEFAULT 0,                            -- 0 = never
  created_ms  {INT} NOT NULL,
  revoked     {INT} NOT NULL DEFAULT 0
);
)sql",
    // v5: the relay each device registered through (a restarted root knows which relay
    // serves it before that relay's first report).
    R"sql(
ALTER TABLE clients ADD COLUMN relay TEXT NOT NULL DEFAULT '';
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == Store::kSchemaVersion + 1,
              "one migration per schema version");

const char* JobStateName(v1::JobState s) {
  switch (s) {
    case v1::JOB_STATE_RUNNING: return "running";
    case v1::JOB_STATE_STOPPED: return "stopped";
    case v1::JOB_STATE_FINISHED: return "finished";
    case v1::JOB_STATE_FAILED: return "failed";
    default: return nullptr;
  }
}
v1::JobState ParseJobState(const std::string& s) {
  if (s == "running") return v1::JOB_STATE_RUNNING;
  if (s == "stopped") return v1::JOB_STATE_STOPPED;
  if (s == "finished") return v1::JOB_STATE_FINISHED;
  if (s == "failed") return v1::JOB_STATE_FAILED;
  return v1::JOB_STATE_UNSPECIFIED;
}
const char* RoundStateName(v1::RoundState s) {
  switch (s) {
    case v1::ROUND_STATE_OPEN: return "open";
    case v1::ROUND_STATE_COMPLETED: return "completed";
    case v1::ROUND_STATE_FAILED: return "failed";
    case v1::ROUND_STATE_ABANDONED: return "abandoned";
    default: return nullptr;
  }
}
v1::RoundState ParseRoundState(const std::string& s) {
  if (s == "open") return v1::ROUND_STATE_OPEN;
  if (s == "completed") return v1::ROUND_STATE_COMPLETED;
  if (s == "failed") return v1::ROUND_STATE_FAILED;
  if (s == "abandoned") return v1::ROUND_STATE_ABANDONED;
  return v1::ROUND_STATE_UNSPECIFIED;
}

}  // namespace

namespace store_internal {

const char* ClientStateName(v1::ClientState s) {
  switch (s) {
    case v1::CLIENT_STATE_ACTIVE: return "active";
    case v1::CLIENT_STATE_LEFT: return "left";
    case v1::CLIENT_STATE_EXPIRED: return "expired";
    case v1::CLIENT_STATE_REVOKED: return "revoked";
    default: return nullptr;
  }
}

v1::ClientState ParseClientState(const std::string& s) {
  if (s == "active") return v1::CLIENT_STATE_ACTIVE;
  if (s == "left") return v1::CLIENT_STATE_LEFT;
  if (s == "expired") return v1::CLIENT_STATE_EXPIRED;
  if (s == "revoked") return v1::CLIENT_STATE_REVOKED;
  return v1::CLIENT_STATE_UNSPECIFIED;
}

absl::Status CheckId(absl::string_view kind, absl::string_view id) {
  if (id.empty() || id.size() > kMaxIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("Store: ", kind, " id must have 1-", kMaxIdBytes, " bytes, got ", id.size()));
  }
  // Both engines then store it as it is (PostgreSQL refuses NUL and ill-formed UTF-8).
  if (!base::IsStorableText(id)) {
    return absl::InvalidArgumentError(absl::StrCat("Store: ", kind, " id '", base::Printable(id),
                                                   "' is not UTF-8 text without NUL"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SerializeSmall(const google::protobuf::Message& m,
                                           absl::string_view what) {
  const size_t size = m.ByteSizeLong();
  if (size > static_cast<size_t>(kMaxSmallBlobBytes)) {
    return absl::InvalidArgumentError(absl::StrCat("Store: ", what, " has ", size,
                                                   " bytes, more than the limit of ",
                                                   kMaxSmallBlobBytes));
  }
  std::string out;
  if (!m.SerializeToString(&out)) {
    return absl::InternalError(absl::StrCat("Store: cannot serialize ", what));
  }
  return out;
}

}  // namespace store_internal

// ---------------------------------------------------------------------------------------
// Open, configure, migrate
// ---------------------------------------------------------------------------------------

Store::Store(std::unique_ptr<store_internal::Database> db, StoreOptions options)
    : options_(std::move(options)), db_(std::move(db)) {}

Store::~Store() = default;

const std::string& Store::path() const { return db_->where(); }

bool Store::IsPostgresUrl(absl::string_view location) {
  return absl::StartsWith(location, "postgresql://") || absl::StartsWith(location, "postgres://");
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& location,
                                                   StoreOptions options) {
  if (options.max_model_bytes <= 0 || options.max_model_bytes > kDefaultMaxModelBytes) {
    return absl::InvalidArgumentError(absl::StrCat("Store: max_model_bytes must be in [1, ",
                                                   kDefaultMaxModelBytes, "], got ",
                                                   options.max_model_bytes));
  }
  std::unique_ptr<store_internal::Database> db;
  if (IsPostgresUrl(location)) {
    FEDGE_ASSIGN_OR_RETURN(db, store_internal::OpenPostgres(location, options));
  } else {
    FEDGE_ASSIGN_OR_RETURN(db, store_internal::OpenSqlite(location, options));
  }
  const int64_t max_row_bytes = db->max_row_bytes();
  std::unique_ptr<Store> store(new Store(std::move(db), std::move(options)));
  store->db_limits_.max_row_bytes = max_row_bytes;
  {
    absl::MutexLock lock(&store->mu_);
    FEDGE_RETURN_IF_ERROR(store->Migrate());
    if (store->options_.verify_on_open) {
      FEDGE_RETURN_IF_ERROR(store->db_->CheckIntegrity(/*quick=*/true));
    }
  }
  return store;
}

absl::Status Store::Migrate() {
  Transaction tx(db_.get());
  FEDGE_RETURN_IF_ERROR(tx.Begin());
  FEDGE_RETURN_IF_ERROR(Exec(
      "CREATE TABLE IF NOT EXISTS schema_version ("
      "  id {INT} PRIMARY KEY CHECK (id = 1), version {INT} NOT NULL)",
      "create schema_version"));
  int64_t version = 0;
  {
    FEDGE_ASSIGN_OR_RETURN(Statement q, Prepare("SELECT version FROM schema_version WHERE id = 1"));
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Next("read schema version"));
    if (row) version = q.Int(0);
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("Store: ", path(), " has schema version ", version,
                     ", newer than this coordinator's ", kSchemaVersion));
  }
  if (version == kSchemaVersion) return tx.Commit();
  for (int64_t v = version + 1; v <= kSchemaVersion; ++v) {
    FEDGE_RETURN_IF_ERROR(Exec(kMigrations[v], absl::StrCat("migrate schema to version ", v)));
  }
  FEDGE_ASSIGN_OR_RETURN(
      Statement set,
      Prepare("INSERT INTO schema_version (id, version) VALUES (1, $1) "
              "ON CONFLICT (id) DO UPDATE SET version = excluded.version"));
  FEDGE_RETURN_IF_ERROR(set.Bind(1, kSchemaVersion).Run("write schema version"));
  return tx.Commit();
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

absl::StatusOr<Store::Statement> Store::Prepare(const char* sql) {
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<store_internal::Cursor> c, db_->Prepare(sql));
  return Statement(std::move(c));
}

absl::Status Store::Exec(const char* sql, absl::string_view what) { return db_->Exec(sql, what); }

absl::Status Store::Fault(absl::string_view point) {
  if (!options_.fault_hook_for_testing) return absl::OkStatus();
  return options_.fault_hook_for_testing(point);
}

int64_t Store::Now() const {
  const base::Clock& clock = options_.clock != nullptr ? *options_.clock : base::RealClock();
  return absl::ToUnixMillis(clock.Now());
}

absl::Status Store::RequireJob(const std::string& job_id) {
  FEDGE_ASSIGN_OR_RETURN(Statement q, Prepare("SELECT 1 FROM jobs WHERE id = $1"));
  FEDGE_ASSIGN_OR_RETURN(bool row, q.BindText(1, job_id).Next("look up job"));
  if (!row) return absl::NotFoundError(absl::StrCat("Store: no job '", job_id, "'"));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Store::LastCompletedRound(const std::string& job_id) {
  FEDGE_ASSIGN_OR_RETURN(
      Statement q,
      Prepare("SELECT COALESCE(MAX(round), 0) FROM rounds WHERE job_id = $1 AND state = 'completed'"));
  FEDGE_ASSIGN_OR_RETURN(bool row, q.BindText(1, job_id).Next("find last completed round"));
  return row ? q.Int(0) : 0;
}

// ---------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------

absl::Status Store::CreateJob(const std::string& job_id, const v1::JobConfig& config) {
  FEDGE_RETURN_IF_ERROR(CheckId("job", job_id));
  FEDGE_ASSIGN_OR_RETURN(std::string blob, SerializeSmall(config, "job config"));
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(Statement q, Prepare("SELECT 1 FROM jobs WHERE id = $1"));
  FEDGE_ASSIGN_OR_RETURN(bool exists, q.BindText(1, job_id).Next("look up job"));
  if (exists) return absl::AlreadyExistsError(absl::StrCat("Store: job '", job_id, "' exists"));
  const int64_t now = Now();
  FEDGE_ASSIGN_OR_RETURN(Statement ins,
                         Prepare("INSERT INTO jobs (id, config, state, created_ms, updated_ms) "
                                 "VALUES ($1, $2, 'running', $3, $3)"));
  return ins.BindText(1, job_id).BindBlob(2, blob).Bind(3, now).Run("insert job");
}

absl::Status Store::SetJobState(const std::string& job_id, v1::JobState state,
                                absl::string_view message) {
  const char* name = JobStateName(state);
  if (name == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("Store: invalid job state ", v1::JobState_Name(state)));
  }
  const std::string text = base::StorableText(message, 4096);
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(
      Statement q, Prepare("UPDATE jobs SET state = $2, message = $3, updated_ms = $4 WHERE id = $1"));
  FEDGE_RETURN_IF_ERROR(
      q.BindText(1, job_id).BindText(2, name).BindText(3, text).Bind(4, Now()).Run("update job"));
  if (q.changes() == 0) return absl::NotFoundError(absl::StrCat("Store: no job '", job_id, "'"));
  return absl::OkStatus();
}

absl::StatusOr<v1::JobStatus> Store::GetJobLocked(const std::string& job_id) {
  v1::JobStatus job;
  {
    FEDGE_ASSIGN_OR_RETURN(
        Statement q,
        Prepare("SELECT config, state, message, created_ms, updated_ms FROM jobs WHERE id = $1"));
    FEDGE_ASSIGN_OR_RETURN(bool row, q.BindText(1, job_id).Next("read job"));
    if (!row) return absl::NotFoundError(absl::StrCat("Store: no job '", job_id, "'"));
    job.set_job_id(job_id);
    const absl::string_view config = q.Blob(0);
    if (!job.mutable_config()->ParseFromArray(config.data(), static_cast<int>(config.size()))) {
      return absl::DataLossError(
          absl::StrCat("Store: config of job '", job_id, "' does not parse (", path(), ")"));
    }
    job.set_state(ParseJobState(q.Text(1)));
    job.set_message(q.Text(2));
    job.set_created_unix_ms(q.Int(3));
    job.set_updated_unix_ms(q.Int(4));
  }
  {
    FEDGE_ASSIGN_OR_RETURN(Statement q,
                           Prepare("SELECT round, metrics FROM rounds WHERE job_id = $1 AND "
                                   "state = 'completed' ORDER BY round DESC LIMIT 1"));
    FEDGE_ASSIGN_OR_RETURN(bool row, q.BindText(1, job_id).Next("read last round"));
    if (row) {
      job.set_completed_rounds(q.Int(0));
      const absl::string_view m = q.Blob(1);
      if (!job.mutable_latest_metrics()->ParseFromArray(m.data(), static_cast<int>(m.size()))) {
        return absl::DataLossError(absl::StrCat("Store: metrics of job '", job_id, "' round ",
                                                q.Int(0), " do not parse (", path(), ")"));
      }
    }
  }
  {
    FEDGE_ASSIGN_OR_RETURN(
        Statement q,
        Prepare("SELECT COALESCE(MAX(round), 0) FROM rounds WHERE job_id = $1 AND state = 'open'"));
    FEDGE_ASSIGN_OR_RETURN(bool row, q.BindText(1, job_id).Next("read open round"));
    if (row) job.set_current_round(q.Int(0));
  }
  return job;
}

absl::StatusOr<v1::JobStatus> Store::GetJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  return GetJobLocked(job_id);
}

absl::StatusOr<std::vector<v1::JobStatus>> Store::ListJobs() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  {
    FEDGE_ASSIGN_OR_RETURN(Statement q,
                           Prepare("SELECT id FROM jobs ORDER BY created_ms DESC, id DESC"));
    while (true) {
      FEDGE_ASSIGN_OR_RETURN(bool row, q.Next("list jobs"));
      if (!row) break;
      ids.push_back(q.Text(0));
    }
  }
  std::vector<v1::JobStatus> jobs;
  for (const std::string& id : ids) {
    FEDGE_ASSIGN_OR_RETURN(v1::JobStatus job, GetJobLocked(id));
    jobs.push_back(std::move(job));
  }
  return jobs;
}

// ---------------------------------------------------------------------------------------
// Rounds
// ---------------------------------------------------------------------------------------

absl::Status Store::OpenRound(const std::string& job_id, int64_t round, int64_t started_unix_ms) {
  if (round < 1) {
    return absl::InvalidArgumentError(absl::StrCat("Store: round must be >= 1, got ", round));
  }
  absl::MutexLock lock(&mu_);
  Transaction tx(db_.get());
  FEDGE_RETURN_IF_ERROR(tx.Begin());
  FEDGE_RETURN_IF_ERROR(RequireJob(job_id));
  FEDGE_ASSIGN_OR_RETURN(int64_t last, LastCompletedRound(job_id));
  if (round <= last) {
    return absl::FailedPreconditionError(
        absl::StrCat("Store: cannot open round ", round, " of job '", job_id,
                     "': round ", last, " is already completed"));
  }
  FEDGE_ASSIGN_OR_RETURN(
      Statement q,
      Prepare("INSERT INTO rounds (job_id, round, state, started_ms) VALUES ($1, $2, 'open', $3) "
              "ON CONFLICT (job_id, round) DO UPDATE SET state = 'open', "
              "started_ms = excluded.started_ms, closed_ms = NULL, metrics = NULL"));
  FEDGE_RETURN_IF_ERROR(
      q.BindText(1, job_id).Bind(2, round).Bind(3, started_unix_ms).Run("open round"));
  return tx.Commit();
}

absl::Status Store::CloseRound(const std::string& job_id, int64_t round, v1::RoundState state,
                               int64_t closed_unix_ms) {
  if (state != v1::ROUND_STATE_FAILED && state != v1::ROUND_STATE_ABANDONED) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Store: CloseRound takes FAILED or ABANDONED (use CommitRound to complete a round), got ",
        v1::RoundState_Name(state)));
  }
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(Statement q,
                         Prepare("UPDATE rounds SET state = $3, closed_ms = $4 "
                                 "WHERE job_id = $1 AND round = $2 AND state != 'completed'"));
  FEDGE_RETURN_IF_ERROR(q.BindText(1, job_id)
                            .Bind(2, round)
                            .BindText(3, RoundStateName(state))
                            .Bind(4, closed_unix_ms)
                            .Run("close round"));
  if (q.changes() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Store: round ", round, " of job '", job_id, "' does not exist or is already completed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> Store::AbandonOpenRounds(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(Statement q,
                         Prepare("UPDATE rounds SET state = 'abandoned', closed_ms = $2 "
                                 "WHERE job_id = $1 AND state = 'open'"));
  FEDGE_RETURN_IF_ERROR(q.BindText(1, job_id).Bind(2, Now()).Run("abandon open rounds"));
  return q.changes();
}

absl::Status Store::CommitRound(const std::string& job_id, int64_t round,
                                const v1::RoundMetrics& metrics, const v1::ModelProto& model,
                                int keep_checkpoints,
                                const std::vector<std::string>& participants,
                                absl::string_view strategy_state) {
  if (round < 1) {
    return absl::InvalidArgumentError(absl::StrCat("Store: round must be >= 1, got ", round));
  }
  if (keep_checkpoints < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Store: keep_checkpoints must be >= 1, got ", keep_checkpoints));
  }
  if (metrics.round() != 0 && metrics.round() != round) {
    return absl::InvalidArgumentError(absl::StrCat("Store: metrics are for round ", metrics.round(),
                                                   ", committing round ", round));
  }
  const size_t model_bytes = model.ByteSizeLong();
  if (model_bytes > static_cast<size_t>(options_.max_model_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Store: checkpoint of job '", job_id, "' round ", round, " has ", model_bytes,
        " bytes, more than the limit of ", options_.max_model_bytes));
  }
  if (model_bytes + strategy_state.size() > static_cast<size_t>(db_limits_.max_row_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Store: checkpoint of job '", job_id, "' round ", round, " has ", model_bytes,
        " bytes of model and ", strategy_state.size(), " of optimizer state, more than the ",
        db_limits_.max_row_bytes, " one row of this database holds"));
  }
  v1::RoundMetrics m = metrics;
  m.set_round(round);
  FEDGE_ASSIGN_OR_RETURN(std::string metrics_blob, SerializeSmall(m, "round metrics"));
  std::string model_blob;
  if (!model.SerializeToString(&model_blob)) {
    return absl::InternalError(absl::StrCat("Store: cannot serialize the model of round ", round));
  }

  absl::MutexLock lock(&mu_);
  Transaction tx(db_.get());
  FEDGE_RETURN_IF_ERROR(tx.Begin());
  FEDGE_RETURN_IF_ERROR(RequireJob(job_id));
  FEDGE_ASSIGN_OR_RETURN(int64_t last, LastCompletedRound(job_id));
  if (round == last) {
    return absl::AlreadyExistsError(
        absl::StrCat("Store: round ", round, " of job '", job_id, "' is already completed"));
  }
  if (round < last) {
    return absl::FailedPreconditionError(absl::StrCat("Store: cannot commit round ", round,
                                                      " of job '", job_id, "' after round ", last));
  }
  const int64_t now = Now();
  {
    FEDGE_ASSIGN_OR_RETURN(
        Statement q,
        Prepare("INSERT INTO rounds (job_id, round, state, started_ms, closed_ms, metrics) "
                "VALUES ($1, $2, 'completed', $3, $4, $5) "
                "ON CONFLICT (job_id, round) DO UPDATE SET state = 'completed', "
                "started_ms = CASE WHEN excluded.started_ms > 0 THEN excluded.started_ms "
                "                  ELSE rounds.started_ms END, "
                "closed_ms = excluded.closed_ms, metrics = excluded.metrics"));
    FEDGE_RETURN_IF_ERROR(q.BindText(1, job_id)
                              .Bind(2, round)
                              .Bind(3, m.started_unix_ms())
                              .Bind(4, m.closed_unix_ms() > 0 ? m.closed_unix_ms() : now)
                              .BindBlob(5, metrics_blob)
                              .Run("write round record"));
  }
  FEDGE_RETURN_IF_ERROR(Fault("after_round"));
  {
    FEDGE_ASSIGN_OR_RETURN(Statement q,
                           Prepare("INSERT INTO checkpoints (job_id, round, model, created_ms, "
                                   "strategy_state) VALUES ($1, $2, $3, $4, $5)"));
    FEDGE_RETURN_IF_ERROR(q.BindText(1, job_id)
                              .Bind(2, round)
                              .BindBlob(3, model_blob)
                              .Bind(4, now)
                              .BindBlob(5, strategy_state)
                              .Run("write checkpoint"));
  }
  FEDGE_RETURN_IF_ERROR(Fault("after_checkpoint"));
  {
    FEDGE_ASSIGN_OR_RETURN(
        Statement q,
        Prepare("DELETE FROM checkpoints WHERE job_id = $1 AND round NOT IN ("
                "  SELECT round FROM checkpoints WHERE job_id = $1 ORDER BY round DESC LIMIT $2)"));
    FEDGE_RETURN_IF_ERROR(
        q.BindText(1, job_id).Bind(2, keep_checkpoints).Run("prune old checkpoints"));
  }
  if (!participants.empty()) {
    FEDGE_ASSIGN_OR_RETURN(
        Statement q,
        Prepare("UPDATE clients SET rounds_participated = rounds_participated + 1 WHERE id = $1"));
    for (const std::string& id : participants) {
      FEDGE_RETURN_IF_ERROR(q.Reset().BindText(1, id).Run("count participation"));
    }
  }
  {
    FEDGE_ASSIGN_OR_RETURN(Statement q, Prepare("UPDATE jobs SET updated_ms = $2 WHERE id = $1"));
    FEDGE_RETURN_IF_ERROR(q.BindText(1, job_id).Bind(2, now).Run("touch job"));
  }
  FEDGE_RETURN_IF_ERROR(Fault("after_prune"));
  return tx.Commit();
}

namespace {

absl::Status ParseRoundRow(const std::string& job_id, int64_t round, const std::string& state,
                           int64_t started, bool closed_null, int64_t closed,
                           absl::string_view metrics, const std::string& path,
                           v1::RoundRecord* out) {
  out->set_job_id(job_id);
  out->set_round(round);
  out->set_state(ParseRoundState(state));
  out->set_started_unix_ms(started);
  if (!closed_null) out->set_closed_unix_ms(closed);
  if (!metrics.empty() &&
      !out->mutable_metrics()->ParseFromArray(metrics.data(), static_cast<int>(metrics.size()))) {
    return absl::DataLossError(absl::StrCat("Store: metrics of job '", job_id, "' round ", round,
                                            " do not parse (", path, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::RoundRecord> Store::GetRound(const std::string& job_id, int64_t round) {
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(Statement q,
                         Prepare("SELECT state, started_ms, closed_ms, metrics FROM rounds "
                                 "WHERE job_id = $1 AND round = $2"));
  FEDGE_ASSIGN_OR_RETURN(bool row, q.BindText(1, job_id).Bind(2, round).Next("read round"));
  if (!row) {
    return absl::NotFoundError(
        absl::StrCat("Store: no round ", round, " in job '", job_id, "'"));
  }
  v1::RoundRecord record;
  FEDGE_RETURN_IF_ERROR(ParseRoundRow(job_id, round, q.Text(0), q.Int(1), q.IsNull(2), q.Int(2),
                                      q.Blob(3), path(), &record));
  return record;
}

absl::StatusOr<std::vector<v1::RoundRecord>> Store::ListRounds(const std::string& job_id,
                                                               int64_t from_round, int limit) {
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(Statement q,
                         Prepare("SELECT round, state, started_ms, closed_ms, metrics FROM rounds "
                                 "WHERE job_id = $1 AND round >= $2 ORDER BY round LIMIT $3"));
  q.BindText(1, job_id).Bind(2, from_round).Bind(3, limit < 0 ? 0 : limit);
  std::vector<v1::RoundRecord> rounds;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Next("list rounds"));
    if (!row) break;
    v1::RoundRecord record;
    FEDGE_RETURN_IF_ERROR(ParseRoundRow(job_id, q.Int(0), q.Text(1), q.Int(2), q.IsNull(3),
                                        q.Int(3), q.Blob(4), path(), &record));
    rounds.push_back(std::move(record));
  }
  return rounds;
}

// ---------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------

absl::StatusOr<Checkpoint> Store::ReadCheckpoint(const std::string& job_id, int64_t round,
                                                 bool latest) {
  FEDGE_ASSIGN_OR_RETURN(
      Statement q,
      Prepare(latest ? "SELECT round, model, created_ms, strategy_state FROM checkpoints "
                       "WHERE job_id = $1 ORDER BY round DESC LIMIT 1"
                     : "SELECT round, model, created_ms, strategy_state FROM checkpoints "
                       "WHERE job_id = $1 AND round = $2"));
  q.BindText(1, job_id);
  if (!latest) q.Bind(2, round);
  FEDGE_ASSIGN_OR_RETURN(bool row, q.Next("read checkpoint"));
  if (!row) {
    return absl::NotFoundError(
        latest ? absl::StrCat("Store: job '", job_id, "' has no checkpoint")
               : absl::StrCat("Store: job '", job_id, "' has no checkpoint of round ", round));
  }
  Checkpoint cp;
  cp.round = q.Int(0);
  cp.created_unix_ms = q.Int(2);
  cp.strategy_state = std::string(q.Blob(3));
  const absl::string_view blob = q.Blob(1);
  if (!cp.model.ParseFromArray(blob.data(), static_cast<int>(blob.size()))) {
    return absl::DataLossError(absl::StrCat("Store: checkpoint of job '", job_id, "' round ",
                                            cp.round, " does not parse (", path(), ")"));
  }
  return cp;
}

absl::StatusOr<Checkpoint> Store::LatestCheckpoint(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  return ReadCheckpoint(job_id, 0, /*latest=*/true);
}

absl::StatusOr<Checkpoint> Store::GetCheckpoint(const std::string& job_id, int64_t round) {
  absl::MutexLock lock(&mu_);
  return ReadCheckpoint(job_id, round, /*latest=*/false);
}

absl::StatusOr<std::vector<int64_t>> Store::ListCheckpointRounds(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(
      Statement q, Prepare("SELECT round FROM checkpoints WHERE job_id = $1 ORDER BY round"));
  q.BindText(1, job_id);
  std::vector<int64_t> rounds;
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(bool row, q.Next("list checkpoints"));
    if (!row) break;
    rounds.push_back(q.Int(0));
  }
  return rounds;
}

// ---------------------------------------------------------------------------------------
// Maintenance
// ---------------------------------------------------------------------------------------

absl::Status Store::CheckIntegrity() {
  absl::MutexLock lock(&mu_);
  return db_->CheckIntegrity(/*quick=*/false);
}

}  // namespace fedge::server

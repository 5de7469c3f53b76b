// server::Store on PostgreSQL (libpq): the same statements as on SQLite, a lease that makes
// one coordinator the writer and the others standbys, and reconnection across a database
// restart (server/store.h, "PostgreSQL").
#include <libpq-fe.h>
#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "server/store_database.h"

namespace fedge::server::store_internal {
namespace {

// Type OIDs (pg_type.h), for parameters sent and columns read in binary form.
constexpr Oid kInt8Oid = 20;
constexpr Oid kTextOid = 25;
constexpr Oid kByteaOid = 17;

constexpr char kLeaseName[] = "root";
// The database's clock in Unix milliseconds: leases never compare two machines' clocks.
constexpr char kDbNowMs[] = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

std::string PgSql(absl::string_view sql) {
  return absl::StrReplaceAll(sql, {{"{INT}", "BIGINT"}, {"{BLOB}", "BYTEA"}});
}

// libpq's messages span lines; a log line or a status keeps them on one.
std::string Trimmed(const char* message) {
  std::string s = absl::StrReplaceAll(
      absl::StripTrailingAsciiWhitespace(message != nullptr ? message : ""), {{"\n", " "}, {"\t", ""}});
  return s;
}

void IgnoreNotice(void*, const char*) {}

// A status for a failed result (or a connection that failed without one).
absl::Status PgError(PGconn* conn, const PGresult* res, absl::string_view what,
                     const std::string& where) {
  const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  const std::string detail =
      Trimmed(res != nullptr && PQresultErrorMessage(res)[0] != '\0' ? PQresultErrorMessage(res)
                                                                     : PQerrorMessage(conn));
  const std::string tail = absl::StrCat("Store: ", what, ": ", detail, " (", where, ")");
  const absl::string_view code = state != nullptr ? state : "";
  if (code.empty() || PQstatus(conn) != CONNECTION_OK || absl::StartsWith(code, "08") ||
      absl::StartsWith(code, "57P") || code == "53300" || code == "40001" || code == "40P01") {
    return absl::UnavailableError(tail);
  }
  if (absl::StartsWith(code, "23")) return absl::FailedPreconditionError(tail);
  if (code == "53100" || code == "53200") return absl::ResourceExhaustedError(tail);
  if (absl::StartsWith(code, "22") || absl::StartsWith(code, "54")) {
    return absl::InvalidArgumentError(tail);
  }
  if (code == "XX001" || code == "XX002") return absl::DataLossError(tail);
  return absl::InternalError(tail);
}

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

int64_t BigEndian(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  if (n < 8 && n > 0 && (static_cast<unsigned char>(p[0]) & 0x80)) v |= ~uint64_t{0} << (8 * n);
  return static_cast<int64_t>(v);
}

// Parameters of one statement, all in binary form.
struct Params {
  std::vector<Oid> types;
  std::vector<std::string> owned;  // integers and texts (copied)
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
  std::vector<absl::string_view> blobs;  // not copied
  std::vector<int> kinds;                // 0 unset, 1 owned, 2 blob

  void Set(int i, Oid type, int kind, std::string owned_value, absl::string_view blob) {
    const size_t n = static_cast<size_t>(i);
    if (types.size() < n) {
      types.resize(n, kTextOid);
      owned.resize(n);
      blobs.resize(n);
      kinds.resize(n, 0);
    }
    types[n - 1] = type;
    kinds[n - 1] = kind;
    owned[n - 1] = std::move(owned_value);
    blobs[n - 1] = blob;
  }
  void Finish() {
    values.assign(types.size(), nullptr);
    lengths.assign(types.size(), 0);
    formats.assign(types.size(), 1);
    for (size_t i = 0; i < types.size(); ++i) {
      const absl::string_view v = kinds[i] == 2 ? blobs[i] : absl::string_view(owned[i]);
      values[i] = kinds[i] == 0 ? nullptr : (v.data() != nullptr ? v.data() : "");
      lengths[i] = static_cast<int>(v.size());
    }
  }
};

class PostgresDatabase;

class PostgresCursor final : public Cursor {
 public:
  PostgresCursor(PostgresDatabase* db, std::string sql) : db_(db), sql_(std::move(sql)) {}

  void BindInt(int i, int64_t v) override {
    std::string be(8, '\0');
    for (int k = 0; k < 8; ++k) be[k] = static_cast<char>(static_cast<uint64_t>(v) >> (56 - 8 * k));
    params_.Set(i, kInt8Oid, 1, std::move(be), {});
  }
  void BindText(int i, absl::string_view v) override {
    params_.Set(i, kTextOid, 1, std::string(v), {});
  }
  void BindBlob(int i, absl::string_view v) override { params_.Set(i, kByteaOid, 2, "", v); }
  absl::StatusOr<bool> Next(absl::string_view what) override;
  void Reset() override {
    params_ = Params();
    res_.reset();
    row_ = -1;
  }
  int64_t changes() const override {
    if (res_ == nullptr) return 0;
    const char* n = PQcmdTuples(res_.get());
    return n != nullptr && n[0] != '\0' ? std::strtoll(n, nullptr, 10) : 0;
  }
  bool IsNull(int col) const override { return PQgetisnull(res_.get(), row_, col) != 0; }
  int64_t Int(int col) const override {
    if (IsNull(col)) return 0;
    return BigEndian(PQgetvalue(res_.get(), row_, col), PQgetlength(res_.get(), row_, col));
  }
  std::string Text(int col) const override { return std::string(Blob(col)); }
  absl::string_view Blob(int col) const override {
    if (IsNull(col)) return {};
    return absl::string_view(PQgetvalue(res_.get(), row_, col),
                             static_cast<size_t>(PQgetlength(res_.get(), row_, col)));
  }

 private:
  PostgresDatabase* const db_;
  const std::string sql_;
  Params params_;
  Result res_;
  int row_ = -1;
};

class PostgresDatabase final : public Database {
 public:
  PostgresDatabase(std::string url, StoreOptions options)
      : url_(std::move(url)), options_(std::move(options)) {
    // host:pid plus a random nonce: two processes never share a name (a container's pid
    // is often 1 on every restart), and a name is never held twice.
    uint64_t nonce = 0;
    if (sodium_init() < 0) std::abort();
    randombytes_buf(&nonce, sizeof(nonce));
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    holder_ = absl::StrCat(options_.holder.empty() ? absl::StrCat(host, ":", getpid())
                                                   : options_.holder,
                           "#", absl::Hex(nonce, absl::kZeroPad16));
  }
  ~PostgresDatabase() override {
    {
      std::lock_guard<std::mutex> l(lease_mu_);
      stopping_ = true;
    }
    lease_cv_.notify_all();
    if (lease_thread_.joinable()) lease_thread_.join();
    // A clean stop hands the lease over at once rather than at its expiry.
    if (lease_conn_ != nullptr && !lost_.load()) {
      const char* values[] = {kLeaseName, holder_.c_str()};
      Result r(PQexecParams(lease_conn_, "DELETE FROM fedge_lease WHERE name = $1 AND holder = $2",
                            2, nullptr, values, nullptr, nullptr, 0));
    }
    if (lease_conn_ != nullptr) PQfinish(lease_conn_);
    if (conn_ != nullptr) PQfinish(conn_);
  }

  // Connects both connections, creates the lease table, and waits for the lease.
  absl::Status Start() {
    FEDGE_RETURN_IF_ERROR(Connect(&conn_, ""));
    where_ = absl::StrCat("postgresql://", PQuser(conn_), "@", PQhost(conn_), ":", PQport(conn_),
                          "/", PQdb(conn_));
    // The lease connection never queues behind a write for long: a row locked by the
    // holder's write transaction proves the holder alive (see TryAcquire).
    FEDGE_RETURN_IF_ERROR(Connect(
        &lease_conn_,
        absl::StrCat("-c lock_timeout=", std::max<int64_t>(100, absl::ToInt64Milliseconds(Poll())))));
    {
      // Two coordinators starting together must not race on CREATE TABLE.
      Result r(PQexec(conn_,
                      "BEGIN; SELECT pg_advisory_xact_lock(7400174); "
                      "CREATE TABLE IF NOT EXISTS fedge_lease (name TEXT PRIMARY KEY, "
                      "holder TEXT NOT NULL, expires_ms BIGINT NOT NULL); COMMIT"));
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
        absl::Status s = PgError(conn_, r.get(), "create the lease table", where_);
        Result rb(PQexec(conn_, "ROLLBACK"));
        return s;
      }
    }
    // A standby waits as long as it takes, through database outages too.
    bool announced = false;
    bool failing = false;
    while (true) {
      std::string holder;
      int64_t expires = 0;
      absl::StatusOr<bool> got = TryAcquire(&holder, &expires);
      if (got.ok() && *got) break;
      if (!got.ok()) {
        if (!failing) {
          FEDGE_LOG(WARNING) << "Store: waiting for the lease at " << where_ << ": "
                             << got.status().message() << " (retrying)";
        }
        failing = true;
        if (PQstatus(lease_conn_) != CONNECTION_OK) PQreset(lease_conn_);
      } else {
        failing = false;
        if (!announced) {
          FEDGE_LOG(INFO) << "Store: standby: the lease at " << where_ << " is held by "
                          << holder << "; taking over when it lapses";
          announced = true;
        }
      }
      if (options_.on_standby && !options_.on_standby(holder, expires)) {
        return absl::CancelledError(
            absl::StrCat("Store: stopped while waiting as a standby for the lease at ", where_));
      }
      absl::SleepFor(Poll());
    }
    if (PQstatus(conn_) != CONNECTION_OK) FEDGE_RETURN_IF_ERROR(Reconnect(&conn_));
    FEDGE_LOG(INFO) << "Store: " << holder_ << " holds the lease at " << where_ << " ("
                    << absl::FormatDuration(options_.lease) << ", renewed every "
                    << absl::FormatDuration(Poll()) << ")";
    lease_thread_ = std::thread([this] { KeepLease(); });
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Cursor>> Prepare(absl::string_view sql) override {
    return std::unique_ptr<Cursor>(new PostgresCursor(this, PgSql(sql)));
  }
  absl::Status Exec(absl::string_view sql, absl::string_view what) override {
    FEDGE_RETURN_IF_ERROR(EnsureConnected());
    const std::string text = PgSql(sql);
    Result r(PQexec(conn_, text.c_str()));
    const ExecStatusType st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return PgError(conn_, r.get(), what, where_);
    return absl::OkStatus();
  }
  absl::Status Begin() override {
    for (int attempt = 0;; ++attempt) {
      FEDGE_RETURN_IF_ERROR(EnsureConnected());
      Result r(PQexec(conn_, "BEGIN"));
      if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) break;
      if (PQstatus(conn_) == CONNECTION_OK || attempt > 0) {
        return PgError(conn_, r.get(), "begin transaction", where_);
      }
    }
    absl::Status fenced = Fence();
    if (!fenced.ok()) Rollback();
    return fenced;
  }
  // Renews the lease as of the commit (a long transaction does not let it lapse), then
  // commits. PostgreSQL answers COMMIT of a failed transaction with ROLLBACK: an error.
  absl::Status Commit() override {
    FEDGE_RETURN_IF_ERROR(Fence());
    Result r(PQexec(conn_, "COMMIT"));
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) return PgError(conn_, r.get(), "commit", where_);
    if (std::strcmp(PQcmdStatus(r.get()), "COMMIT") != 0) {
      return absl::AbortedError(absl::StrCat("Store: the transaction was rolled back (", where_, ")"));
    }
    return absl::OkStatus();
  }
  void Rollback() override { Result r(PQexec(conn_, "ROLLBACK")); }
  bool InTransaction() const override {
    const PGTransactionStatusType t = PQtransactionStatus(conn_);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
  }
  // PostgreSQL checks pages as it reads them (and checksums when the cluster has them);
  // here: that the database answers and holds the schema.
  absl::Status CheckIntegrity(bool) override {
    return Exec("SELECT version FROM schema_version", "check the schema");
  }
  const std::string& where() const override { return where_; }
  // One Bind message and one DataRow are each at most 1 GiB in PostgreSQL.
  int64_t max_row_bytes() const override { return (int64_t{1} << 30) - (int64_t{16} << 20); }

  // Runs `sql` with `params`: inside the open transaction; or, for a write, in a
  // transaction of its own behind the lease check; or alone. A connection that broke
  // before anything could commit is re-established and the statement run again.
  absl::StatusOr<Result> Run(const std::string& sql, Params& params, absl::string_view what) {
    params.Finish();
    const bool write = !InTransaction() && IsWrite(sql);
    for (int attempt = 0;; ++attempt) {
      const bool in_tx = InTransaction();
      if (!in_tx) FEDGE_RETURN_IF_ERROR(EnsureConnected());
      if (write) FEDGE_RETURN_IF_ERROR(Begin());
      Result r(PQexecParams(conn_, sql.c_str(), static_cast<int>(params.types.size()),
                            params.types.data(), params.values.data(), params.lengths.data(),
                            params.formats.data(), /*resultFormat=*/1));
      const ExecStatusType st = PQresultStatus(r.get());
      if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (write) FEDGE_RETURN_IF_ERROR(Commit());
        return r;
      }
      absl::Status error = PgError(conn_, r.get(), what, where_);
      if (write) Rollback();
      // Retried only when no transaction of the caller's was lost with the connection.
      if (in_tx || PQstatus(conn_) == CONNECTION_OK || attempt > 0) return error;
    }
  }

 private:
  static bool IsWrite(absl::string_view sql) {
    sql = absl::StripLeadingAsciiWhitespace(sql);
    return absl::StartsWithIgnoreCase(sql, "INSERT") || absl::StartsWithIgnoreCase(sql, "UPDATE") ||
           absl::StartsWithIgnoreCase(sql, "DELETE");
  }

  absl::Duration Poll() const { return options_.lease / 3; }

  // Keepalives and a TCP user timeout: a database cut off mid-call fails the call in
  // seconds, not after TCP's quarter of an hour. `server_options`: "-c name=value" settings.
  absl::Status Connect(PGconn** conn, const std::string& server_options) {
    const char* keys[] = {"connect_timeout", "application_name", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                          "options", "dbname", nullptr};
    const char* values[] = {"5", "fedge-coordinator", "5", "2", "3", "15000",
                            server_options.c_str(), url_.c_str(), nullptr};
    *conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
    if (*conn == nullptr) return absl::ResourceExhaustedError("Store: libpq cannot allocate");
    // NOTICEs ("relation already exists, skipping") are not the operator's business.
    PQsetNoticeProcessor(*conn, IgnoreNotice, nullptr);
    if (PQstatus(*conn) == CONNECTION_OK) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat("Store: cannot connect to PostgreSQL: ",
                                               Trimmed(PQerrorMessage(*conn))));
  }

  // Re-establishes `conn` for up to reconnect_wait.
  absl::Status Reconnect(PGconn** conn) {
    const absl::Time deadline = absl::Now() + options_.reconnect_wait;
    absl::Duration backoff = absl::Milliseconds(100);
    FEDGE_LOG(WARNING) << "Store: lost the connection to " << where_ << " ("
                       << Trimmed(PQerrorMessage(*conn)) << "); reconnecting for up to "
                       << absl::FormatDuration(options_.reconnect_wait);
    while (true) {
      PQreset(*conn);
      if (PQstatus(*conn) == CONNECTION_OK) {
        FEDGE_LOG(INFO) << "Store: reconnected to " << where_;
        return absl::OkStatus();
      }
      if (absl::Now() + backoff > deadline) {
        return absl::UnavailableError(absl::StrCat(
            "Store: cannot reach ", where_, " for ", absl::FormatDuration(options_.reconnect_wait),
            ": ", Trimmed(PQerrorMessage(*conn))));
      }
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(2));
    }
  }

  absl::Status EnsureConnected() {
    if (PQstatus(conn_) == CONNECTION_OK) return absl::OkStatus();
    return Reconnect(&conn_);
  }

  // Inside a transaction: renews the lease if this process holds it, which locks its row
  // until the transaction ends (a takeover cannot slip in before the commit); otherwise
  // the lease is lost.
  absl::Status Fence() {
    const std::string ms = absl::StrCat(absl::ToInt64Milliseconds(options_.lease));
    const char* values[] = {kLeaseName, holder_.c_str(), ms.c_str()};
    Result r(PQexecParams(conn_, Renewal().c_str(), 3, nullptr, values, nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
      return PgError(conn_, r.get(), "check the lease", where_);
    }
    if (PQntuples(r.get()) == 1) return absl::OkStatus();
    Result q(PQexecParams(conn_, "SELECT holder FROM fedge_lease WHERE name = $1", 1, nullptr,
                          values, nullptr, nullptr, 0));
    return LeaseLost(PQresultStatus(q.get()) == PGRES_TUPLES_OK && PQntuples(q.get()) == 1
                         ? PQgetvalue(q.get(), 0, 0)
                         : "");
  }

  // Extends this holder's lease; never takes one back (a lease another process took and
  // let lapse stays lost: this process's state is stale).
  static std::string Renewal() {
    return absl::StrCat("UPDATE fedge_lease SET expires_ms = ", kDbNowMs,
                        " + $3::bigint WHERE name = $1 AND holder = $2 RETURNING holder");
  }

  absl::Status LeaseLost(const std::string& holder) {
    absl::Status lost = absl::PermissionDeniedError(
        absl::StrCat("Store: ", holder_, " lost the lease at ", where_, " to ",
                     holder.empty() ? "nobody" : holder, "; this coordinator may not write"));
    if (!lost_.exchange(true)) {
      FEDGE_LOG(ERROR) << lost.message();
      if (options_.on_lease_lost) options_.on_lease_lost(lost);
    }
    return lost;
  }

  // Takes the lease on lease_conn_ when it is free or lapsed: true when taken; otherwise
  // the holder and its expiry. A lease row locked by the holder's write transaction (lock
  // timeout) is a live holder.
  absl::StatusOr<bool> TryAcquire(std::string* holder, int64_t* expires) {
    const std::string ms = absl::StrCat(absl::ToInt64Milliseconds(options_.lease));
    const char* values[] = {kLeaseName, holder_.c_str(), ms.c_str()};
    const std::string take = absl::StrCat(
        "INSERT INTO fedge_lease (name, holder, expires_ms) VALUES ($1, $2, ", kDbNowMs,
        " + $3::bigint) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
        "expires_ms = excluded.expires_ms WHERE fedge_lease.expires_ms < ",
        kDbNowMs, " RETURNING holder");
    Result r(PQexecParams(lease_conn_, take.c_str(), 3, nullptr, values, nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) == PGRES_TUPLES_OK && PQntuples(r.get()) == 1) return true;
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    const bool busy = state != nullptr && std::strcmp(state, "55P03") == 0;
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK && !busy) {
      return PgError(lease_conn_, r.get(), "take the lease", where_);
    }
    Result q(PQexecParams(lease_conn_,
                          "SELECT holder, expires_ms FROM fedge_lease WHERE name = $1", 1, nullptr,
                          values, nullptr, nullptr, 0));
    if (PQresultStatus(q.get()) != PGRES_TUPLES_OK) {
      return PgError(lease_conn_, q.get(), "read the lease", where_);
    }
    if (PQntuples(q.get()) == 1) {
      *holder = PQgetvalue(q.get(), 0, 0);
      *expires = std::strtoll(PQgetvalue(q.get(), 0, 1), nullptr, 10);
    }
    return false;
  }

  // Renews on lease_conn_: true when renewed or when this process's own write holds the
  // row (the write renews at its commit); false when another process holds the lease.
  absl::StatusOr<bool> Renew(std::string* holder) {
    const std::string ms = absl::StrCat(absl::ToInt64Milliseconds(options_.lease));
    const char* values[] = {kLeaseName, holder_.c_str(), ms.c_str()};
    Result r(PQexecParams(lease_conn_, Renewal().c_str(), 3, nullptr, values, nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) == PGRES_TUPLES_OK && PQntuples(r.get()) == 1) return true;
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    if (state != nullptr && std::strcmp(state, "55P03") == 0) return true;
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
      return PgError(lease_conn_, r.get(), "renew the lease", where_);
    }
    Result q(PQexecParams(lease_conn_, "SELECT holder FROM fedge_lease WHERE name = $1", 1, nullptr,
                          values, nullptr, nullptr, 0));
    if (PQresultStatus(q.get()) == PGRES_TUPLES_OK && PQntuples(q.get()) == 1) {
      *holder = PQgetvalue(q.get(), 0, 0);
    }
    return false;
  }

  // The lease thread: renews every Poll(); reports a lease another process took.
  void KeepLease() {
    bool failing = false;
    while (true) {
      {
        std::unique_lock<std::mutex> l(lease_mu_);
        lease_cv_.wait_for(l, absl::ToChronoMilliseconds(Poll()), [&] { return stopping_; });
        if (stopping_) return;
      }
      if (PQstatus(lease_conn_) != CONNECTION_OK) PQreset(lease_conn_);
      std::string holder;
      absl::StatusOr<bool> held = Renew(&holder);
      if (!held.ok()) {
        if (!failing) {
          FEDGE_LOG(WARNING) << "Store: cannot renew the lease at " << where_ << ": "
                             << held.status().message() << " (retrying)";
        }
        failing = true;
        continue;
      }
      if (failing) {
        FEDGE_LOG(INFO) << "Store: lease at " << where_ << " renewed again";
      }
      failing = false;
      if (!*held) {
        LeaseLost(holder).IgnoreError();
        return;
      }
    }
  }

  const std::string url_;
  const StoreOptions options_;
  std::string holder_;
  std::string where_ = "postgresql";
  PGconn* conn_ = nullptr;        // statements; used under the Store's mutex
  PGconn* lease_conn_ = nullptr;  // the lease thread's
  std::thread lease_thread_;
  std::mutex lease_mu_;
  std::condition_variable lease_cv_;
  bool stopping_ = false;
  std::atomic<bool> lost_{false};
};

absl::StatusOr<bool> PostgresCursor::Next(absl::string_view what) {
  if (res_ == nullptr) {
    FEDGE_ASSIGN_OR_RETURN(res_, db_->Run(sql_, params_, what));
    row_ = -1;
  }
  if (row_ + 1 < PQntuples(res_.get())) {
    ++row_;
    return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Database>> OpenPostgres(const std::string& url,
                                                       const StoreOptions& options) {
  if (options.lease < absl::Seconds(1)) {
    return absl::InvalidArgumentError(absl::StrCat("Store: the lease must last at least 1s, got ",
                                                   absl::FormatDuration(options.lease)));
  }
  auto db = std::make_unique<PostgresDatabase>(url, options);
  FEDGE_RETURN_IF_ERROR(db->Start());
  return std::unique_ptr<Database>(std::move(db));
}

}  // namespace fedge::server::store_internal

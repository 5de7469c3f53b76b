// The SQLite store's parts that its two files share: server/store.cc (opening, migrations,
// jobs, rounds, checkpoints) and server/store_devices.cc (devices and enrollment tokens).
// Internal to server::Store; nothing else includes it.
#ifndef FEDGE_SERVER_STORE_SQLITE_H_
#define FEDGE_SERVER_STORE_SQLITE_H_

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"
#include "google/protobuf/message.h"
#include "proto/job.pb.h"
#include "server/store.h"

namespace fedge::server {
namespace store_internal {

inline constexpr size_t kMaxIdBytes = 128;

// INVALID_ARGUMENT unless `id` has 1 to kMaxIdBytes bytes; `kind` names it ("job", "client").
absl::Status CheckId(absl::string_view kind, absl::string_view id);
// A client state as stored ("active", ...), and back (unknown text: UNSPECIFIED).
const char* ClientStateName(v1::ClientState s);
v1::ClientState ParseClientState(const std::string& s);
// Serializes a small message (config, metrics, profile), bounded by kMaxSmallBlobBytes.
absl::StatusOr<std::string> SerializeSmall(const google::protobuf::Message& m,
                                           absl::string_view what);

}  // namespace store_internal

// ---------------------------------------------------------------------------------------
// Statement: one prepared statement, finalized on destruction.
// ---------------------------------------------------------------------------------------

class Store::Statement {
 public:
  Statement(Store* store, sqlite3_stmt* stmt) : store_(store), stmt_(stmt) {}
  Statement(Statement&& o) noexcept
      : store_(o.store_), stmt_(std::exchange(o.stmt_, nullptr)), bind_rc_(o.bind_rc_) {}
  Statement& operator=(Statement&&) = delete;
  ~Statement() {
    if (stmt_ != nullptr) sqlite3_finalize(stmt_);
  }

  Statement& Bind(int i, int64_t v) {
    Keep(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  Statement& BindText(int i, absl::string_view v) {
    Keep(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
    return *this;
  }
  // The blob must stay alive until the statement has run (no copy: models are large).
  Statement& BindBlob(int i, absl::string_view v) {
    Keep(sqlite3_bind_blob64(stmt_, i, v.data(), v.size(), SQLITE_STATIC));
    return *this;
  }
  Statement& BindNull(int i) {
    Keep(sqlite3_bind_null(stmt_, i));
    return *this;
  }

  // Steps once: true when a row is available, false when done.
  absl::StatusOr<bool> Next(absl::string_view what) {
    if (bind_rc_ != SQLITE_OK) return store_->SqliteError(bind_rc_, what);
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return store_->SqliteError(rc, what);
  }
  // Runs a statement that returns no rows.
  absl::Status Run(absl::string_view what) {
    absl::StatusOr<bool> row = Next(what);
    if (!row.ok()) return row.status();
    return absl::OkStatus();
  }
  // Makes the statement runnable again with new bindings.
  Statement& Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    bind_rc_ = SQLITE_OK;
    return *this;
  }
  int changes() const { return sqlite3_changes(sqlite3_db_handle(stmt_)); }

  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p == nullptr ? std::string()
                        : std::string(reinterpret_cast<const char*>(p),
                                      static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }
  absl::string_view Blob(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    const int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? absl::string_view() : absl::string_view(static_cast<const char*>(p), n);
  }

 private:
  void Keep(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  Store* store_;
  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
};

// BEGIN IMMEDIATE (takes the write lock up front, so a transaction never fails half way on
// a lock upgrade); rolls back unless Commit succeeded.
class Store::Transaction {
 public:
  explicit Transaction(Store* store) : store_(store) {}
  ~Transaction() {
    if (began_ && !committed_ && !sqlite3_get_autocommit(store_->db_)) {
      sqlite3_exec(store_->db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }
  absl::Status Begin() {
    FEDGE_RETURN_IF_ERROR(store_->Exec("BEGIN IMMEDIATE", "begin transaction"));
    began_ = true;
    return absl::OkStatus();
  }
  absl::Status Commit() {
    FEDGE_RETURN_IF_ERROR(store_->Exec("COMMIT", "commit"));
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  Store* store_;
  bool began_ = false;
  bool committed_ = false;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_STORE_SQLITE_H_

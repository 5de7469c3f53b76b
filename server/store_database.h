// The engine under server::Store: one connection to SQLite (store_sqlite.cc) or PostgreSQL
// (store_postgres.cc) behind one small interface, so the store's logic, its SQL and its
// schema are written once (server/store.cc, server/store_devices.cc).
//
// SQL. Statements are written once, in the subset both engines accept: parameters are $1,
// $2, ... (SQLite gets them as ?1, ?2, ...); upserts are INSERT ... ON CONFLICT; no rowid,
// no PRAGMA. Schema text writes its column types as {INT} and {BLOB}, which each engine
// spells its own way (INTEGER/BLOB, BIGINT/BYTEA).
//
// Internal to server::Store; nothing else includes it. Not thread-safe: Store serializes.
#ifndef FEDGE_SERVER_STORE_DATABASE_H_
#define FEDGE_SERVER_STORE_DATABASE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"
#include "google/protobuf/message.h"
#include "proto/job.pb.h"
#include "server/store.h"

namespace fedge::server::store_internal {

inline constexpr size_t kMaxIdBytes = 128;

// INVALID_ARGUMENT unless `id` has 1 to kMaxIdBytes bytes; `kind` names it ("job", "client").
absl::Status CheckId(absl::string_view kind, absl::string_view id);
// A client state as stored ("active", ...), and back (unknown text: UNSPECIFIED).
const char* ClientStateName(v1::ClientState s);
v1::ClientState ParseClientState(const std::string& s);
// Serializes a small message (config, metrics, profile), bounded by kMaxSmallBlobBytes.
absl::StatusOr<std::string> SerializeSmall(const google::protobuf::Message& m,
                                           absl::string_view what);

// One prepared statement. Bind* keep the first failure; Next reports it.
class Cursor {
 public:
  virtual ~Cursor() = default;
  virtual void BindInt(int i, int64_t v) = 0;
  virtual void BindText(int i, absl::string_view v) = 0;
  // The bytes must stay alive until the statement has run (no copy: models are large).
  virtual void BindBlob(int i, absl::string_view v) = 0;
  // Runs the statement on the first call; true while a row is available.
  virtual absl::StatusOr<bool> Next(absl::string_view what) = 0;
  // Runnable again with new bindings.
  virtual void Reset() = 0;
  // Rows the last run inserted, updated or deleted.
  virtual int64_t changes() const = 0;
  virtual bool IsNull(int col) const = 0;
  virtual int64_t Int(int col) const = 0;
  virtual std::string Text(int col) const = 0;
  virtual absl::string_view Blob(int col) const = 0;
};

class Database {
 public:
  virtual ~Database() = default;
  // `sql` in the shared dialect (parameters $1, $2, ...).
  virtual absl::StatusOr<std::unique_ptr<Cursor>> Prepare(absl::string_view sql) = 0;
  // Runs parameterless statements, possibly several separated by ';' (schema text with
  // {INT}/{BLOB} placeholders is spelled for this engine first).
  virtual absl::Status Exec(absl::string_view sql, absl::string_view what) = 0;
  // A write transaction: taken up front (no lock upgrade half way) and, where the store is
  // shared, only while this process holds its lease.
  virtual absl::Status Begin() = 0;
  virtual absl::Status Commit() = 0;
  virtual void Rollback() = 0;
  virtual bool InTransaction() const = 0;
  // The engine's own consistency check (`quick`: the cheap one); DATA_LOSS naming problems.
  virtual absl::Status CheckIntegrity(bool quick) = 0;
  // Where the data lives, for messages: a file path, or a URL without its password.
  virtual const std::string& where() const = 0;
  // The most bytes one row's blobs may hold together.
  virtual int64_t max_row_bytes() const = 0;
};

// Opens the SQLite file under `state_dir`, locking the dir for this process (store_sqlite.cc).
absl::StatusOr<std::unique_ptr<Database>> OpenSqlite(const std::string& state_dir,
                                                     const StoreOptions& options);
// Connects to PostgreSQL at `url` and waits until this process holds the lease
// (store_postgres.cc).
absl::StatusOr<std::unique_ptr<Database>> OpenPostgres(const std::string& url,
                                                       const StoreOptions& options);

}  // namespace fedge::server::store_internal

namespace fedge::server {

// A prepared statement by value, with chainable binds (the store's code reads as SQL).
class Store::Statement {
 public:
  explicit Statement(std::unique_ptr<store_internal::Cursor> c) : c_(std::move(c)) {}
  Statement& Bind(int i, int64_t v) {
    c_->BindInt(i, v);
    return *this;
  }
  Statement& BindText(int i, absl::string_view v) {
    c_->BindText(i, v);
    return *this;
  }
  Statement& BindBlob(int i, absl::string_view v) {
    c_->BindBlob(i, v);
    return *this;
  }
  absl::StatusOr<bool> Next(absl::string_view what) { return c_->Next(what); }
  absl::Status Run(absl::string_view what) {
    absl::StatusOr<bool> row = Next(what);
    return row.ok() ? absl::OkStatus() : row.status();
  }
  Statement& Reset() {
    c_->Reset();
    return *this;
  }
  int64_t changes() const { return c_->changes(); }
  bool IsNull(int col) const { return c_->IsNull(col); }
  int64_t Int(int col) const { return c_->Int(col); }
  std::string Text(int col) const { return c_->Text(col); }
  absl::string_view Blob(int col) const { return c_->Blob(col); }

 private:
  std::unique_ptr<store_internal::Cursor> c_;
};

// A write transaction, rolled back unless Commit succeeded.
class Store::Transaction {
 public:
  explicit Transaction(store_internal::Database* db) : db_(db) {}
  ~Transaction() {
    if (began_ && !committed_ && db_->InTransaction()) db_->Rollback();
  }
  absl::Status Begin() {
    FEDGE_RETURN_IF_ERROR(db_->Begin());
    began_ = true;
    return absl::OkStatus();
  }
  absl::Status Commit() {
    FEDGE_RETURN_IF_ERROR(db_->Commit());
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  store_internal::Database* db_;
  bool began_ = false;
  bool committed_ = false;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_STORE_DATABASE_H_

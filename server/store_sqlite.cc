// server::Store on SQLite: one file, <state_dir>/coordinator.db, in WAL mode with
// synchronous=FULL, the state dir locked by flock for this process (server/store.h).
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "server/store_database.h"

namespace fedge::server::store_internal {
namespace {

class SqliteDatabase;

absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what, const std::string& path) {
  const int primary = rc & 0xff;
  const std::string detail =
      sqlite3_extended_errcode(db) == rc ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  const std::string tail = absl::StrCat("Store: ", what, ": ", detail, " (", path, ")");
  switch (primary) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(absl::StrCat("Store: ", path,
                                              " is not a valid SQLite database or is corrupt (",
                                              what, ": ", detail, ")"));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(tail);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(tail);
    case SQLITE_TOOBIG:
      return absl::InvalidArgumentError(tail);
    case SQLITE_CONSTRAINT:
      return absl::FailedPreconditionError(tail);
    default:
      return absl::InternalError(tail);
  }
}

// $N parameters as SQLite's ?N (no '$' appears elsewhere in the store's SQL).
std::string SqliteSql(absl::string_view sql) {
  return absl::StrReplaceAll(sql, {{"$", "?"}, {"{INT}", "INTEGER"}, {"{BLOB}", "BLOB"}});
}

class SqliteCursor final : public Cursor {
 public:
  SqliteCursor(sqlite3* db, sqlite3_stmt* stmt, const std::string* path)
      : db_(db), stmt_(stmt), path_(path) {}
  ~SqliteCursor() override { sqlite3_finalize(stmt_); }

  void BindInt(int i, int64_t v) override { Keep(sqlite3_bind_int64(stmt_, i, v)); }
  void BindText(int i, absl::string_view v) override {
    Keep(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  void BindBlob(int i, absl::string_view v) override {
    Keep(sqlite3_bind_blob64(stmt_, i, v.data(), v.size(), SQLITE_STATIC));
  }
  absl::StatusOr<bool> Next(absl::string_view what) override {
    if (bind_rc_ != SQLITE_OK) return SqliteError(db_, bind_rc_, what, *path_);
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    changes_ = sqlite3_changes(db_);
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, rc, what, *path_);
  }
  void Reset() override {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    bind_rc_ = SQLITE_OK;
  }
  int64_t changes() const override { return changes_; }
  bool IsNull(int col) const override { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  int64_t Int(int col) const override { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) const override {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p == nullptr ? std::string()
                        : std::string(reinterpret_cast<const char*>(p),
                                      static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }
  absl::string_view Blob(int col) const override {
    const void* p = sqlite3_column_blob(stmt_, col);
    const int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? absl::string_view() : absl::string_view(static_cast<const char*>(p), n);
  }

 private:
  void Keep(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  sqlite3* const db_;
  sqlite3_stmt* const stmt_;
  const std::string* const path_;
  int bind_rc_ = SQLITE_OK;
  int64_t changes_ = 0;
};

class SqliteDatabase final : public Database {
 public:
  SqliteDatabase(std::string path, int lock_fd, sqlite3* db)
      : path_(std::move(path)), lock_fd_(lock_fd), db_(db) {}
  ~SqliteDatabase() override {
    sqlite3_close_v2(db_);  // checkpoints the WAL into the main file when last to close
    if (lock_fd_ >= 0) close(lock_fd_);  // releases the flock
  }

  absl::StatusOr<std::unique_ptr<Cursor>> Prepare(absl::string_view sql) override {
    const std::string text = SqliteSql(sql);
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v2(db_, text.c_str(), -1, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return SqliteError(db_, rc, absl::StrCat("prepare \"", text, "\""), path_);
    }
    return std::unique_ptr<Cursor>(new SqliteCursor(db_, stmt, &path_));
  }
  absl::Status Exec(absl::string_view sql, absl::string_view what) override {
    const std::string text = SqliteSql(sql);
    const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return SqliteError(db_, rc, what, path_);
    return absl::OkStatus();
  }
  // BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails half way on
  // a lock upgrade.
  absl::Status Begin() override { return Exec("BEGIN IMMEDIATE", "begin transaction"); }
  absl::Status Commit() override { return Exec("COMMIT", "commit"); }
  void Rollback() override { sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); }
  bool InTransaction() const override { return !sqlite3_get_autocommit(db_); }
  absl::Status CheckIntegrity(bool quick) override {
    const char* pragma = quick ? "PRAGMA quick_check" : "PRAGMA integrity_check";
    FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Cursor> q, Prepare(pragma));
    std::vector<std::string> problems;
    while (problems.size() < 10) {
      FEDGE_ASSIGN_OR_RETURN(bool row, q->Next("check integrity"));
      if (!row) break;
      problems.push_back(q->Text(0));
    }
    if (problems.size() == 1 && problems[0] == "ok") return absl::OkStatus();
    return absl::DataLossError(absl::StrCat("Store: ", path_, " failed ", pragma, ": ",
                                            absl::StrJoin(problems, "; ")));
  }
  const std::string& where() const override { return path_; }
  // Each blob is bounded by SQLITE_MAX_LENGTH on its own (max_model_bytes), not the row.
  int64_t max_row_bytes() const override { return int64_t{1} << 62; }

  absl::Status Configure(const StoreOptions& options) {
    sqlite3_busy_timeout(db_, options.busy_timeout_ms);
    if (sqlite3_limit(db_, SQLITE_LIMIT_LENGTH, -1) < options.max_model_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Store: max_model_bytes ", options.max_model_bytes, " exceeds SQLite's blob limit ",
          sqlite3_limit(db_, SQLITE_LIMIT_LENGTH, -1)));
    }
    // The first statement reads the file header: a non-SQLite file fails here.
    FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Cursor> wal, Prepare("PRAGMA journal_mode=WAL"));
    FEDGE_ASSIGN_OR_RETURN(bool row, wal->Next("enable WAL"));
    if (!row || wal->Text(0) != "wal") {
      return absl::FailedPreconditionError(
          absl::StrCat("Store: cannot switch ", path_, " to WAL mode (journal_mode is '",
                       row ? wal->Text(0) : std::string(), "')"));
    }
    FEDGE_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL", "set synchronous=FULL"));
    return Exec("PRAGMA foreign_keys=ON", "enable foreign keys");
  }

 private:
  const std::string path_;
  const int lock_fd_;
  sqlite3* const db_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Database>> OpenSqlite(const std::string& state_dir,
                                                     const StoreOptions& options) {
  if (state_dir.empty()) return absl::InvalidArgumentError("Store: empty state dir");
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("Store: cannot create state dir ", state_dir, ": ", ec.message()));
  }
  const std::string path = (std::filesystem::path(state_dir) / Store::kDatabaseFileName).string();
  const std::string lock_path = path + ".lock";

  const int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("Store: cannot open lock file ", lock_path, ": ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) {
      return absl::UnavailableError(absl::StrCat("Store: state dir ", state_dir,
                                                 " is in use by another process (", lock_path,
                                                 " is locked)"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("Store: cannot lock ", lock_path, ": ", std::strerror(err)));
  }

  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat("Store: cannot open ", path, ": ", msg));
  }
  sqlite3_extended_result_codes(db, 1);
  auto database = std::make_unique<SqliteDatabase>(path, fd, db);
  FEDGE_RETURN_IF_ERROR(database->Configure(options));
  return std::unique_ptr<Database>(std::move(database));
}

}  // namespace fedge::server::store_internal

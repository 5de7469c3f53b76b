// Operators' credentials: named bearer tokens with a role, kept as SHA-256 hashes in a
// text file (<state-dir>/operators, mode 0600) that `fedge-coordinator operators add |
// revoke | list` edits and the running coordinator reads. Devices never hold one: a
// device's certificate, enrollment token or session token grants no Admin call
// (docs/security.md, "Who is trusted with what").
//
//   fedge-coordinator operators add --state-dir D --name alice --role operator   # prints the token once
//   OperatorTokens tokens(path);
//   FEDGE_ASSIGN_OR_RETURN(Operator op, tokens.Authenticate(bearer));
//   FEDGE_RETURN_IF_ERROR(Authorize(op, OperatorRole::kOperator, "StopJob"));
//
// Roles, each including the one before:
//   viewer    job status, rounds, watch, the device list;
//   operator  also start and stop jobs, export models, revoke devices;
// and one apart, which includes no other and no other includes:
//   relay     a relay coordinator's calls to its root (docs/relays.md), as the relay
//             named by the token's name, and nothing else.
//
// The file, one operator per line after a header (hash in hex, times in Unix seconds):
//   fedge-operators 2
//   alice operator 3f9a…(64 hex) 1765000000 0          active
//   bob viewer 77c1…            1765000100 1767592100 revoked
// (the fifth field: when the token expires, 0 = never; a version-1 file, without it, is
// read as tokens that never expire and written as version 2 at the next edit).
// Writers (the subcommand) hold an flock on <path>.lock and replace the file by rename, so
// a reader sees the old or the new table, never half of one. The coordinator re-reads the
// file when its inode, size, mode or ctime changed, so a revocation takes effect on the next
// call without a restart (an open WatchJob stream keeps the access it was opened with).
// A file that does not parse, or that others can read, fails closed: every call is refused
// with the reason, until the file is fixed.
//
// Thread safety: Authenticate is thread-safe; the editing functions are for one process
// (the subcommand) at a time, serialized across processes by the lock file.
#ifndef FEDGE_SERVER_OPERATOR_TOKENS_H_
#define FEDGE_SERVER_OPERATOR_TOKENS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fedge::server {

enum class OperatorRole { kViewer = 1, kOperator = 2, kRelay = 3 };

// "viewer" / "operator" / "relay".
const char* OperatorRoleName(OperatorRole role);
// INVALID_ARGUMENT naming the accepted roles.
absl::StatusOr<OperatorRole> ParseOperatorRole(absl::string_view name);

struct Operator {
  std::string name;
  OperatorRole role = OperatorRole::kViewer;
  int64_t created_unix_s = 0;
  int64_t expires_unix_s = 0;  // 0: never
  bool revoked = false;
};

// Operator tokens start with this prefix (so a leaked one is recognisable in a log or a
// secret scanner), then 64 hex characters.
inline constexpr char kOperatorTokenPrefix[] = "fedge-op-";

// PERMISSION_DENIED naming the operator, the call and the role it needs, unless `op` has
// `needed` or a higher role (relay calls need the relay role itself, which grants nothing
// else).
absl::Status Authorize(const Operator& op, OperatorRole needed, absl::string_view call);

class OperatorTokens {
 public:
  // The conventional location under a coordinator's state dir.
  static std::string PathIn(const std::string& state_dir);

  explicit OperatorTokens(std::string path) : path_(std::move(path)) {}

  const std::string& path() const { return path_; }

  // The operator whose token this is. UNAUTHENTICATED for an empty token;
  // PERMISSION_DENIED for a token that is not an operator's (unknown, malformed, a
  // device's), that was revoked, or that expired by `now`; FAILED_PRECONDITION when the file is missing (no
  // operator exists yet: create one with `fedge-coordinator operators add`), unreadable,
  // readable by others, or does not parse.
  absl::StatusOr<Operator> Authenticate(absl::string_view token, absl::Time now = absl::Now());

  // ---- editing (the `fedge-coordinator operators` subcommand) ----

  // Adds an operator and returns its token (shown once; only the hash is kept), valid until
  // `expires_unix_s` (0: never). ALREADY_EXISTS when the name is taken (revoked names too:
  // a name is never reused, so logs stay unambiguous); INVALID_ARGUMENT for a name outside
  // [A-Za-z0-9._@-]{1,64} or an expiry not after now.
  absl::StatusOr<std::string> Add(absl::string_view name, OperatorRole role, int64_t now_unix_s,
                                  int64_t expires_unix_s = 0);
  // Marks the operator's token revoked. NOT_FOUND for an unknown name.
  absl::Status Revoke(absl::string_view name);
  // Every operator, in the order added.
  absl::StatusOr<std::vector<Operator>> List();

 private:
  struct Entry {
    Operator op;
    std::string hash;  // SHA-256 of the token, raw bytes
  };
  struct FileStamp {
    uint64_t inode = 0;
    int64_t size = -1, ctime_ns = 0;
    uint32_t mode = 0;
    bool operator==(const FileStamp& o) const {
      return inode == o.inode && size == o.size && ctime_ns == o.ctime_ns && mode == o.mode;
    }
  };

  absl::StatusOr<std::vector<Entry>> Read() const;
  absl::Status Write(const std::vector<Entry>& entries) const;
  // Re-reads the file when it changed; the table (or the reason it is unusable) after.
  absl::Status RefreshLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  absl::Mutex mu_;
  bool read_once_ ABSL_GUARDED_BY(mu_) = false;
  FileStamp stamp_ ABSL_GUARDED_BY(mu_);
  absl::Status table_status_ ABSL_GUARDED_BY(mu_);
  std::vector<Entry> table_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_OPERATOR_TOKENS_H_

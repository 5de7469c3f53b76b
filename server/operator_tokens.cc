#include "server/operator_tokens.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "server/session_token.h"

namespace fedge::server {
namespace {

constexpr char kHeader[] = "fedge-operators 2";
// The first format, read as tokens that never expire.
constexpr char kHeaderV1[] = "fedge-operators 1";
constexpr size_t kMaxNameBytes = 64;
constexpr int64_t kMaxFileBytes = 1 << 20;

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '@' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// An flock on <path>.lock for the duration of one edit (read, change, write).
class EditLock {
 public:
  static absl::StatusOr<EditLock> Take(const std::string& path) {
    const std::string lock_path = path + ".lock";
    const int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
      const int err = errno;
      if (fd >= 0) close(fd);
      return absl::FailedPreconditionError(absl::StrCat("OperatorTokens: cannot lock ", lock_path,
                                                        ": ", std::strerror(err)));
    }
    return EditLock(fd);
  }
  EditLock(EditLock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  EditLock& operator=(EditLock&&) = delete;
  ~EditLock() {
    if (fd_ >= 0) close(fd_);  // releases the flock
  }

 private:
  explicit EditLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace

const char* OperatorRoleName(OperatorRole role) {
  switch (role) {
    case OperatorRole::kOperator:
      return "operator";
    case OperatorRole::kRelay:
      return "relay";
    default:
      return "viewer";
  }
}

absl::StatusOr<OperatorRole> ParseOperatorRole(absl::string_view name) {
  if (name == "viewer") return OperatorRole::kViewer;
  if (name == "operator") return OperatorRole::kOperator;
  if (name == "relay") return OperatorRole::kRelay;
  return absl::InvalidArgumentError(
      absl::StrCat("OperatorTokens: unknown role '", absl::CEscape(name),
                   "'; roles are viewer (status, rounds, watch, devices), operator (also "
                   "start, stop, export, revoke) and relay (a relay coordinator's calls only)"));
}

absl::Status Authorize(const Operator& op, OperatorRole needed, absl::string_view call) {
  const bool relay_call = needed == OperatorRole::kRelay;
  const bool relay_token = op.role == OperatorRole::kRelay;
  if (relay_call == relay_token &&
      (relay_call || static_cast<int>(op.role) >= static_cast<int>(needed))) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat("Admin: ", call, " needs the ",
                                                  OperatorRoleName(needed), " role; operator ",
                                                  op.name, " has ", OperatorRoleName(op.role)));
}

std::string OperatorTokens::PathIn(const std::string& state_dir) {
  return (std::filesystem::path(state_dir) / "operators").string();
}

absl::StatusOr<std::vector<OperatorTokens::Entry>> OperatorTokens::Read() const {
  std::vector<Entry> entries;
  struct stat st;
  if (stat(path_.c_str(), &st) != 0) {
    if (errno == ENOENT) return entries;
    return absl::FailedPreconditionError(
        absl::StrCat("OperatorTokens: cannot stat ", path_, ": ", std::strerror(errno)));
  }
  if ((st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH)) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "OperatorTokens: ", path_, " is readable or writable by group or others; chmod 600 it"));
  }
  if (st.st_size > kMaxFileBytes) {
    return absl::FailedPreconditionError(
        absl::StrCat("OperatorTokens: ", path_, " is over ", kMaxFileBytes, " bytes"));
  }
  std::ifstream in(path_, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(absl::StrCat("OperatorTokens: cannot read ", path_));
  }
  std::string line;
  int line_no = 0;
  bool v1 = false;
  while (std::getline(in, line)) {
    ++line_no;
    const auto bad = [&](absl::string_view why) {
      return absl::FailedPreconditionError(
          absl::StrCat("OperatorTokens: ", path_, " line ", line_no, ": ", why));
    };
    if (line_no == 1) {
      v1 = line == kHeaderV1;
      if (line != kHeader && !v1) {
        return bad(absl::StrCat("expected the header '", kHeader, "'"));
      }
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (v1 && f.size() == 5) f.insert(f.begin() + 4, "0");  // never expires
    if (f.size() != 6) {
      return bad("expected: name role sha256-hex created-unix expires-unix active|revoked");
    }
    Entry e;
    e.op.name = std::string(f[0]);
    if (!ValidName(e.op.name)) return bad("bad operator name");
    absl::StatusOr<OperatorRole> role = ParseOperatorRole(f[1]);
    if (!role.ok()) return bad(role.status().message());
    e.op.role = *role;
    if (f[2].size() != 2 * kSessionTokenHashBytes ||
        f[2].find_first_not_of("0123456789abcdef") != absl::string_view::npos) {
      return bad("the hash must be 64 lowercase hex characters");
    }
    e.hash = absl::HexStringToBytes(f[2]);
    if (!absl::SimpleAtoi(f[3], &e.op.created_unix_s)) return bad("bad creation time");
    if (!absl::SimpleAtoi(f[4], &e.op.expires_unix_s) || e.op.expires_unix_s < 0) {
      return bad("bad expiry time (0: never)");
    }
    if (f[5] != "active" && f[5] != "revoked") return bad("state must be active or revoked");
    e.op.revoked = f[5] == "revoked";
    for (const Entry& other : entries) {
      if (other.op.name == e.op.name) return bad(absl::StrCat("operator ", e.op.name, " twice"));
    }
    entries.push_back(std::move(e));
  }
  if (line_no == 0) return absl::FailedPreconditionError(absl::StrCat("OperatorTokens: ", path_, " is empty"));
  return entries;
}

absl::Status OperatorTokens::Write(const std::vector<Entry>& entries) const {
  std::ostringstream out;
  out << kHeader << "\n";
  for (const Entry& e : entries) {
    out << e.op.name << ' ' << OperatorRoleName(e.op.role) << ' ' << absl::BytesToHexString(e.hash)
        << ' ' << e.op.created_unix_s << ' ' << e.op.expires_unix_s << ' '
        << (e.op.revoked ? "revoked" : "active") << "\n";
  }
  const std::string text = out.str();
  const std::string tmp = path_ + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("OperatorTokens: cannot write ", tmp, ": ", std::strerror(errno)));
  }
  const bool written = fchmod(fd, 0600) == 0 &&
                       write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                       fsync(fd) == 0;
  const int err = errno;
  close(fd);
  if (!written || rename(tmp.c_str(), path_.c_str()) != 0) {
    unlink(tmp.c_str());
    return absl::FailedPreconditionError(
        absl::StrCat("OperatorTokens: cannot write ", path_, ": ", std::strerror(written ? errno : err)));
  }
  return absl::OkStatus();
}

absl::Status OperatorTokens::RefreshLocked() {
  struct stat st;
  FileStamp now;
  if (stat(path_.c_str(), &st) == 0) {
    now.inode = st.st_ino;
    now.size = st.st_size;
    now.mode = st.st_mode;
    // ctime: changes on a write and on a chmod
    now.ctime_ns = int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec;
  }
  if (read_once_ && now == stamp_) return table_status_;
  read_once_ = true;
  stamp_ = now;
  if (now.size < 0) {
    table_.clear();
    table_status_ = absl::FailedPreconditionError(absl::StrCat(
        "Admin: no operator exists (", path_,
        " is missing); create one with `fedge-coordinator operators add --state-dir DIR "
        "--name NAME --role operator`"));
    return table_status_;
  }
  absl::StatusOr<std::vector<Entry>> read = Read();
  if (!read.ok()) {
    table_.clear();
    table_status_ = read.status();
    return table_status_;
  }
  table_ = *std::move(read);
  table_status_ = absl::OkStatus();
  return table_status_;
}

absl::StatusOr<Operator> OperatorTokens::Authenticate(absl::string_view token, absl::Time now) {
  if (token.empty()) {
    return absl::UnauthenticatedError(
        "Admin: no operator token (send metadata 'authorization: Bearer <token>'; fedgectl "
        "--token-file FILE or $FEDGE_OPERATOR_TOKEN)");
  }
  const std::string hash = HashSessionToken(token);
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(RefreshLocked());
  for (const Entry& e : table_) {
    if (!SessionTokenHashesEqual(e.hash, hash)) continue;
    if (e.op.revoked) {
      return absl::PermissionDeniedError(
          absl::StrCat("Admin: the token of operator ", e.op.name, " was revoked"));
    }
    if (e.op.expires_unix_s > 0 && absl::ToUnixSeconds(now) >= e.op.expires_unix_s) {
      return absl::PermissionDeniedError(absl::StrCat(
          "Admin: the token of operator ", e.op.name, " expired at ",
          absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixSeconds(e.op.expires_unix_s),
                           absl::UTCTimeZone()),
          "; add a new one (`fedge-coordinator operators add`)"));
    }
    return e.op;
  }
  return absl::PermissionDeniedError(
      "Admin: the credential is not an operator token (device certificates, enrollment and "
      "session tokens grant no Admin call)");
}

absl::StatusOr<std::string> OperatorTokens::Add(absl::string_view name, OperatorRole role,
                                                int64_t now_unix_s, int64_t expires_unix_s) {
  if (expires_unix_s < 0 || (expires_unix_s > 0 && expires_unix_s <= now_unix_s)) {
    return absl::InvalidArgumentError(
        "OperatorTokens: a token's expiry must be after its creation (0: never)");
  }
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "OperatorTokens: an operator name has 1-", kMaxNameBytes,
        " characters from A-Z a-z 0-9 . _ @ -; got '", absl::CEscape(name), "'"));
  }
  FEDGE_ASSIGN_OR_RETURN(EditLock lock, EditLock::Take(path_));
  FEDGE_ASSIGN_OR_RETURN(std::vector<Entry> entries, Read());
  for (const Entry& e : entries) {
    if (e.op.name == name) {
      return absl::AlreadyExistsError(absl::StrCat(
          "OperatorTokens: operator ", name, " exists", e.op.revoked ? " (revoked)" : "",
          "; names are never reused"));
    }
  }
  const std::string token = absl::StrCat(kOperatorTokenPrefix, GenerateSessionToken());
  Entry e;
  e.op.name = std::string(name);
  e.op.role = role;
  e.op.created_unix_s = now_unix_s;
  e.op.expires_unix_s = expires_unix_s;
  e.hash = HashSessionToken(token);
  entries.push_back(std::move(e));
  FEDGE_RETURN_IF_ERROR(Write(entries));
  return token;
}

absl::Status OperatorTokens::Revoke(absl::string_view name) {
  FEDGE_ASSIGN_OR_RETURN(EditLock lock, EditLock::Take(path_));
  FEDGE_ASSIGN_OR_RETURN(std::vector<Entry> entries, Read());
  for (Entry& e : entries) {
    if (e.op.name != name) continue;
    e.op.revoked = true;
    return Write(entries);
  }
  return absl::NotFoundError(absl::StrCat("OperatorTokens: no operator named '",
                                          absl::CEscape(name), "' in ", path_));
}

absl::StatusOr<std::vector<Operator>> OperatorTokens::List() {
  FEDGE_ASSIGN_OR_RETURN(std::vector<Entry> entries, Read());
  std::vector<Operator> out;
  for (Entry& e : entries) out.push_back(std::move(e.op));
  return out;
}

}  // namespace fedge::server

#include "client/device_state.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"

namespace fedge::client {
namespace {

constexpr size_t kMaxStateBytes = 1 << 16;
constexpr size_t kMaxClientIdBytes = 256;
constexpr size_t kMaxFedCgStateBytes = size_t{256} << 20;

absl::Status Io(const std::string& path, const std::string& what) {
  return absl::UnavailableError(
      absl::StrCat("DeviceState: ", path, ": ", what, ": ", std::strerror(errno)));
}

bool ValidClientId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxClientIdBytes) return false;
  for (char c : id) {
    if (!absl::ascii_isgraph(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// Reads a file that only its owner may read or write (mode 0600 or stricter), at most
// `max_bytes`.
absl::StatusOr<std::string> ReadOwnerOnly(const std::string& path, size_t max_bytes) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("DeviceState: ", path, ": no such file"));
    return Io(path, "stat");
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "DeviceState: %s: mode %04o lets other users read or write it; expected 0600", path,
        st.st_mode & 0777));
  }
  if (static_cast<size_t>(st.st_size) > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("DeviceState: ", path, ": file too large"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Io(path, "open");
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace

absl::StatusOr<DeviceState> LoadDeviceState(const std::string& path) {
  FEDGE_ASSIGN_OR_RETURN(const std::string text, ReadOwnerOnly(path, kMaxStateBytes));
  DeviceState state;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(line, absl::MaxSplits(' ', 1));
    if (kv.first == "client_id") {
      const absl::string_view id = absl::StripAsciiWhitespace(kv.second);
      if (!ValidClientId(id)) {
        return absl::InvalidArgumentError(
            absl::StrCat("DeviceState: ", path, ":", line_number, ": bad client_id"));
      }
      state.client_id = std::string(id);
    } else if (kv.first == "device_key") {
      const absl::string_view key = absl::StripAsciiWhitespace(kv.second);
      if (!ValidClientId(key) || key.size() > 128) {
        return absl::InvalidArgumentError(
            absl::StrCat("DeviceState: ", path, ":", line_number, ": bad device_key"));
      }
      state.device_key = std::string(key);
    }
  }
  if (state.client_id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("DeviceState: ", path, ": no client_id"));
  }
  return state;
}

absl::Status SaveDeviceState(const std::string& path, const DeviceState& state) {
  if (!ValidClientId(state.client_id)) {
    return absl::InvalidArgumentError("DeviceState: client_id must be 1-256 printable characters");
  }
  if (!state.device_key.empty() &&
      (!ValidClientId(state.device_key) || state.device_key.size() > 128)) {
    return absl::InvalidArgumentError("DeviceState: device_key must be 1-128 printable characters");
  }
  std::string text = absl::StrCat("# fedge device state, version 1\nclient_id ", state.client_id,
                                  "\n");
  if (!state.device_key.empty()) absl::StrAppend(&text, "device_key ", state.device_key, "\n");
  return WriteOwnerOnly(path, text);
}

absl::Status SaveFedCgPrivateState(const std::string& path, const v1::ModelProto& state) {
  std::string bytes;
  if (!state.SerializeToString(&bytes) || bytes.size() > kMaxFedCgStateBytes) {
    return absl::InvalidArgumentError("DeviceState: the FedCG state does not serialize");
  }
  return WriteOwnerOnly(path, bytes);
}

absl::StatusOr<v1::ModelProto> LoadFedCgPrivateState(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadOwnerOnly(path, kMaxFedCgStateBytes);
  if (!bytes.ok()) return bytes.status();
  v1::ModelProto state;
  if (!state.ParseFromString(*bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("DeviceState: ", path, ": not a FedCG state"));
  }
  return state;
}

absl::Status WriteOwnerOnly(const std::string& path, const std::string& text) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Io(tmp, "create");
  // The umask cannot widen 0600, but a stale temporary file could have another mode.
  bool ok = ::fchmod(fd, 0600) == 0;
  size_t written = 0;
  while (ok && written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) written += static_cast<size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  const int saved_errno = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) {
      const absl::Status s = Io(path, "rename");
      ::unlink(tmp.c_str());
      return s;
    }
    errno = saved_errno;
    const absl::Status s = Io(tmp, "write");
    ::unlink(tmp.c_str());
    return s;
  }
  return absl::OkStatus();
}

}  // namespace fedge::client

#include "client/base_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "privacy/sodium.h"

namespace fedge::client {
namespace {

// A regular file's size (lstat: a symbolic link counts as no file); 0 for anything else.
int64_t FileBytes(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return 0;
  return static_cast<int64_t>(st.st_size);
}

// Whether `name` is "<64 hex>.fedgemodel" or "<64 hex>.part": the only names the cache
// writes, and so the only ones it removes.
bool CacheFileName(const std::string& name) {
  for (absl::string_view suffix : {".fedgemodel", ".part"}) {
    absl::string_view n = name;
    if (absl::ConsumeSuffix(&n, suffix) && BaseCache::IsDigest(n)) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<BaseCache> BaseCache::Open(std::string dir, int64_t max_bytes) {
  if (dir.empty()) return absl::InvalidArgumentError("BaseCache: no directory");
  if (max_bytes <= 0) return absl::InvalidArgumentError("BaseCache: max_bytes must be > 0");
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::UnavailableError(
        absl::StrCat("BaseCache: cannot make ", dir, ": ", std::strerror(errno)));
  }
  return BaseCache(std::move(dir), max_bytes);
}

bool BaseCache::IsDigest(absl::string_view sha256) {
  return sha256.size() == 64 && std::all_of(sha256.begin(), sha256.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string BaseCache::BasePath(const std::string& sha256) const {
  return absl::StrCat(dir_, "/", sha256, ".fedgemodel");
}

std::string BaseCache::PartPath(const std::string& sha256) const {
  return absl::StrCat(dir_, "/", sha256, ".part");
}

absl::StatusOr<std::string> BaseCache::Find(const std::string& sha256) const {
  if (!IsDigest(sha256)) {
    return absl::InvalidArgumentError("BaseCache: a base's digest is 64 lowercase hex characters");
  }
  const std::string path = BasePath(sha256);
  if (FileBytes(path) == 0) {  // none, or not a regular file
    return absl::NotFoundError(absl::StrCat("BaseCache: no base ", sha256, " in ", dir_));
  }
  absl::StatusOr<std::string> actual = privacy::Sha256FileHex(path);
  if (actual.ok() && *actual == sha256) return path;
  ::unlink(path.c_str());  // corrupt or replaced: never loaded, fetched again
  return absl::NotFoundError(absl::StrCat("BaseCache: ", path, " did not match its digest ",
                                          "and was removed"));
}

int64_t BaseCache::PartialBytes(const std::string& sha256) const {
  if (!IsDigest(sha256)) return 0;
  return FileBytes(PartPath(sha256));
}

void BaseCache::DropPartial(const std::string& sha256) {
  if (IsDigest(sha256)) ::unlink(PartPath(sha256).c_str());
}

absl::Status BaseCache::Begin(const std::string& sha256, int64_t offset, int64_t total_bytes) {
  sha256_.clear();
  if (!IsDigest(sha256)) {
    return absl::InvalidArgumentError("BaseCache: a base's digest is 64 lowercase hex characters");
  }
  if (total_bytes <= 0 || total_bytes > max_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "BaseCache: the base ", sha256, " has ", total_bytes, " bytes; this device takes 1 to ",
        max_bytes_));
  }
  const std::string part = PartPath(sha256);
  {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
      const std::string name = entry.path().filename().string();
      if (absl::EndsWith(name, ".part") && CacheFileName(name) && entry.path().string() != part) {
        std::filesystem::remove(entry.path(), ec);
      }
    }
  }
  const int64_t kept = FileBytes(part);
  if (offset != kept || offset > total_bytes) {
    ::unlink(part.c_str());
    return absl::OutOfRangeError(absl::StrCat("BaseCache: a download of ", sha256,
                                              " starting at byte ", offset, ", ", kept,
                                              " kept (of ", total_bytes, "): starting over"));
  }
  sha256_ = sha256;
  kept_ = kept;
  total_ = total_bytes;
  return absl::OkStatus();
}

absl::Status BaseCache::Append(int64_t offset, absl::string_view data) {
  if (sha256_.empty()) return absl::FailedPreconditionError("BaseCache: no download begun");
  if (offset != kept_ || static_cast<int64_t>(data.size()) > total_ - kept_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BaseCache: a chunk of ", data.size(), " bytes at offset ", offset, " of the base ",
        sha256_, ", expected offset ", kept_, " and at most ", total_ - kept_, " bytes"));
  }
  const std::string part = PartPath(sha256_);
  const int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("BaseCache: cannot write ", part, ": ", std::strerror(errno)));
  }
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      // What was written of the chunk is cut off, so that the kept bytes stay a prefix.
      if (::truncate(part.c_str(), kept_) != 0) ::unlink(part.c_str());
      return absl::UnavailableError(
          absl::StrCat("BaseCache: cannot write ", part, ": ", std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  kept_ += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> BaseCache::Complete() {
  if (sha256_.empty()) return absl::FailedPreconditionError("BaseCache: no download begun");
  if (kept_ != total_) {
    return absl::FailedPreconditionError(absl::StrCat("BaseCache: the base ", sha256_, " has ",
                                                      kept_, " of ", total_, " bytes"));
  }
  const std::string sha256 = std::exchange(sha256_, std::string());
  const std::string part = PartPath(sha256);
  FEDGE_ASSIGN_OR_RETURN(const std::string actual, privacy::Sha256FileHex(part));
  if (actual != sha256) {
    ::unlink(part.c_str());
    return absl::DataLossError(absl::StrCat("BaseCache: the downloaded base has SHA-256 ",
                                            actual, ", the task asked for ", sha256,
                                            " (dropped; it will be fetched again)"));
  }
  const std::string path = BasePath(sha256);
  if (::rename(part.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(
        absl::StrCat("BaseCache: cannot rename ", part, ": ", std::strerror(errno)));
  }
  // One base at a time: a device works for one job, and a base is tens of MB.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().string() == path) continue;
    if (CacheFileName(name)) std::filesystem::remove(entry.path(), ec);
  }
  return path;
}

}  // namespace fedge::client

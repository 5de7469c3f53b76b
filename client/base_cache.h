// The device's store of language-model base files, by SHA-256 (what a task names in
// TaskHeader.language_model.base_sha256): a directory that holds at most one complete base,
// `<sha256>.fedgemodel`, and the download in progress, `<sha256>.part`. A download is
// appended chunk by chunk in offset order (never held in memory whole), survives a restart
// (the next download of the digest resumes from the bytes kept), and becomes the base only
// once the whole file's SHA-256 is the one asked for; then every other base and partial
// download in the directory is removed. A file found in the directory is checked against
// its digest before it is used, so a corrupt or replaced one is never loaded. Only regular
// files named by a digest are read, written or removed (no symbolic link is followed).
//
// The transport is the caller's (the gRPC runtime's FetchBaseModel, client_runtime.cc):
// this class only decides what is kept on disk.
//
// Thread safety: one BaseCache per device and directory, used from one thread.
#ifndef FEDGE_CLIENT_BASE_CACHE_H_
#define FEDGE_CLIENT_BASE_CACHE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedge::client {

class BaseCache {
 public:
  // `dir` is created (mode 0700) when missing. `max_bytes` bounds a base's size (what a
  // coordinator announces is checked before anything is written). INVALID_ARGUMENT for an
  // empty dir or max_bytes ≤ 0; UNAVAILABLE when the directory cannot be made.
  static absl::StatusOr<BaseCache> Open(std::string dir, int64_t max_bytes);

  // True for 64 lowercase hex characters (the only names this class builds paths from).
  static bool IsDigest(absl::string_view sha256);

  // The complete base with this digest, checked (a file whose SHA-256 differs is removed):
  // its path, or NOT_FOUND. INVALID_ARGUMENT for a malformed digest.
  absl::StatusOr<std::string> Find(const std::string& sha256) const;

  // Bytes of `sha256`'s download kept so far (0: none): where the next download resumes.
  int64_t PartialBytes(const std::string& sha256) const;
  // Drops what was kept of `sha256`'s download (the coordinator's base is shorter than it).
  void DropPartial(const std::string& sha256);

  // A download of `sha256` starts (or resumes) at `offset` of a file of `total_bytes`; every
  // other partial download in the directory is dropped (one at a time: a coordinator cannot
  // fill the disk with many). INVALID_ARGUMENT for a malformed digest, RESOURCE_EXHAUSTED
  // for a file over max_bytes, OUT_OF_RANGE for an offset that is not PartialBytes (the
  // kept bytes are then dropped: the next download starts over).
  absl::Status Begin(const std::string& sha256, int64_t offset, int64_t total_bytes);
  // The next bytes of the download Begin started: `offset` must be the bytes kept so far and
  // the data must not run past total_bytes (INVALID_ARGUMENT otherwise; the coordinator
  // sent something else than it announced). UNAVAILABLE for a write error (disk full).
  absl::Status Append(int64_t offset, absl::string_view data);
  // All total_bytes arrived: checks the SHA-256 and makes it the base (removing every other
  // file of the directory's), returning its path. DATA_LOSS (and the download is dropped)
  // when the digest is not the one asked for; FAILED_PRECONDITION before all bytes came.
  absl::StatusOr<std::string> Complete();

  const std::string& dir() const { return dir_; }

 private:
  BaseCache(std::string dir, int64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}
  std::string BasePath(const std::string& sha256) const;
  std::string PartPath(const std::string& sha256) const;

  std::string dir_;
  int64_t max_bytes_;
  // The download Begin started.
  std::string sha256_;
  int64_t kept_ = 0;
  int64_t total_ = 0;
};

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_BASE_CACHE_H_

#include "data/shard.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace fedge::data {
namespace {

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#define FEDGE_SHARD_SWAP_BYTES 1
#endif

constexpr size_t kFixedHeaderBytes = 24;
constexpr size_t kIoChunk = size_t{1} << 20;

std::string Prefix(const std::string& path) { return absl::StrCat("Shard: ", path, ": "); }

absl::Status IoError(const std::string& path, const char* what, int err) {
  const std::string msg = absl::StrCat(Prefix(path), what, ": ", std::strerror(err));
  if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(msg);
  if (err == EACCES || err == EPERM || err == EROFS) return absl::PermissionDeniedError(msg);
  return absl::UnavailableError(msg);
}

void PutLe32(unsigned char* p, uint32_t v) {
  p[0] = static_cast<unsigned char>(v);
  p[1] = static_cast<unsigned char>(v >> 8);
  p[2] = static_cast<unsigned char>(v >> 16);
  p[3] = static_cast<unsigned char>(v >> 24);
}

uint32_t GetLe32(const unsigned char* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// Copies n 4-byte values between host order and little-endian.
void CopyLe32(const void* src, void* dst, size_t n) {
  std::memcpy(dst, src, n * 4);
#ifdef FEDGE_SHARD_SWAP_BYTES
  auto* b = static_cast<unsigned char*>(dst);
  for (size_t i = 0; i < n; ++i) {
    std::swap(b[4 * i], b[4 * i + 3]);
    std::swap(b[4 * i + 1], b[4 * i + 2]);
  }
#endif
}

// A file descriptor that closes itself.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int Release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

absl::Status WriteAll(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return IoError(path, "write failed", errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

// Reads exactly n bytes; a short file is "truncated" (kDataLoss).
absl::Status ReadAll(int fd, void* data, size_t n, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return IoError(path, "read failed", errno);
    }
    if (r == 0) return absl::DataLossError(absl::StrCat(Prefix(path), "truncated while reading"));
    p += r;
    n -= static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

// Buffers writes and keeps a running CRC-32 of everything written.
class CrcWriter {
 public:
  CrcWriter(int fd, const std::string& path) : fd_(fd), path_(path) { buf_.reserve(kIoChunk); }

  absl::Status Append(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    while (n > 0) {
      const size_t take = std::min(n, kIoChunk - buf_.size());
      buf_.insert(buf_.end(), p, p + take);
      p += take;
      n -= take;
      if (buf_.size() == kIoChunk) FEDGE_RETURN_IF_ERROR(Flush());
    }
    return absl::OkStatus();
  }
  // Appends n 4-byte host values as little-endian.
  absl::Status AppendLe32(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    unsigned char tmp[4096];
    while (n > 0) {
      const size_t take = std::min(n, sizeof(tmp) / 4);
      CopyLe32(p, tmp, take);
      FEDGE_RETURN_IF_ERROR(Append(tmp, take * 4));
      p += take * 4;
      n -= take;
    }
    return absl::OkStatus();
  }
  absl::Status Flush() {
    crc_ = crc32(crc_, buf_.data(), static_cast<uInt>(buf_.size()));
    FEDGE_RETURN_IF_ERROR(WriteAll(fd_, buf_.data(), buf_.size(), path_));
    buf_.clear();
    return absl::OkStatus();
  }
  // The CRC of everything appended so far. REQUIRES: Flush() just called.
  uint32_t crc() const { return static_cast<uint32_t>(crc_); }

 private:
  int fd_;
  const std::string& path_;
  std::vector<unsigned char> buf_;
  uLong crc_ = crc32(0L, Z_NULL, 0);
};

// Makes a completed rename durable; best effort (some filesystems refuse to fsync a directory).
void SyncParentDirectory(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

absl::Status CheckWritable(const std::string& path, const Dataset& data) {
  absl::Status valid = ValidateDataset(data);
  if (!valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Prefix(path), "cannot write: ", valid.message()));
  }
  if (static_cast<uint64_t>(data.num_examples) > kShardMaxExamples ||
      static_cast<uint64_t>(data.num_classes) > kShardMaxClasses ||
      data.shape.size() > kShardMaxRank || data.feature_size() > kShardMaxFeatureSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(Prefix(path), "cannot write: dataset exceeds the shard bounds (",
                     data.num_examples, " examples, ", data.num_classes, " classes, rank ",
                     data.shape.size(), ", feature size ", data.feature_size(), ")"));
  }
  for (size_t i = 0; i < data.features.size(); ++i) {
    if (!std::isfinite(data.features[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(Prefix(path), "cannot write: feature ", i, " is not finite"));
    }
  }
  return absl::OkStatus();
}

// Writes a shard file atomically: `body` appends the content through a CrcWriter, then the
// CRC-32 of everything it wrote follows; temporary file, fsync, rename.
absl::Status WriteAtomically(const std::string& path,
                             const std::function<absl::Status(CrcWriter&)>& body) {
  std::string tmp = path + ".tmp-XXXXXX";
  Fd fd(::mkstemp(tmp.data()));
  if (fd.get() < 0) return IoError(path, "cannot create a temporary file", errno);
  absl::Status status = [&]() -> absl::Status {
    CrcWriter out(fd.get(), path);
    FEDGE_RETURN_IF_ERROR(body(out));
    FEDGE_RETURN_IF_ERROR(out.Flush());
    unsigned char crc[4];
    PutLe32(crc, out.crc());
    FEDGE_RETURN_IF_ERROR(WriteAll(fd.get(), crc, 4, path));
    // mkstemp creates 0600; shards are ordinary data files.
    if (::fchmod(fd.get(), 0644) != 0) return IoError(path, "fchmod failed", errno);
    if (::fsync(fd.get()) != 0) return IoError(path, "fsync failed", errno);
    if (::close(fd.Release()) != 0) return IoError(path, "close failed", errno);
    if (::rename(tmp.c_str(), path.c_str()) != 0) return IoError(path, "rename failed", errno);
    SyncParentDirectory(path);
    return absl::OkStatus();
  }();
  if (!status.ok()) ::unlink(tmp.c_str());
  return status;
}

}  // namespace

absl::Status WriteShard(const std::string& path, const Dataset& data) {
  FEDGE_RETURN_IF_ERROR(CheckWritable(path, data));
  return WriteAtomically(path, [&](CrcWriter& out) -> absl::Status {
    unsigned char header[kFixedHeaderBytes + 4 * kShardMaxRank];
    std::memcpy(header, kShardMagic, 8);
    PutLe32(header + 8, kShardVersion);
    PutLe32(header + 12, static_cast<uint32_t>(data.num_examples));
    PutLe32(header + 16, static_cast<uint32_t>(data.num_classes));
    PutLe32(header + 20, static_cast<uint32_t>(data.shape.size()));
    for (size_t i = 0; i < data.shape.size(); ++i) {
      PutLe32(header + kFixedHeaderBytes + 4 * i, static_cast<uint32_t>(data.shape[i]));
    }
    FEDGE_RETURN_IF_ERROR(out.Append(header, kFixedHeaderBytes + 4 * data.shape.size()));
    static_assert(sizeof(float) == 4 && sizeof(int32_t) == 4, "4-byte values expected");
    FEDGE_RETURN_IF_ERROR(out.AppendLe32(data.labels.data(), data.labels.size()));
    return out.AppendLe32(data.features.data(), data.features.size());
  });
}

absl::StatusOr<Dataset> ReadShard(const std::string& path, const ShardReadOptions& options) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return IoError(path, "cannot open", errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return IoError(path, "cannot stat", errno);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);

  auto invalid = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(Prefix(path), what));
  };
  auto truncated = [&](uint64_t expected) {
    return absl::DataLossError(absl::StrCat(Prefix(path), "truncated: the header implies ",
                                            expected, " bytes, the file has ", file_size));
  };

  unsigned char header[kFixedHeaderBytes + 4 * kShardMaxRank];
  if (file_size < kFixedHeaderBytes + 4) return truncated(kFixedHeaderBytes + 4);
  FEDGE_RETURN_IF_ERROR(ReadAll(fd.get(), header, kFixedHeaderBytes, path));
  if (std::memcmp(header, kShardMagic, 8) != 0) {
    return invalid("bad magic: not a fedge shard file (expected \"FEDGESHD\")");
  }
  const uint32_t version = GetLe32(header + 8);
  if (version != kShardVersion) {
    return absl::UnimplementedError(absl::StrCat(Prefix(path), "unsupported version ", version,
                                                 ", this reader knows ", kShardVersion));
  }
  const uint32_t n = GetLe32(header + 12);
  const uint32_t num_classes = GetLe32(header + 16);
  const uint32_t rank = GetLe32(header + 20);
  if (n > kShardMaxExamples) {
    return invalid(
        absl::StrCat("header declares ", n, " examples, more than the limit ", kShardMaxExamples));
  }
  if (num_classes < 1 || num_classes > kShardMaxClasses) {
    return invalid(
        absl::StrCat("num_classes is ", num_classes, ", outside [1, ", kShardMaxClasses, "]"));
  }
  if (rank > kShardMaxRank) {
    return invalid(absl::StrCat("rank is ", rank, ", more than the limit ", kShardMaxRank));
  }
  const uint64_t header_bytes = kFixedHeaderBytes + 4 * uint64_t{rank};
  if (file_size < header_bytes + 4) return truncated(header_bytes + 4);
  FEDGE_RETURN_IF_ERROR(ReadAll(fd.get(), header + kFixedHeaderBytes, 4 * rank, path));
  Dataset data;
  data.num_examples = static_cast<int>(n);
  data.num_classes = static_cast<int>(num_classes);
  uint64_t feature_size = 1;
  for (uint32_t i = 0; i < rank; ++i) {
    const uint32_t d = GetLe32(header + kFixedHeaderBytes + 4 * i);
    if (d < 1 || d > kShardMaxFeatureSize) {
      return invalid(absl::StrCat("dimension ", i, " is ", d));
    }
    feature_size *= d;  // <= 2^24 × 2^24: no overflow before the check below
    if (feature_size > kShardMaxFeatureSize) {
      return invalid(
          absl::StrCat("examples of more than ", kShardMaxFeatureSize, " values are not allowed"));
    }
    data.shape.push_back(static_cast<int>(d));
  }
  // n < 2^24 and feature_size <= 2^24: the products fit in 64 bits.
  const uint64_t expected = header_bytes + 4 * uint64_t{n} + 4 * uint64_t{n} * feature_size + 4;
  if (file_size < expected) return truncated(expected);
  if (file_size > expected) {
    return absl::DataLossError(absl::StrCat(Prefix(path), "the header implies ", expected,
                                            " bytes but the file has ", file_size,
                                            " (trailing bytes)"));
  }

  // The sizes agree with the file, so the allocations below are bounded by the file's size.
  uLong crc = crc32(0L, Z_NULL, 0);
  crc = crc32(crc, header, static_cast<uInt>(header_bytes));
  std::vector<unsigned char> chunk;
  auto read_le32 = [&](void* dst, size_t count) -> absl::Status {
    auto* out = static_cast<unsigned char*>(dst);
    while (count > 0) {
      const size_t take = std::min(count, kIoChunk / 4);
      chunk.resize(take * 4);
      FEDGE_RETURN_IF_ERROR(ReadAll(fd.get(), chunk.data(), chunk.size(), path));
      crc = crc32(crc, chunk.data(), static_cast<uInt>(chunk.size()));
      CopyLe32(chunk.data(), out, take);
      out += take * 4;
      count -= take;
    }
    return absl::OkStatus();
  };
  data.labels.resize(n);
  FEDGE_RETURN_IF_ERROR(read_le32(data.labels.data(), n));
  const size_t values = static_cast<size_t>(n) * feature_size;
  if (!options.compact_u8) {
    data.features.resize(values);
    FEDGE_RETURN_IF_ERROR(read_le32(data.features.data(), data.features.size()));
  } else {
    // A chunk of floats at a time, kept as codes while every value is one; at the first
    // value that is not, what was kept becomes floats and the rest is read as floats.
    data.features_u8.resize(values);
    std::vector<float> part;
    for (size_t done = 0; done < values;) {
      const size_t take = std::min(values - done, kIoChunk / 4);
      part.resize(take);
      FEDGE_RETURN_IF_ERROR(read_le32(part.data(), take));
      for (size_t j = 0; j < take; ++j) {
        if (data.is_u8() && U8Code(part[j], &data.features_u8[done + j])) continue;
        if (data.is_u8()) {
          data.features.resize(values);
          for (size_t i = 0; i < done + j; ++i) data.features[i] = U8Value(data.features_u8[i]);
          std::vector<uint8_t>().swap(data.features_u8);
        }
        data.features[done + j] = part[j];
      }
      done += take;
    }
  }
  unsigned char stored[4];
  FEDGE_RETURN_IF_ERROR(ReadAll(fd.get(), stored, 4, path));
  if (GetLe32(stored) != static_cast<uint32_t>(crc)) {
    return absl::DataLossError(absl::StrFormat("%sCRC mismatch: stored 0x%08x, computed 0x%08x",
                                               Prefix(path), GetLe32(stored),
                                               static_cast<uint32_t>(crc)));
  }
  for (uint32_t i = 0; i < n; ++i) {
    if (data.labels[i] < 0 || static_cast<uint32_t>(data.labels[i]) >= num_classes) {
      return invalid(absl::StrCat("label of example ", i, " is ", data.labels[i], ", outside [0, ",
                                  num_classes, ")"));
    }
  }
  for (size_t i = 0; i < data.features.size(); ++i) {
    if (!std::isfinite(data.features[i])) {
      return invalid(absl::StrCat("feature value ", i, " is not finite"));
    }
  }
  return data;
}

absl::Status WriteTextShard(const std::string& path, const std::vector<TextDocument>& docs) {
  uint64_t bytes = 16;
  for (const TextDocument& d : docs) {
    if (d.id.size() > kTextShardMaxIdBytes) {
      return absl::InvalidArgumentError(absl::StrCat(Prefix(path), "cannot write: document id of ",
                                                     d.id.size(), " bytes, at most ",
                                                     kTextShardMaxIdBytes));
    }
    bytes += 8 + d.id.size() + d.text.size();
  }
  if (docs.size() > kTextShardMaxDocuments || bytes > kTextShardMaxBytes) {
    return absl::InvalidArgumentError(absl::StrCat(Prefix(path), "cannot write: ", docs.size(),
                                                   " documents in ", bytes,
                                                   " bytes exceed the text shard's bounds"));
  }
  return WriteAtomically(path, [&](CrcWriter& out) -> absl::Status {
    unsigned char header[16];
    std::memcpy(header, kTextShardMagic, 8);
    PutLe32(header + 8, kTextShardVersion);
    PutLe32(header + 12, static_cast<uint32_t>(docs.size()));
    FEDGE_RETURN_IF_ERROR(out.Append(header, sizeof header));
    for (const TextDocument& d : docs) {
      unsigned char len[4];
      PutLe32(len, static_cast<uint32_t>(d.id.size()));
      FEDGE_RETURN_IF_ERROR(out.Append(len, 4));
      FEDGE_RETURN_IF_ERROR(out.Append(d.id.data(), d.id.size()));
      PutLe32(len, static_cast<uint32_t>(d.text.size()));
      FEDGE_RETURN_IF_ERROR(out.Append(len, 4));
      FEDGE_RETURN_IF_ERROR(out.Append(d.text.data(), d.text.size()));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<TextDocument>> ReadTextShard(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return IoError(path, "cannot open", errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return IoError(path, "cannot stat", errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  auto invalid = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(Prefix(path), what));
  };
  if (size > kTextShardMaxBytes) {
    return invalid(absl::StrCat(size, " bytes, over the text shard limit of ",
                                kTextShardMaxBytes));
  }
  if (size < 20) {
    return absl::DataLossError(absl::StrCat(Prefix(path), "truncated: ", size,
                                            " bytes, a text shard has at least 20"));
  }
  std::string bytes(size, '\0');
  FEDGE_RETURN_IF_ERROR(ReadAll(fd.get(), bytes.data(), size, path));
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  if (std::memcmp(p, kTextShardMagic, 8) != 0) {
    return invalid("bad magic: not a fedge text shard (expected \"FEDGETXT\")");
  }
  const uint32_t version = GetLe32(p + 8);
  if (version != kTextShardVersion) {
    return absl::UnimplementedError(absl::StrCat(Prefix(path), "unsupported version ", version,
                                                 ", this reader knows ", kTextShardVersion));
  }
  const uLong crc = crc32(crc32(0L, Z_NULL, 0), p, static_cast<uInt>(size - 4));
  if (GetLe32(p + size - 4) != static_cast<uint32_t>(crc)) {
    return absl::DataLossError(absl::StrFormat("%sCRC mismatch: stored 0x%08x, computed 0x%08x",
                                               Prefix(path), GetLe32(p + size - 4),
                                               static_cast<uint32_t>(crc)));
  }
  const uint32_t n = GetLe32(p + 12);
  if (n > kTextShardMaxDocuments) {
    return invalid(absl::StrCat("header declares ", n, " documents, more than the limit ",
                                kTextShardMaxDocuments));
  }
  std::vector<TextDocument> docs;
  uint64_t at = 16;
  const uint64_t end = size - 4;
  // One length-prefixed field of document i into *out.
  auto take = [&](std::string* out, uint64_t limit, const char* what,
                  uint32_t i) -> absl::Status {
    if (end - at < 4) {
      return absl::DataLossError(
          absl::StrCat(Prefix(path), "document ", i, ": the file ends before its ", what));
    }
    const uint32_t len = GetLe32(p + at);
    at += 4;
    if (len > limit) {
      return invalid(absl::StrCat("document ", i, ": ", what, " of ", len, " bytes, at most ",
                                  limit));
    }
    if (end - at < len) {
      return absl::DataLossError(absl::StrCat(Prefix(path), "document ", i, ": its ", what,
                                              " runs past the end of the file"));
    }
    out->assign(bytes.data() + at, len);
    at += len;
    return absl::OkStatus();
  };
  for (uint32_t i = 0; i < n; ++i) {
    TextDocument d;
    FEDGE_RETURN_IF_ERROR(take(&d.id, kTextShardMaxIdBytes, "id", i));
    FEDGE_RETURN_IF_ERROR(take(&d.text, kTextShardMaxBytes, "text", i));
    docs.push_back(std::move(d));
  }
  if (at != end) {
    return absl::DataLossError(absl::StrCat(Prefix(path), end - at,
                                            " trailing bytes after the last document"));
  }
  return docs;
}

std::string ShardPath(const std::string& dir, int client) {
  return absl::StrFormat("%s/client-%05d.shard", dir, client);
}

absl::Status WritePartition(const std::string& dir, const Dataset& data,
                            const ClientIndices& parts) {
  FEDGE_RETURN_IF_ERROR(ValidateDataset(data));
  for (size_t c = 0; c < parts.size(); ++c) {
    for (int i : parts[c]) {
      if (i < 0 || i >= data.num_examples) {
        return absl::InvalidArgumentError(absl::StrCat("Shard: client ", c, " holds example ", i,
                                                       ", outside [0, ", data.num_examples, ")"));
      }
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("Shard: ", dir, ": cannot create directory: ", ec.message()));
  }
  for (size_t c = 0; c < parts.size(); ++c) {
    FEDGE_RETURN_IF_ERROR(WriteShard(ShardPath(dir, static_cast<int>(c)), Subset(data, parts[c])));
  }
  return absl::OkStatus();
}

}  // namespace fedge::data

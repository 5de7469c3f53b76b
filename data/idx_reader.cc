#include "data/idx_reader.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace fedge::data {
namespace {

constexpr size_t kChunkBytes = size_t{1} << 20;

std::string Prefix(const std::string& path) { return absl::StrCat("IdxReader: ", path, ": "); }

// A gzFile that closes itself.
class GzInput {
 public:
  GzInput(const GzInput&) = delete;
  GzInput& operator=(const GzInput&) = delete;
  ~GzInput() {
    if (file_ != nullptr) gzclose(file_);
  }

  static absl::StatusOr<std::unique_ptr<GzInput>> Open(const std::string& path) {
    errno = 0;
    gzFile f = gzopen(path.c_str(), "rb");
    if (f == nullptr) {
      const int err = errno;
      const std::string msg =
          Prefix(path) + "cannot open: " + (err != 0 ? std::strerror(err) : "out of memory");
      if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(msg);
      if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
      return absl::UnavailableError(msg);
    }
    gzbuffer(f, 1 << 17);
    return std::unique_ptr<GzInput>(new GzInput(path, f));
  }

  // Reads up to n bytes; returns how many were read (< n only at the end of the data).
  absl::StatusOr<size_t> Read(void* buf, size_t n) {
    size_t done = 0;
    while (done < n) {
      const unsigned want = static_cast<unsigned>(std::min(n - done, kChunkBytes));
      const int got = gzread(file_, static_cast<char*>(buf) + done, want);
      if (got < 0) return CorruptError();
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    // gzread reports a stream cut short inside a gzip member as a short read plus an error.
    if (done < n) {
      int errnum = Z_OK;
      gzerror(file_, &errnum);
      if (errnum != Z_OK && errnum != Z_BUF_ERROR) return CorruptError();
    }
    return done;
  }

  // Reads exactly n bytes or fails with a "truncated" error describing `what`.
  absl::Status ReadExactly(void* buf, size_t n, const char* what) {
    FEDGE_ASSIGN_OR_RETURN(size_t got, Read(buf, n));
    if (got < n) {
      return absl::DataLossError(
          absl::StrCat(Prefix(path_), "truncated: expected ", n, " ", what, ", got ", got));
    }
    return absl::OkStatus();
  }

  // Reads a little past the payload so that a gzip member's trailer (CRC-32 and length) is
  // checked; the bytes themselves are ignored.
  absl::Status CheckTrailer() {
    char probe[4096];
    return Read(probe, sizeof(probe)).status();
  }

  const std::string& path() const { return path_; }

 private:
  GzInput(std::string path, gzFile file) : path_(std::move(path)), file_(file) {}

  absl::Status CorruptError() {
    int errnum = Z_OK;
    const char* msg = gzerror(file_, &errnum);
    if (errnum == Z_ERRNO) msg = std::strerror(errno);
    return absl::DataLossError(
        absl::StrCat(Prefix(path_), "corrupt or unreadable gzip data: ", msg ? msg : "?"));
  }

  std::string path_;
  gzFile file_;
};

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// Reads the magic and `ndims` dimensions; checks the magic.
absl::StatusOr<std::vector<uint32_t>> ReadHeader(GzInput& in, uint32_t magic, int ndims,
                                                 const char* kind) {
  unsigned char header[16];
  // The magic first, so that a file of the wrong kind says so even when it is short.
  FEDGE_RETURN_IF_ERROR(in.ReadExactly(header, 4, "magic bytes"));
  const uint32_t got = BigEndian32(header);
  if (got != magic) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "bad magic 0x%08x, expected 0x%08x", got, magic);
    return absl::InvalidArgumentError(
        absl::StrCat(Prefix(in.path()), buf, " (an IDX ", kind, " file)"));
  }
  FEDGE_RETURN_IF_ERROR(
      in.ReadExactly(header + 4, 4 * static_cast<size_t>(ndims), "dimension bytes"));
  std::vector<uint32_t> dims(ndims);
  for (int i = 0; i < ndims; ++i) dims[i] = BigEndian32(header + 4 + 4 * i);
  if (dims[0] > kIdxMaxExamples) {
    return absl::InvalidArgumentError(absl::StrCat(Prefix(in.path()), "header declares ", dims[0],
                                                   " examples, more than the limit ",
                                                   kIdxMaxExamples));
  }
  return dims;
}

struct Images {
  int n = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // the file's bytes: a quarter of the floats they become
};

absl::StatusOr<Images> ReadImages(const std::string& path) {
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<GzInput> in, GzInput::Open(path));
  FEDGE_ASSIGN_OR_RETURN(std::vector<uint32_t> dims, ReadHeader(*in, kIdxImagesMagic, 3, "images"));
  for (int i = 1; i <= 2; ++i) {
    if (dims[i] < 1 || dims[i] > kIdxMaxSide) {
      return absl::InvalidArgumentError(absl::StrCat(Prefix(path), "image ",
                                                     i == 1 ? "rows" : "cols", " is ", dims[i],
                                                     ", outside [1, ", kIdxMaxSide, "]"));
    }
  }
  const int64_t total = int64_t{dims[0]} * dims[1] * dims[2];
  if (total > kIdxMaxPixels) {
    return absl::InvalidArgumentError(absl::StrCat(Prefix(path), "header declares ", total,
                                                   " pixels, more than the limit ", kIdxMaxPixels));
  }
  Images out;
  out.n = static_cast<int>(dims[0]);
  out.rows = static_cast<int>(dims[1]);
  out.cols = static_cast<int>(dims[2]);
  // Read chunk by chunk, growing the output as bytes arrive, so that a header promising far
  // more than the file holds fails with "truncated" before any large allocation.
  const size_t expected = static_cast<size_t>(total);
  std::vector<unsigned char> chunk(std::min(expected, kChunkBytes));
  out.pixels.reserve(std::min(expected, kChunkBytes));  // grows with the bytes that arrive
  size_t done = 0;
  while (done < expected) {
    const size_t want = std::min(expected - done, chunk.size());
    FEDGE_ASSIGN_OR_RETURN(size_t got, in->Read(chunk.data(), want));
    out.pixels.insert(out.pixels.end(), chunk.data(), chunk.data() + got);
    done += got;
    if (got < want) {
      return absl::DataLossError(
          absl::StrCat(Prefix(path), "truncated: expected ", expected, " pixel bytes, got ", done));
    }
  }
  FEDGE_RETURN_IF_ERROR(in->CheckTrailer());
  return out;
}

absl::StatusOr<std::vector<int32_t>> ReadLabels(const std::string& path, int num_classes) {
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<GzInput> in, GzInput::Open(path));
  FEDGE_ASSIGN_OR_RETURN(std::vector<uint32_t> dims, ReadHeader(*in, kIdxLabelsMagic, 1, "labels"));
  std::vector<unsigned char> bytes;
  const size_t expected = dims[0];
  // As for images: grow with the data actually present.
  size_t done = 0;
  while (done < expected) {
    const size_t want = std::min(expected - done, kChunkBytes);
    bytes.resize(done + want);
    FEDGE_ASSIGN_OR_RETURN(size_t got, in->Read(bytes.data() + done, want));
    done += got;
    if (got < want) {
      return absl::DataLossError(
          absl::StrCat(Prefix(path), "truncated: expected ", expected, " label bytes, got ", done));
    }
  }
  FEDGE_RETURN_IF_ERROR(in->CheckTrailer());
  std::vector<int32_t> labels(expected);
  for (size_t i = 0; i < expected; ++i) {
    if (bytes[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(Prefix(path), "label ", i, " is ",
                                                     static_cast<int>(bytes[i]), ", outside [0, ",
                                                     num_classes, ")"));
    }
    labels[i] = bytes[i];
  }
  return labels;
}

}  // namespace

absl::StatusOr<Dataset> LoadIdxDataset(const std::string& images_path,
                                       const std::string& labels_path, int num_classes,
                                       IdxStorage storage) {
  if (num_classes <= 0 || num_classes > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("IdxReader: num_classes is ", num_classes, ", outside [1, 256]"));
  }
  FEDGE_ASSIGN_OR_RETURN(Images images, ReadImages(images_path));
  FEDGE_ASSIGN_OR_RETURN(std::vector<int32_t> labels, ReadLabels(labels_path, num_classes));
  if (labels.size() != static_cast<size_t>(images.n)) {
    return absl::InvalidArgumentError(absl::StrCat("IdxReader: ", images_path, " holds ", images.n,
                                                   " images but ", labels_path, " holds ",
                                                   labels.size(), " labels"));
  }
  Dataset d;
  d.num_examples = images.n;
  d.shape = {1, images.rows, images.cols};
  if (storage == IdxStorage::kU8) {
    d.features_u8 = std::move(images.pixels);  // U8Value(b) = b · (1/255), as below
  } else {
    // One allocation of the final size (growing it chunk by chunk, as the bytes arrive,
    // would reallocate and copy 188 MB of Fashion-MNIST's training floats several times).
    d.features.resize(images.pixels.size());
    std::transform(images.pixels.begin(), images.pixels.end(), d.features.begin(),
                   [](uint8_t b) { return b * (1.0f / 255.0f); });
  }
  d.labels = std::move(labels);
  d.num_classes = num_classes;
  return d;
}

absl::StatusOr<FashionMnist> LoadFashionMnist(const std::string& dir, IdxStorage storage) {
  FashionMnist out;
  FEDGE_ASSIGN_OR_RETURN(out.train, LoadIdxDataset(dir + "/train-images-idx3-ubyte.gz",
                                                   dir + "/train-labels-idx1-ubyte.gz", 10,
                                                   storage));
  FEDGE_ASSIGN_OR_RETURN(out.test, LoadFashionMnistTest(dir, storage));
  return out;
}

absl::StatusOr<Dataset> LoadFashionMnistTest(const std::string& dir, IdxStorage storage) {
  return LoadIdxDataset(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz",
                        10, storage);
}

}  // namespace fedge::data

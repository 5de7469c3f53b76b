#include "model/payload.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedge::model {
namespace {

constexpr int64_t kMaxTotalBytes = int64_t{1} << 62;

// A name that came from the network, quoted and bounded for error messages.
std::string Quote(absl::string_view name) {
  constexpr size_t kMax = 64;
  if (name.size() <= kMax) return absl::StrCat("'", name, "'");
  return absl::StrCat("'", name.substr(0, kMax), "...' (", name.size(), " bytes)");
}

template <typename Container>
std::string ShapeString(const Container& shape) {
  if (static_cast<int64_t>(shape.size()) > kMaxTensorRank) {
    return absl::StrCat("[rank ", shape.size(), "]");
  }
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Product of the dimensions, or -1 when a dimension is negative or the product exceeds
// `limit`.
template <typename Container>
int64_t NumElements(const Container& shape, int64_t limit) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return -1;
    if (d != 0 && n > limit / d) return -1;
    n *= d;
  }
  return n;
}

bool HostIsLittleEndian() {
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
  return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
#else
  const uint32_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
#endif
}

void ByteSwap32(char* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i, p += 4) {
    std::swap(p[0], p[3]);
    std::swap(p[1], p[2]);
  }
}

}  // namespace

absl::StatusOr<EncodedPayload> EncodeFloat32Tensors(absl::Span<const FloatTensorView> tensors) {
  if (tensors.size() > static_cast<size_t>(kMaxPayloadTensors)) {
    return absl::InvalidArgumentError(absl::StrCat("Payload: ", tensors.size(),
                                                   " tensors, at most ", kMaxPayloadTensors));
  }
  EncodedPayload out;
  absl::flat_hash_set<absl::string_view> names;
  int64_t offset = 0;
  for (const FloatTensorView& t : tensors) {
    if (t.name.empty()) return absl::InvalidArgumentError("Payload: a tensor has no name");
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(t.name),
                                                     " appears twice"));
    }
    if (static_cast<int64_t>(t.shape.size()) > kMaxTensorRank) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(t.name),
                                                     " has rank ", t.shape.size(), ", at most ",
                                                     kMaxTensorRank));
    }
    const int64_t n = NumElements(t.shape, kMaxTotalBytes / 4);
    if (n < 0 || n != static_cast<int64_t>(t.values.size())) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(t.name), " of shape ",
                                                     ShapeString(t.shape), " has ",
                                                     t.values.size(), " values"));
    }
    v1::TensorInfo* info = out.manifest.add_tensors();
    info->set_name(std::string(t.name));
    for (int64_t d : t.shape) info->add_shape(d);
    info->set_encoding(v1::TENSOR_ENCODING_FLOAT32);
    info->set_offset(offset);
    info->set_byte_size(4 * n);
    offset += 4 * n;
    if (offset > kMaxTotalBytes) return absl::InvalidArgumentError("Payload: tensors too large");
  }
  out.bytes.resize(static_cast<size_t>(offset));
  char* p = out.bytes.data();
  for (const FloatTensorView& t : tensors) {
    const size_t size = t.values.size() * sizeof(float);
    if (size > 0) std::memcpy(p, t.values.data(), size);
    if (!HostIsLittleEndian()) ByteSwap32(p, static_cast<int64_t>(t.values.size()));
    p += size;
  }
  return out;
}

absl::StatusOr<EncodedPayload> EncodeModelParameters(const v1::ModelProto& model) {
  std::vector<FloatTensorView> views;
  views.reserve(model.parameters_size());
  for (const v1::TensorProto& t : model.parameters()) {
    views.push_back(FloatTensorView{
        t.name(),
        absl::MakeConstSpan(reinterpret_cast<const int64_t*>(t.shape().data()), t.shape_size()),
        absl::MakeConstSpan(t.values().data(), t.values_size())});
  }
  return EncodeFloat32Tensors(views);
}

std::vector<PayloadTensorSpec> ParameterSpecs(const v1::ModelProto& model) {
  std::vector<PayloadTensorSpec> specs;
  specs.reserve(model.parameters_size());
  for (const v1::TensorProto& t : model.parameters()) {
    specs.push_back(PayloadTensorSpec{t.name(), {t.shape().begin(), t.shape().end()}});
  }
  return specs;
}

absl::StatusOr<int64_t> Float32PayloadBytes(absl::Span<const PayloadTensorSpec> specs) {
  int64_t total = 0;
  for (const PayloadTensorSpec& s : specs) {
    const int64_t n = NumElements(s.shape, kMaxTotalBytes / 4);
    if (n < 0 || total > kMaxTotalBytes - 4 * n) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(s.name),
                                                     " has an impossible shape ",
                                                     ShapeString(s.shape)));
    }
    total += 4 * n;
  }
  return total;
}

absl::StatusOr<std::vector<DecodedTensor>> DecodeFloat32Tensors(
    const v1::TensorManifest& manifest, absl::string_view payload,
    absl::Span<const PayloadTensorSpec> expected) {
  if (manifest.tensors_size() != static_cast<int>(expected.size())) {
    return absl::InvalidArgumentError(absl::StrCat("Payload: the manifest lists ",
                                                   manifest.tensors_size(), " tensors, expected ",
                                                   expected.size()));
  }
  // Validate the whole manifest before touching the bytes.
  int64_t offset = 0;
  for (int i = 0; i < manifest.tensors_size(); ++i) {
    const v1::TensorInfo& info = manifest.tensors(i);
    const PayloadTensorSpec& want = expected[i];
    if (info.name() != want.name) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", i, " is ",
                                                     Quote(info.name()), ", expected ",
                                                     Quote(want.name)));
    }
    if (!std::equal(info.shape().begin(), info.shape().end(), want.shape.begin(),
                    want.shape.end())) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(want.name),
                                                     " has shape ", ShapeString(info.shape()),
                                                     ", expected ", ShapeString(want.shape)));
    }
    if (info.encoding() != v1::TENSOR_ENCODING_FLOAT32) {
      return absl::InvalidArgumentError(
          absl::StrCat("Payload: tensor ", Quote(want.name), " has encoding ",
                       v1::TensorEncoding_Name(info.encoding()).empty()
                           ? absl::StrCat(static_cast<int>(info.encoding()))
                           : v1::TensorEncoding_Name(info.encoding()),
                       ", expected TENSOR_ENCODING_FLOAT32"));
    }
    const int64_t n = NumElements(want.shape, kMaxTotalBytes / 4);
    if (n < 0) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: expected tensor ", Quote(want.name),
                                                     " has an impossible shape"));
    }
    if (info.offset() != offset) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(want.name),
                                                     " starts at byte ", info.offset(),
                                                     ", expected ", offset,
                                                     " (tensors are back to back)"));
    }
    if (info.byte_size() != 4 * n) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(want.name), " has ",
                                                     info.byte_size(), " bytes, expected ",
                                                     4 * n, " (", n, " float32 values)"));
    }
    if (offset > kMaxTotalBytes - 4 * n) {
      return absl::InvalidArgumentError("Payload: tensors too large");
    }
    offset += 4 * n;
  }
  if (static_cast<int64_t>(payload.size()) != offset) {
    return absl::InvalidArgumentError(absl::StrCat("Payload: ", payload.size(),
                                                   " bytes, the manifest describes ", offset));
  }
  std::vector<DecodedTensor> out(expected.size());
  const char* p = payload.data();
  for (size_t i = 0; i < expected.size(); ++i) {
    DecodedTensor& t = out[i];
    t.name = expected[i].name;
    t.shape = expected[i].shape;
    const int64_t n = manifest.tensors(static_cast<int>(i)).byte_size() / 4;
    t.values.resize(static_cast<size_t>(n));
    if (n > 0) std::memcpy(t.values.data(), p, static_cast<size_t>(4 * n));
    if (!HostIsLittleEndian()) ByteSwap32(reinterpret_cast<char*>(t.values.data()), n);
    p += 4 * n;
    for (int64_t j = 0; j < n; ++j) {
      if (!std::isfinite(t.values[j])) {
        return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(t.name),
                                                       " has a non-finite value (",
                                                       t.values[j], ") at index ", j));
      }
    }
  }
  return out;
}

absl::Status DecodeModelParameters(const v1::TensorManifest& manifest,
                                   absl::string_view payload, v1::ModelProto* model) {
  absl::StatusOr<std::vector<DecodedTensor>> tensors =
      DecodeFloat32Tensors(manifest, payload, ParameterSpecs(*model));
  if (!tensors.ok()) return tensors.status();
  for (int i = 0; i < model->parameters_size(); ++i) {
    const std::vector<float>& v = (*tensors)[i].values;
    model->mutable_parameters(i)->mutable_values()->Assign(v.begin(), v.end());
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Chunks

uint32_t PayloadCrc32(absl::string_view payload) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const unsigned char* p = reinterpret_cast<const unsigned char*>(payload.data());
  size_t left = payload.size();
  while (left > 0) {
    const uInt n = static_cast<uInt>(std::min<size_t>(left, size_t{1} << 30));
    crc = crc32(crc, p, n);
    p += n;
    left -= n;
  }
  return static_cast<uint32_t>(crc);
}

v1::PayloadTrailer MakeTrailer(absl::string_view payload) {
  v1::PayloadTrailer t;
  t.set_crc32(PayloadCrc32(payload));
  return t;
}

bool ForEachChunk(absl::string_view payload, int64_t chunk_bytes,
                  const std::function<bool(const v1::DataChunk&)>& send) {
  if (chunk_bytes < 1 || chunk_bytes > kMaxChunkBytes) chunk_bytes = kMaxChunkBytes;
  v1::DataChunk chunk;
  for (size_t offset = 0; offset < payload.size(); offset += static_cast<size_t>(chunk_bytes)) {
    chunk.set_offset(static_cast<int64_t>(offset));
    const absl::string_view piece = payload.substr(offset, static_cast<size_t>(chunk_bytes));
    chunk.mutable_data()->assign(piece.data(), piece.size());
    if (!send(chunk)) return false;
  }
  return true;
}

std::vector<v1::DataChunk> SplitIntoChunks(absl::string_view payload, int64_t chunk_bytes) {
  std::vector<v1::DataChunk> chunks;
  ForEachChunk(payload, chunk_bytes, [&](const v1::DataChunk& c) {
    chunks.push_back(c);
    return true;
  });
  return chunks;
}

absl::StatusOr<PayloadAssembler> PayloadAssembler::Create(int64_t total_bytes,
                                                          int64_t max_bytes) {
  if (total_bytes < 0 || total_bytes > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("Payload: announced total of ", total_bytes,
                                                   " bytes is outside [0, ", max_bytes, "]"));
  }
  return PayloadAssembler(total_bytes);
}

absl::Status PayloadAssembler::Add(const v1::DataChunk& chunk) {
  return Add(chunk.offset(), chunk.data());
}

absl::Status PayloadAssembler::Add(int64_t offset, absl::string_view data) {
  if (done_) {
    return absl::FailedPreconditionError("Payload: chunk after the payload finished or failed");
  }
  const int64_t have = bytes_received();
  absl::Status error;
  if (offset != have) {
    error = absl::InvalidArgumentError(absl::StrCat("Payload: chunk at offset ", offset,
                                                    ", expected offset ", have));
  } else if (data.empty()) {
    error = absl::InvalidArgumentError(absl::StrCat("Payload: empty chunk at offset ", offset));
  } else if (static_cast<int64_t>(data.size()) > total_ - have) {
    error = absl::InvalidArgumentError(absl::StrCat(
        "Payload: chunk of ", data.size(), " bytes at offset ", offset, " overflows the announced ",
        total_, " bytes"));
  }
  if (!error.ok()) {
    done_ = true;
    bytes_ = std::string();
    return error;
  }
  const int64_t need = have + static_cast<int64_t>(data.size());
  if (static_cast<int64_t>(bytes_.capacity()) < need) {
    // Geometric growth, but never past the announced total.
    bytes_.reserve(static_cast<size_t>(
        std::min(total_, std::max(need, 2 * static_cast<int64_t>(bytes_.capacity())))));
  }
  bytes_.append(data.data(), data.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> PayloadAssembler::Finish(const v1::PayloadTrailer& trailer) {
  if (done_) {
    return absl::FailedPreconditionError("Payload: trailer after the payload finished or failed");
  }
  done_ = true;
  if (!complete()) {
    const int64_t have = bytes_received();
    bytes_ = std::string();
    return absl::DataLossError(absl::StrCat("Payload: trailer after ", have, " of ", total_,
                                            " announced bytes"));
  }
  const uint32_t crc = PayloadCrc32(bytes_);
  if (crc != trailer.crc32()) {
    bytes_ = std::string();
    return absl::DataLossError(absl::StrCat("Payload: CRC-32 of the ", total_,
                                            " bytes received is ", crc,
                                            ", the trailer says ", trailer.crc32()));
  }
  return std::move(bytes_);
}

}  // namespace fedge::model

#include "model/payload.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/rng.h"
#include "kernels/accumulate.h"
#include "base/status_macros.h"
#include "kernels/q4.h"

namespace fedge::model {
namespace {

constexpr int64_t kMaxTotalBytes = int64_t{1} << 62;
constexpr int64_t kCheckBlock = 16384;  // floats decoded and checked at a time (64 KB)

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

std::string EncodingName(v1::TensorEncoding e) {
  const std::string& name = v1::TensorEncoding_Name(e);
  return name.empty() ? absl::StrCat(static_cast<int>(e)) : name;
}

// ---- quantized layouts (proto/transfer.proto) ----

constexpr int64_t kStochasticChunk = 256;
constexpr float kMaxQ4Abs = 8.0f * 65504.0f / 1.001f;  // d = max/8 must fit fp16
constexpr int64_t kQ4BlockBytes = 18;  // sizeof(kernels::BlockQ4): fp16 d + 16 nibble bytes
static_assert(sizeof(kernels::BlockQ4) == kQ4BlockBytes, "BlockQ4 layout");

int64_t NumChunks(int64_t n) { return (n + kStochasticChunk - 1) / kStochasticChunk; }

// INT8_PER_CHANNEL: one scale per shape[0] row for rank ≥ 2; a vector (a bias) or a scalar is
// one row with one scale.
template <typename Container>
int64_t PerChannelRows(const Container& shape) {
  return shape.size() < 2 ? 1 : static_cast<int64_t>(*shape.begin());
}

// INT4_BLOCK32: shape[0] rows for rank ≥ 2, else one row; each row padded to 32s.
struct Q4Rows {
  int64_t rows = 0;
  int64_t row_len = 0;
  int64_t blocks_per_row = 0;
};
template <typename Container>
Q4Rows Q4RowsOf(const Container& shape, int64_t n) {
  Q4Rows r;
  r.rows = shape.size() >= 2 ? static_cast<int64_t>(*shape.begin()) : 1;
  r.row_len = r.rows > 0 ? n / r.rows : 0;
  r.blocks_per_row = (r.row_len + kernels::kQ4Block - 1) / kernels::kQ4Block;
  return r;
}

void PutFloat(float v, char* p) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  for (int k = 0; k < 4; ++k) p[k] = static_cast<char>((u >> (8 * k)) & 0xff);
}

float GetFloat(const char* p) {
  uint32_t u = 0;
  for (int k = 0; k < 4; ++k) u |= uint32_t{static_cast<unsigned char>(p[k])} << (8 * k);
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

float MaxAbs(const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::abs(x[i]));
  return m;
}

// The int8 scale of values up to `max_abs`: max_abs/127, one step smaller when 127 times it
// would round past FLT_MAX (the decoder refuses what decodes to infinity).
float Int8Scale(float max_abs) {
  float s = max_abs / 127.0f;
  if (!std::isfinite(127.0f * s)) s = std::nextafter(s, 0.0f);
  return s;
}

void EncodeInt8PerChannel(const FloatTensorView& t, char* p) {
  const int64_t rows = PerChannelRows(t.shape);
  const int64_t n = static_cast<int64_t>(t.values.size());
  const int64_t len = rows > 0 ? n / rows : 0;
  char* q = p + 4 * rows;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = t.values.data() + r * len;
    const float s = Int8Scale(MaxAbs(x, len));
    PutFloat(s, p + 4 * r);
    for (int64_t j = 0; j < len; ++j) {
      const double v = s > 0.0f ? std::round(static_cast<double>(x[j]) / s) : 0.0;
      q[r * len + j] = static_cast<char>(static_cast<int8_t>(std::clamp(v, -127.0, 127.0)));
    }
  }
}

void EncodeInt8Stochastic(const FloatTensorView& t, base::Rng rng, char* p) {
  const int64_t n = static_cast<int64_t>(t.values.size());
  const int64_t chunks = NumChunks(n);
  char* q = p + 4 * chunks;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kStochasticChunk;
    const int64_t len = std::min(kStochasticChunk, n - begin);
    const float* x = t.values.data() + begin;
    const float s = Int8Scale(MaxAbs(x, len));
    PutFloat(s, p + 4 * c);
    for (int64_t j = 0; j < len; ++j) {
      double v = 0.0;
      // floor(x/s + u), u ~ U[0, 1): rounds up with probability frac(x/s), so E[q] = x/s.
      if (s > 0.0f) v = std::floor(static_cast<double>(x[j]) / s + rng.Uniform());
      q[begin + j] = static_cast<char>(static_cast<int8_t>(std::clamp(v, -127.0, 127.0)));
    }
  }
}

void EncodeInt4Block32(const FloatTensorView& t, char* p) {
  const Q4Rows r = Q4RowsOf(t.shape, static_cast<int64_t>(t.values.size()));
  const int64_t padded = r.blocks_per_row * kernels::kQ4Block;
  std::vector<float> row(static_cast<size_t>(padded), 0.0f);
  std::vector<kernels::BlockQ4> blocks(static_cast<size_t>(r.blocks_per_row));
  for (int64_t i = 0; i < r.rows; ++i) {
    if (r.row_len > 0) {
      std::copy_n(t.values.data() + i * r.row_len, r.row_len, row.begin());
    }
    kernels::QuantizeRowQ4(row.data(), static_cast<int>(padded), blocks.data());
    for (const kernels::BlockQ4& b : blocks) {
      p[0] = static_cast<char>(b.d & 0xff);
      p[1] = static_cast<char>(b.d >> 8);
      std::memcpy(p + 2, b.qs, sizeof(b.qs));
      p += kQ4BlockBytes;
    }
  }
}

absl::Status BadScale(const std::string& tensor, absl::string_view unit, int64_t index,
                      float scale) {
  return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(tensor), " ", unit,
                                                 " ", index, " has scale ", scale));
}

bool GoodScale(float s) { return std::isfinite(s) && s >= 0.0f; }

absl::Status DecodeInt8PerChannel(const char* p, DecodedTensor* t) {
  const int64_t rows = PerChannelRows(t->shape);
  const int64_t n = static_cast<int64_t>(t->values.size());
  const int64_t len = rows > 0 ? n / rows : 0;
  const int8_t* q = reinterpret_cast<const int8_t*>(p + 4 * rows);
  for (int64_t r = 0; r < rows; ++r) {
    const float s = GetFloat(p + 4 * r);
    if (!GoodScale(s)) return BadScale(t->name, "row", r, s);
    for (int64_t j = 0; j < len; ++j) t->values[r * len + j] = q[r * len + j] * s;
  }
  return absl::OkStatus();
}

absl::Status DecodeInt8Stochastic(const char* p, DecodedTensor* t) {
  const int64_t n = static_cast<int64_t>(t->values.size());
  const int64_t chunks = NumChunks(n);
  const int8_t* q = reinterpret_cast<const int8_t*>(p + 4 * chunks);
  for (int64_t c = 0; c < chunks; ++c) {
    const float s = GetFloat(p + 4 * c);
    if (!GoodScale(s)) return BadScale(t->name, "chunk", c, s);
    const int64_t begin = c * kStochasticChunk;
    const int64_t end = std::min(n, begin + kStochasticChunk);
    for (int64_t j = begin; j < end; ++j) t->values[j] = q[j] * s;
  }
  return absl::OkStatus();
}

absl::Status DecodeInt4Block32(const char* p, DecodedTensor* t) {
  const Q4Rows r = Q4RowsOf(t->shape, static_cast<int64_t>(t->values.size()));
  const int64_t padded = r.blocks_per_row * kernels::kQ4Block;
  std::vector<kernels::BlockQ4> blocks(static_cast<size_t>(r.blocks_per_row));
  std::vector<float> row(static_cast<size_t>(padded));
  for (int64_t i = 0; i < r.rows; ++i) {
    for (int64_t b = 0; b < r.blocks_per_row; ++b, p += kQ4BlockBytes) {
      kernels::BlockQ4& block = blocks[b];
      block.d = static_cast<uint16_t>(static_cast<unsigned char>(p[0]) |
                                      (static_cast<unsigned char>(p[1]) << 8));
      std::memcpy(block.qs, p + 2, sizeof(block.qs));
      const float d = kernels::HalfToFloat(block.d);
      if (!std::isfinite(d)) {
        return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(t->name),
                                                       " row ", i, " block ", b,
                                                       " has scale ", d));
      }
    }
    if (padded == 0) continue;
    kernels::DequantizeRowQ4(blocks.data(), static_cast<int>(padded), row.data());
    std::copy_n(row.begin(), r.row_len, t->values.begin() + i * r.row_len);
  }
  return absl::OkStatus();
}

}  // namespace

const std::vector<v1::TensorEncoding>& DecodableEncodings() {
  static const auto* const kEncodings = new std::vector<v1::TensorEncoding>{
      v1::TENSOR_ENCODING_FLOAT32, v1::TENSOR_ENCODING_INT8_PER_CHANNEL,
      v1::TENSOR_ENCODING_INT4_BLOCK32, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED};
  return *kEncodings;
}

int64_t EncodedBytes(const PayloadTensorSpec& spec, v1::TensorEncoding encoding) {
  if (static_cast<int64_t>(spec.shape.size()) > kMaxTensorRank) return -1;
  const int64_t n = NumElements(spec.shape, kMaxTotalBytes / 8);
  if (n < 0) return -1;
  switch (encoding) {
    case v1::TENSOR_ENCODING_FLOAT32:
      return 4 * n;
    case v1::TENSOR_ENCODING_INT8_PER_CHANNEL:
      return 4 * PerChannelRows(spec.shape) + n;
    case v1::TENSOR_ENCODING_INT4_BLOCK32: {
      const Q4Rows r = Q4RowsOf(spec.shape, n);
      return r.rows * r.blocks_per_row * kQ4BlockBytes;
    }
    case v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED:
      return 4 * NumChunks(n) + n;
    default:
      return -1;
  }
}

int64_t EncodedPayloadBytes(absl::Span<const PayloadTensorSpec> specs,
                            v1::TensorEncoding encoding) {
  int64_t total = 0;
  for (const PayloadTensorSpec& s : specs) {
    const int64_t b = EncodedBytes(s, encoding);
    if (b < 0 || total > kMaxTotalBytes - b) return -1;
    total += b;
  }
  return total;
}

absl::StatusOr<EncodedPayload> EncodeTensors(absl::Span<const FloatTensorView> tensors,
                                             v1::TensorEncoding encoding, uint64_t seed) {
  const std::vector<v1::TensorEncoding>& known = DecodableEncodings();
  if (std::find(known.begin(), known.end(), encoding) == known.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Payload: cannot encode as ", EncodingName(encoding)));
  }
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
    const int64_t n = NumElements(t.shape, kMaxTotalBytes / 8);
    if (n < 0 || n != static_cast<int64_t>(t.values.size())) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(t.name), " of shape ",
                                                     ShapeString(t.shape), " has ",
                                                     t.values.size(), " values"));
    }
    if (encoding != v1::TENSOR_ENCODING_FLOAT32) {
      for (int64_t j = 0; j < n; ++j) {
        if (!std::isfinite(t.values[j])) {
          return absl::InvalidArgumentError(absl::StrCat(
              "Payload: tensor ", Quote(t.name), " has a non-finite value (", t.values[j],
              ") at index ", j, "; ", EncodingName(encoding), " needs finite values"));
        }
        // int4's block scale is fp16: |x|/8 must stay below fp16's largest finite value.
        if (encoding == v1::TENSOR_ENCODING_INT4_BLOCK32 && std::abs(t.values[j]) > kMaxQ4Abs) {
          return absl::InvalidArgumentError(absl::StrCat(
              "Payload: tensor ", Quote(t.name), " has value ", t.values[j], " at index ", j,
              ", beyond TENSOR_ENCODING_INT4_BLOCK32's range ±", kMaxQ4Abs));
        }
      }
    }
    const int64_t bytes =
        EncodedBytes(PayloadTensorSpec{std::string(t.name), {t.shape.begin(), t.shape.end()}},
                     encoding);
    v1::TensorInfo* info = out.manifest.add_tensors();
    info->set_name(std::string(t.name));
    for (int64_t d : t.shape) info->add_shape(d);
    info->set_encoding(encoding);
    info->set_offset(offset);
    info->set_byte_size(bytes);
    if (bytes < 0 || offset > kMaxTotalBytes - bytes) {
      return absl::InvalidArgumentError("Payload: tensors too large");
    }
    offset += bytes;
  }
  out.bytes.resize(static_cast<size_t>(offset));
  char* p = out.bytes.data();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const FloatTensorView& t = tensors[i];
    const int64_t bytes = out.manifest.tensors(static_cast<int>(i)).byte_size();
    switch (encoding) {
      case v1::TENSOR_ENCODING_FLOAT32:
        if (bytes > 0) std::memcpy(p, t.values.data(), static_cast<size_t>(bytes));
        if (!HostIsLittleEndian()) ByteSwap32(p, static_cast<int64_t>(t.values.size()));
        break;
      case v1::TENSOR_ENCODING_INT8_PER_CHANNEL:
        EncodeInt8PerChannel(t, p);
        break;
      case v1::TENSOR_ENCODING_INT4_BLOCK32:
        EncodeInt4Block32(t, p);
        break;
      case v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED:
        EncodeInt8Stochastic(t, base::Rng(seed, i), p);
        break;
      default:
        FEDGE_CHECK(false);
    }
    p += bytes;
  }
  return out;
}

absl::StatusOr<EncodedPayload> EncodeFloat32Tensors(absl::Span<const FloatTensorView> tensors) {
  return EncodeTensors(tensors, v1::TENSOR_ENCODING_FLOAT32);
}

absl::StatusOr<EncodedPayload> EncodeModelParameters(const v1::ModelProto& model,
                                                     v1::TensorEncoding encoding,
                                                     uint64_t seed) {
  std::vector<FloatTensorView> views;
  views.reserve(model.parameters_size());
  for (const v1::TensorProto& t : model.parameters()) {
    views.push_back(FloatTensorView{
        t.name(),
        absl::MakeConstSpan(reinterpret_cast<const int64_t*>(t.shape().data()), t.shape_size()),
        absl::MakeConstSpan(t.values().data(), t.values_size())});
  }
  return EncodeTensors(views, encoding, seed);
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

absl::StatusOr<std::vector<DecodedTensor>> DecodeTensors(
    const v1::TensorManifest& manifest, absl::string_view payload,
    absl::Span<const PayloadTensorSpec> expected,
    const std::vector<v1::TensorEncoding>& allowed) {
  if (manifest.tensors_size() != static_cast<int>(expected.size())) {
    return absl::InvalidArgumentError(absl::StrCat("Payload: the manifest lists ",
                                                   manifest.tensors_size(), " tensors, expected ",
                                                   expected.size()));
  }
  const std::vector<v1::TensorEncoding>& known = DecodableEncodings();
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
    const v1::TensorEncoding e = info.encoding();
    if (std::find(allowed.begin(), allowed.end(), e) == allowed.end() ||
        std::find(known.begin(), known.end(), e) == known.end()) {
      std::vector<std::string> names;
      for (v1::TensorEncoding a : allowed) {
        if (std::find(known.begin(), known.end(), a) != known.end()) {
          names.push_back(EncodingName(a));
        }
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "Payload: tensor ", Quote(want.name), " has encoding ", EncodingName(e), ", expected ",
          names.size() == 1 ? "" : "one of ", names.empty() ? "(none)" : absl::StrJoin(names, ", ")));
    }
    const int64_t bytes = EncodedBytes(want, e);
    if (bytes < 0) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: expected tensor ", Quote(want.name),
                                                     " has an impossible shape"));
    }
    if (info.offset() != offset) {
      return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(want.name),
                                                     " starts at byte ", info.offset(),
                                                     ", expected ", offset,
                                                     " (tensors are back to back)"));
    }
    if (info.byte_size() != bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Payload: tensor ", Quote(want.name), " has ", info.byte_size(), " bytes, expected ",
          bytes, " (", NumElements(want.shape, kMaxTotalBytes), " values as ", EncodingName(e),
          ")"));
    }
    if (offset > kMaxTotalBytes - bytes) {
      return absl::InvalidArgumentError("Payload: tensors too large");
    }
    offset += bytes;
  }
  if (static_cast<int64_t>(payload.size()) != offset) {
    return absl::InvalidArgumentError(absl::StrCat("Payload: ", payload.size(),
                                                   " bytes, the manifest describes ", offset));
  }
  std::vector<DecodedTensor> out(expected.size());
  const char* p = payload.data();
  for (size_t i = 0; i < expected.size(); ++i) {
    const v1::TensorInfo& info = manifest.tensors(static_cast<int>(i));
    DecodedTensor& t = out[i];
    t.name = expected[i].name;
    t.shape = expected[i].shape;
    const int64_t n = NumElements(t.shape, kMaxTotalBytes);
    t.values.resize(static_cast<size_t>(n));
    switch (info.encoding()) {
      case v1::TENSOR_ENCODING_FLOAT32:
        // Copied and checked in 64 KB blocks, each checked while it is in cache.
        for (int64_t lo = 0; lo < n; lo += kCheckBlock) {
          const int64_t hi = std::min(n, lo + kCheckBlock);
          std::memcpy(t.values.data() + lo, p + 4 * lo, static_cast<size_t>(4 * (hi - lo)));
          if (!HostIsLittleEndian()) {
            ByteSwap32(reinterpret_cast<char*>(t.values.data() + lo), hi - lo);
          }
          t.max_abs = std::max(t.max_abs, kernels::MaxAbs(t.values.data(), lo, hi));
        }
        break;
      case v1::TENSOR_ENCODING_INT8_PER_CHANNEL:
        FEDGE_RETURN_IF_ERROR(DecodeInt8PerChannel(p, &t));
        break;
      case v1::TENSOR_ENCODING_INT4_BLOCK32:
        FEDGE_RETURN_IF_ERROR(DecodeInt4Block32(p, &t));
        break;
      case v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED:
        FEDGE_RETURN_IF_ERROR(DecodeInt8Stochastic(p, &t));
        break;
      default:
        FEDGE_CHECK(false);
    }
    p += info.byte_size();
    if (info.encoding() != v1::TENSOR_ENCODING_FLOAT32) {
      t.max_abs = kernels::MaxAbs(t.values.data(), 0, n);
    }
    if (!std::isfinite(t.max_abs)) {
      for (int64_t j = 0; j < n; ++j) {
        if (!std::isfinite(t.values[j])) {
          return absl::InvalidArgumentError(absl::StrCat("Payload: tensor ", Quote(t.name),
                                                         " has a non-finite value (",
                                                         t.values[j], ") at index ", j));
        }
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<DecodedTensor>> DecodeFloat32Tensors(
    const v1::TensorManifest& manifest, absl::string_view payload,
    absl::Span<const PayloadTensorSpec> expected) {
  return DecodeTensors(manifest, payload, expected, {v1::TENSOR_ENCODING_FLOAT32});
}

absl::Status DecodeModelParameters(const v1::TensorManifest& manifest,
                                   absl::string_view payload, v1::ModelProto* model,
                                   const std::vector<v1::TensorEncoding>& allowed) {
  absl::StatusOr<std::vector<DecodedTensor>> tensors =
      DecodeTensors(manifest, payload, ParameterSpecs(*model), allowed);
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

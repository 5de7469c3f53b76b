// Tensor payloads and the chunked transfer of proto/transfer.proto, transport-free.
//
// Both gRPC adapters use this file (server/grpc/ and client/grpc/, which never include
// each other): the coordinator to send a task's model and receive an update, the device to
// receive the model and send its update. Nothing here knows about gRPC.
//
// 1. Tensors ⇄ one byte payload + a TensorManifest (TENSOR_ENCODING_FLOAT32):
//
//      // sender
//      FEDGE_ASSIGN_OR_RETURN(EncodedPayload p, EncodeModelParameters(model));
//      header.mutable_manifest()->Swap(&p.manifest);  header.set_total_bytes(p.bytes.size());
//      // receiver: what it expects (names and shapes, in order) comes from its own
//      // knowledge (the task's model), never from the manifest.
//      FEDGE_ASSIGN_OR_RETURN(std::vector<DecodedTensor> t,
//                             DecodeFloat32Tensors(manifest, bytes, expected_specs));
//      // or, for a ModelProto whose parameters already have the expected names and shapes
//      // (e.g. Sequential::Create(spec)->ToProto()): DecodeModelParameters(manifest, bytes, &m)
//
//    Layout: tensors back to back in manifest order, no padding; tensor i has
//    offset = Σ_{j<i} byte_size_j and byte_size = EncodedBytes(its shape, its encoding);
//    the payload is exactly Σ byte_size bytes. Every number is little-endian.
//
//    Compressed encodings (EncodeTensors / DecodeTensors; layouts in
//    proto/transfer.proto): the receiver dequantizes to float32.
//      FLOAT32                  4·n bytes: IEEE float32, row-major.
//      INT8_PER_CHANNEL         R float32 scales s_r = max|row r|/127, then n int8 values
//                               q = clamp(round(x/s_r), −127, 127); R = shape[0] (1 for a
//                               scalar); x̂ = q·s_r, |x − x̂| ≤ s_r/2. 4·R + n bytes.
//      INT4_BLOCK32             per row (R = shape[0] rows for rank ≥ 2, else one row of n),
//                               the row zero-padded to a multiple of 32 and stored as
//                               kernels::BlockQ4 blocks (18 bytes: fp16 d, 16 bytes of
//                               nibbles; kernels/q4.h); x̂ = (q − 8)·d, |x − x̂| ≤ |d|.
//                               18·R·⌈(n/R)/32⌉ bytes (~0.14× float32).
//      INT8_STOCHASTIC_CHUNKED  the row-major values in chunks of 256: ⌈n/256⌉ float32 scales
//                               s = max|chunk|/127, then n int8 values q = clamp(floor(x/s +
//                               u), −127, 127), u ~ U[0,1) from base::Rng(seed, tensor index):
//                               E[q·s] = x (unbiased), Var ≤ s²/4, |x − x̂| < s.
//                               4·⌈n/256⌉ + n bytes (~0.254× float32).
//    A scale that is not finite or is negative (an int4 d that is not finite) or a value
//    that dequantizes to a non-finite float is refused, naming the tensor and the row,
//    chunk or block: "Payload: tensor 'fc1.weight' chunk 3 has scale nan".
//
// 2. The chunk protocol (header → DataChunks in offset order → PayloadTrailer with CRC-32):
//
//      // sender
//      ForEachChunk(bytes, kDefaultChunkBytes, [&](const v1::DataChunk& c) { return Write(c); });
//      Write(MakeTrailer(bytes));
//      // receiver
//      FEDGE_ASSIGN_OR_RETURN(PayloadAssembler a,
//                             PayloadAssembler::Create(header.total_bytes(), my_limit));
//      for each DataChunk c: FEDGE_RETURN_IF_ERROR(a.Add(c));
//      on the trailer:       FEDGE_ASSIGN_OR_RETURN(std::string bytes, a.Finish(trailer));
//      (a stream that ends without a trailer: discard the assembler)
//
// Error codes (every message starts with "Payload: " and names the tensor, offset or size
// at fault; names that came from the network are quoted and truncated to 64 bytes):
//   INVALID_ARGUMENT  a manifest that disagrees with what was expected (count, name, shape,
//                     encoding, offset, byte size, total size), a non-finite value, a chunk
//                     at the wrong offset, empty, or past the announced total, an announced
//                     total that is negative or over the receiver's limit, bad encoder input.
//   DATA_LOSS         the trailer arrived before all announced bytes, or the CRC-32 differs.
//   FAILED_PRECONDITION  Add or Finish on an assembler that already finished or failed.
//
// Thread safety: the functions are thread-safe; a PayloadAssembler is not (one per stream).
#ifndef FEDGE_MODEL_PAYLOAD_H_
#define FEDGE_MODEL_PAYLOAD_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "proto/model.pb.h"
#include "proto/transfer.pb.h"

namespace fedge::model {

// Senders split payloads into DataChunks of at most this many bytes (transfer.proto).
inline constexpr int64_t kMaxChunkBytes = int64_t{1} << 20;
inline constexpr int64_t kDefaultChunkBytes = kMaxChunkBytes;
// Bounds on a manifest: tensors per payload, dimensions per tensor.
inline constexpr int kMaxPayloadTensors = 4096;
inline constexpr int kMaxTensorRank = 8;

// Name and shape of one tensor a receiver expects.
struct PayloadTensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// A float tensor to encode (borrowed; must outlive the Encode call).
struct FloatTensorView {
  absl::string_view name;
  absl::Span<const int64_t> shape;
  absl::Span<const float> values;  // row-major, product(shape) values
};

// A decoded float tensor (owns its values).
struct DecodedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
  float max_abs = 0.0f;  // the largest |value| (decoding proves every value finite)
};

struct EncodedPayload {
  v1::TensorManifest manifest;  // one TensorInfo per tensor, offsets and sizes filled
  std::string bytes;            // the payload
};

// ---- tensors ⇄ payload ----

// The encodings EncodeTensors writes and DecodeTensors reads: FLOAT32, INT8_PER_CHANNEL,
// INT4_BLOCK32, INT8_STOCHASTIC_CHUNKED.
const std::vector<v1::TensorEncoding>& DecodableEncodings();

// Bytes of one tensor of this shape in this encoding (the layouts above); -1 for a
// negative dimension, a size over 2^62, or an encoding not in DecodableEncodings().
int64_t EncodedBytes(const PayloadTensorSpec& spec, v1::TensorEncoding encoding);
// Σ EncodedBytes over the tensors (-1 when any is -1).
int64_t EncodedPayloadBytes(absl::Span<const PayloadTensorSpec> specs,
                            v1::TensorEncoding encoding);

// Encodes the tensors, in order, all in `encoding` (one of DecodableEncodings()); `seed`
// drives the stochastic rounding of INT8_STOCHASTIC_CHUNKED (the same seed gives the same
// bytes) and is unused otherwise. INVALID_ARGUMENT as EncodeFloat32Tensors, for another
// encoding, and for a non-finite value under a quantized encoding.
absl::StatusOr<EncodedPayload> EncodeTensors(absl::Span<const FloatTensorView> tensors,
                                             v1::TensorEncoding encoding, uint64_t seed = 0);

// Decodes `payload` described by `manifest`, validating it fully against `expected` (the
// same checks as DecodeFloat32Tensors) where each tensor may use any encoding in `allowed`
// (its manifest entry says which; byte_size must be EncodedBytes for that encoding and
// shape). Scales must be finite and ≥ 0 (int4: d finite), and every dequantized value
// finite. Returns float32 tensors in order.
absl::StatusOr<std::vector<DecodedTensor>> DecodeTensors(
    const v1::TensorManifest& manifest, absl::string_view payload,
    absl::Span<const PayloadTensorSpec> expected,
    const std::vector<v1::TensorEncoding>& allowed = DecodableEncodings());

// Encodes the tensors, in order, as FLOAT32. INVALID_ARGUMENT when a shape has a negative
// dimension or rank over kMaxTensorRank, the values do not match the shape, a name is
// empty or repeated, or there are more than kMaxPayloadTensors tensors. Values are not
// checked (the receiver checks them).
absl::StatusOr<EncodedPayload> EncodeFloat32Tensors(absl::Span<const FloatTensorView> tensors);

// The parameters of `model` (e.g. a task's model, or an update's Δ as client::TrainLocally
// returns it in LocalUpdate::delta), in order, in `encoding` (see EncodeTensors).
absl::StatusOr<EncodedPayload> EncodeModelParameters(
    const v1::ModelProto& model, v1::TensorEncoding encoding = v1::TENSOR_ENCODING_FLOAT32,
    uint64_t seed = 0);

// Names and shapes of `model`'s parameters, in order.
std::vector<PayloadTensorSpec> ParameterSpecs(const v1::ModelProto& model);

// Bytes of a FLOAT32 payload holding tensors of these shapes (4·Σ numel). INVALID_ARGUMENT
// on a negative dimension or a total over 2^62.
absl::StatusOr<int64_t> Float32PayloadBytes(absl::Span<const PayloadTensorSpec> specs);

// Decodes `payload` described by `manifest`, validating it fully against `expected`: the
// same number of tensors with the same names and shapes in the same order, every tensor
// FLOAT32, offsets contiguous from 0, byte_size = 4·numel, payload size = the sum, every
// value finite. Returns the tensors in order. (DecodeTensors with allowed = {FLOAT32}.)
absl::StatusOr<std::vector<DecodedTensor>> DecodeFloat32Tensors(
    const v1::TensorManifest& manifest, absl::string_view payload,
    absl::Span<const PayloadTensorSpec> expected);

// DecodeTensors with `model`'s parameters as the expected names and shapes and `allowed`
// encodings (FLOAT32 only unless given); on success replaces their values with the
// payload's (on error `model` is unchanged).
absl::Status DecodeModelParameters(
    const v1::TensorManifest& manifest, absl::string_view payload, v1::ModelProto* model,
    const std::vector<v1::TensorEncoding>& allowed = {v1::TENSOR_ENCODING_FLOAT32});

// ---- chunk protocol ----

// CRC-32 (ISO-HDLC, zlib's crc32()) of the payload, as PayloadTrailer.crc32 carries it.
uint32_t PayloadCrc32(absl::string_view payload);
v1::PayloadTrailer MakeTrailer(absl::string_view payload);

// Calls `send` with consecutive chunks of `payload` of at most `chunk_bytes` bytes (values
// outside [1, kMaxChunkBytes] mean kMaxChunkBytes), in offset order, building one chunk at
// a time (memory: one chunk). An empty payload has no chunks. Stops and returns false as
// soon as `send` returns false (e.g. the stream broke); true when every chunk was sent.
bool ForEachChunk(absl::string_view payload, int64_t chunk_bytes,
                  const std::function<bool(const v1::DataChunk&)>& send);

// All chunks at once (copies the payload; for small payloads and tests).
std::vector<v1::DataChunk> SplitIntoChunks(absl::string_view payload,
                                           int64_t chunk_bytes = kDefaultChunkBytes);

// Reassembles one payload from its chunks, enforcing the protocol: each chunk's offset
// equals the bytes received so far, no chunk is empty, the bytes never exceed the
// announced total, and the trailer comes after exactly the total with a matching CRC-32.
// Memory grows with the bytes actually received (never more than the announced total), so
// announcing a large total costs nothing until the bytes arrive.
class PayloadAssembler final {
 public:
  // INVALID_ARGUMENT when `total_bytes` is negative or exceeds `max_bytes` (the receiver's
  // limit for this payload).
  static absl::StatusOr<PayloadAssembler> Create(int64_t total_bytes, int64_t max_bytes);

  // Appends a chunk. Any error leaves the assembler failed (later calls:
  // FAILED_PRECONDITION); the caller discards the payload.
  absl::Status Add(const v1::DataChunk& chunk);
  absl::Status Add(int64_t offset, absl::string_view data);

  // Checks the total (DATA_LOSS when short) and the CRC-32 (DATA_LOSS on a mismatch) and
  // returns the payload. Once only.
  absl::StatusOr<std::string> Finish(const v1::PayloadTrailer& trailer);

  int64_t total_bytes() const { return total_; }
  int64_t bytes_received() const { return static_cast<int64_t>(bytes_.size()); }
  bool complete() const { return bytes_received() == total_; }

 private:
  explicit PayloadAssembler(int64_t total) : total_(total) {}

  int64_t total_ = 0;
  std::string bytes_;
  bool done_ = false;  // finished or failed
};

}  // namespace fedge::model

#endif  // FEDGE_MODEL_PAYLOAD_H_

#include "model/payload.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::model {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

v1::ModelProto MakeModel() {
  v1::ModelProto m;
  m.mutable_spec()->set_name("tiny");
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    v1::TensorProto* t = m.add_parameters();
    t->set_name(name);
    int64_t n = 1;
    for (int64_t d : shape) {
      t->add_shape(d);
      n *= d;
    }
    for (int64_t i = 0; i < n; ++i) t->add_values(0.25f * static_cast<float>(i) - 3.0f);
  };
  add("fc1.weight", {4, 3});
  add("fc1.bias", {4});
  add("fc2.weight", {2, 4});
  add("fc2.bias", {2});
  return m;
}

std::string Assemble(const EncodedPayload& p) {
  auto a = PayloadAssembler::Create(static_cast<int64_t>(p.bytes.size()), 1 << 20);
  EXPECT_THAT(a, IsOk());
  for (const v1::DataChunk& c : SplitIntoChunks(p.bytes, 7)) EXPECT_THAT(a->Add(c), IsOk());
  auto bytes = a->Finish(MakeTrailer(p.bytes));
  EXPECT_THAT(bytes, IsOk());
  return bytes.ok() ? *bytes : std::string();
}

TEST(PayloadTest, ModelParametersRoundTripThroughChunks) {
  const v1::ModelProto m = MakeModel();
  auto p = EncodeModelParameters(m);
  ASSERT_THAT(p, IsOk());
  ASSERT_EQ(p->manifest.tensors_size(), 4);
  EXPECT_EQ(p->bytes.size(), 4u * (12 + 4 + 8 + 2));
  EXPECT_EQ(p->manifest.tensors(1).offset(), 48);
  EXPECT_EQ(p->manifest.tensors(1).byte_size(), 16);
  EXPECT_EQ(p->manifest.tensors(3).encoding(), v1::TENSOR_ENCODING_FLOAT32);
  // Little-endian float32: -3.0f is 0xC0400000.
  EXPECT_EQ(static_cast<unsigned char>(p->bytes[3]), 0xC0);
  EXPECT_EQ(static_cast<unsigned char>(p->bytes[2]), 0x40);
  ASSERT_THAT(Float32PayloadBytes(ParameterSpecs(m)), IsOk());
  EXPECT_EQ(*Float32PayloadBytes(ParameterSpecs(m)), static_cast<int64_t>(p->bytes.size()));

  const std::string bytes = Assemble(*p);
  EXPECT_EQ(bytes, p->bytes);
  // Into a model with the same names and shapes but other values.
  v1::ModelProto target = m;
  for (auto& t : *target.mutable_parameters()) t.clear_values();
  for (auto& t : *target.mutable_parameters()) {
    for (int i = 0; i < 1; ++i) t.add_values(99);  // wrong count: decoding replaces them
  }
  ASSERT_THAT(DecodeModelParameters(p->manifest, bytes, &target), IsOk());
  EXPECT_EQ(target.SerializeAsString(), m.SerializeAsString());

  auto decoded = DecodeFloat32Tensors(p->manifest, bytes, ParameterSpecs(m));
  ASSERT_THAT(decoded, IsOk());
  ASSERT_EQ(decoded->size(), 4u);
  EXPECT_EQ((*decoded)[2].name, "fc2.weight");
  EXPECT_EQ((*decoded)[2].shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ((*decoded)[2].values[1], m.parameters(2).values(1));
}

// Values near FLT_MAX: the int8 encoders' scale must not decode to infinity (before, the
// encoders wrote payloads their own decoder refused).
TEST(PayloadTest, Int8EncodingsOfExtremeValuesDecode) {
  v1::ModelProto m = MakeModel();
  for (v1::TensorProto& t : *m.mutable_parameters()) {
    for (int i = 0; i < t.values_size(); ++i) {
      t.set_values(i, (i % 2 == 0 ? 1.0f : -1.0f) * std::numeric_limits<float>::max());
    }
  }
  for (v1::TensorEncoding e : {v1::TENSOR_ENCODING_INT8_PER_CHANNEL,
                               v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED}) {
    auto p = EncodeModelParameters(m, e, /*seed=*/3);
    ASSERT_THAT(p, IsOk());
    v1::ModelProto back = m;
    ASSERT_THAT(DecodeModelParameters(p->manifest, p->bytes, &back, {e}), IsOk())
        << v1::TensorEncoding_Name(e);
    for (const v1::TensorProto& t : back.parameters()) {
      for (float v : t.values()) {
        EXPECT_TRUE(std::isfinite(v));
        EXPECT_GT(std::abs(v), 0.99f * std::numeric_limits<float>::max());
      }
    }
  }
}

TEST(PayloadTest, EmptyPayloadAndScalarTensors) {
  auto empty = EncodeFloat32Tensors({});
  ASSERT_THAT(empty, IsOk());
  EXPECT_TRUE(empty->bytes.empty());
  EXPECT_TRUE(SplitIntoChunks(empty->bytes).empty());
  auto a = PayloadAssembler::Create(0, 10);
  ASSERT_THAT(a, IsOk());
  EXPECT_THAT(a->Finish(MakeTrailer("")), IsOk());

  const float v = 2.5f;
  const std::vector<FloatTensorView> scalar = {{"s", {}, absl::MakeConstSpan(&v, 1)}};
  auto p = EncodeFloat32Tensors(scalar);
  ASSERT_THAT(p, IsOk());
  auto d = DecodeFloat32Tensors(p->manifest, p->bytes, {PayloadTensorSpec{"s", {}}});
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ((*d)[0].values, std::vector<float>{2.5f});
}

TEST(PayloadTest, EncoderRejectsInconsistentTensors) {
  const std::vector<float> v(6, 1.0f);
  const std::vector<int64_t> shape = {2, 4};
  EXPECT_THAT(EncodeFloat32Tensors({{"w", shape, v}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'w' of shape [2, 4] has 6")));
  const std::vector<int64_t> neg = {-1, -6};
  EXPECT_THAT(EncodeFloat32Tensors({{"w", neg, v}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'w'")));
  const std::vector<int64_t> ok = {6};
  EXPECT_THAT(EncodeFloat32Tensors({{"w", ok, v}, {"w", ok, v}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
  EXPECT_THAT(EncodeFloat32Tensors({{"", ok, v}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no name")));
}

TEST(PayloadTest, ChunksAreAtMostOneMiBAndStopWhenTheSenderFails) {
  const std::string payload(kMaxChunkBytes * 2 + 5, 'x');
  std::vector<v1::DataChunk> chunks = SplitIntoChunks(payload, 0);  // 0 = the maximum
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].data().size(), static_cast<size_t>(kMaxChunkBytes));
  EXPECT_EQ(chunks[1].offset(), kMaxChunkBytes);
  EXPECT_EQ(chunks[2].data().size(), 5u);
  EXPECT_EQ(SplitIntoChunks(payload, int64_t{1} << 40).size(), 3u);  // clamped
  int sent = 0;
  EXPECT_FALSE(ForEachChunk(payload, 1000, [&](const v1::DataChunk&) { return ++sent < 2; }));
  EXPECT_EQ(sent, 2);
}

// ---- every malformed case ----

class PayloadErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = MakeModel();
    auto p = EncodeModelParameters(model_);
    ASSERT_THAT(p, IsOk());
    payload_ = std::move(p).value();
    specs_ = ParameterSpecs(model_);
  }
  absl::StatusOr<std::vector<DecodedTensor>> Decode(const v1::TensorManifest& m,
                                                    const std::string& bytes) {
    return DecodeFloat32Tensors(m, bytes, specs_);
  }
  v1::ModelProto model_;
  EncodedPayload payload_;
  std::vector<PayloadTensorSpec> specs_;
};

TEST_F(PayloadErrorsTest, AssemblerRejectsAWrongOffset) {
  auto a = PayloadAssembler::Create(100, 1000);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(a->Add(0, std::string(10, 'a')), IsOk());
  EXPECT_THAT(a->Add(20, std::string(10, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("offset 20, expected offset 10")));
  // The assembler is spent.
  EXPECT_THAT(a->Add(10, "b"), StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  EXPECT_THAT(a->Finish({}), StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  // A repeated chunk is a wrong offset too.
  auto b = PayloadAssembler::Create(100, 1000);
  ASSERT_THAT(b->Add(0, std::string(10, 'a')), IsOk());
  EXPECT_THAT(b->Add(0, std::string(10, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("offset 0, expected offset 10")));
}

TEST_F(PayloadErrorsTest, AssemblerRejectsOverflowAndOversizedTotals) {
  auto a = PayloadAssembler::Create(15, 1000);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(a->Add(0, std::string(10, 'a')), IsOk());
  EXPECT_THAT(a->Add(10, std::string(6, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overflows the announced 15")));
  EXPECT_THAT(PayloadAssembler::Create(1001, 1000),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1001 bytes is outside [0, 1000]")));
  EXPECT_THAT(PayloadAssembler::Create(-1, 1000),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("-1")));
  auto b = PayloadAssembler::Create(15, 1000);
  EXPECT_THAT(b->Add(0, ""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty chunk")));
}

TEST_F(PayloadErrorsTest, AssemblerRejectsAShortPayload) {
  auto a = PayloadAssembler::Create(20, 1000);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(a->Add(0, std::string(10, 'a')), IsOk());
  EXPECT_FALSE(a->complete());
  EXPECT_THAT(a->Finish(MakeTrailer(std::string(10, 'a'))),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("after 10 of 20")));
}

TEST_F(PayloadErrorsTest, AssemblerRejectsACrcMismatch) {
  auto a = PayloadAssembler::Create(static_cast<int64_t>(payload_.bytes.size()), 1 << 20);
  ASSERT_THAT(a, IsOk());
  std::string corrupted = payload_.bytes;
  corrupted[17] ^= 0x01;
  for (const v1::DataChunk& c : SplitIntoChunks(corrupted, 16)) ASSERT_THAT(a->Add(c), IsOk());
  EXPECT_THAT(a->Finish(MakeTrailer(payload_.bytes)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("CRC-32")));
}

TEST_F(PayloadErrorsTest, Crc32IsZlibs) {
  EXPECT_EQ(PayloadCrc32("123456789"), 0xCBF43926u);  // the CRC-32/ISO-HDLC check value
  EXPECT_EQ(PayloadCrc32(""), 0u);
}

TEST_F(PayloadErrorsTest, DecodeRejectsNonFiniteValues) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    v1::ModelProto m = model_;
    m.mutable_parameters(2)->set_values(5, bad);
    auto p = EncodeModelParameters(m);
    ASSERT_THAT(p, IsOk());
    EXPECT_THAT(Decode(p->manifest, p->bytes),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("'fc2.weight' has a non-finite value")));
    EXPECT_THAT(Decode(p->manifest, p->bytes),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("index 5")));
  }
}

TEST_F(PayloadErrorsTest, DecodeRejectsShapeMismatch) {
  v1::TensorManifest m = payload_.manifest;
  m.mutable_tensors(0)->set_shape(0, 3);
  m.mutable_tensors(0)->set_shape(1, 4);  // same numel, other shape
  EXPECT_THAT(Decode(m, payload_.bytes),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'fc1.weight' has shape [3, 4], expected [4, 3]")));
  // A sender whose model differs: its own manifest is consistent, but not what we expect.
  v1::ModelProto other = model_;
  other.mutable_parameters(1)->set_shape(0, 5);
  other.mutable_parameters(1)->add_values(0);
  auto p = EncodeModelParameters(other);
  ASSERT_THAT(p, IsOk());
  EXPECT_THAT(Decode(p->manifest, p->bytes),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fc1.bias' has shape [5]")));
}

TEST_F(PayloadErrorsTest, DecodeRejectsManifestErrors) {
  {
    v1::TensorManifest m = payload_.manifest;
    m.mutable_tensors(1)->set_name("fc9.bias");
    EXPECT_THAT(Decode(m, payload_.bytes),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("tensor 1 is 'fc9.bias', expected 'fc1.bias'")));
  }
  {
    v1::TensorManifest m = payload_.manifest;
    m.mutable_tensors()->RemoveLast();
    EXPECT_THAT(Decode(m, payload_.bytes),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lists 3 tensors, expected 4")));
  }
  {
    v1::TensorManifest m = payload_.manifest;
    m.mutable_tensors(2)->set_offset(m.tensors(2).offset() + 4);
    EXPECT_THAT(Decode(m, payload_.bytes),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fc2.weight' starts at byte 68, expected 64")));
  }
  {
    v1::TensorManifest m = payload_.manifest;
    m.mutable_tensors(3)->set_byte_size(4);
    EXPECT_THAT(Decode(m, payload_.bytes),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fc2.bias' has 4 bytes, expected 8")));
  }
  {
    v1::TensorManifest m = payload_.manifest;
    m.mutable_tensors(0)->set_encoding(v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
    EXPECT_THAT(Decode(m, payload_.bytes),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("TENSOR_ENCODING_INT8_PER_CHANNEL")));
    m.mutable_tensors(0)->set_encoding(static_cast<v1::TensorEncoding>(77));
    EXPECT_THAT(Decode(m, payload_.bytes),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("encoding 77")));
  }
  {
    v1::TensorManifest m = payload_.manifest;
    m.mutable_tensors(0)->set_name(std::string(10000, 'n'));
    auto s = Decode(m, payload_.bytes);
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(10000 bytes)")));
    EXPECT_LT(s.status().message().size(), 300u);  // network strings are truncated
  }
  // Payload shorter or longer than the manifest says.
  EXPECT_THAT(Decode(payload_.manifest, payload_.bytes.substr(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("103 bytes, the manifest describes 104")));
  EXPECT_THAT(Decode(payload_.manifest, payload_.bytes + "x"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("105 bytes")));
  // Absurd shapes do not overflow.
  {
    v1::TensorManifest m = payload_.manifest;
    std::vector<PayloadTensorSpec> huge = specs_;
    huge[0].shape = {int64_t{1} << 40, int64_t{1} << 40};
    m.mutable_tensors(0)->set_shape(0, int64_t{1} << 40);
    m.mutable_tensors(0)->set_shape(1, int64_t{1} << 40);
    EXPECT_THAT(DecodeFloat32Tensors(m, payload_.bytes, huge),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("impossible shape")));
    EXPECT_THAT(Float32PayloadBytes(huge), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  }
}

TEST_F(PayloadErrorsTest, RandomBytesNeverDecodeSilently) {
  std::mt19937 gen(7);
  int accepted = 0;
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes(payload_.bytes.size(), '\0');
    for (char& c : bytes) c = static_cast<char>(gen());
    // Random bytes under the right manifest: either some value is not finite (an error
    // naming the tensor), or they decode as finite floats (a well-formed update).
    auto d = Decode(payload_.manifest, bytes);
    if (d.ok()) {
      ++accepted;
      for (const auto& t : *d) {
        for (float v : t.values) ASSERT_TRUE(std::isfinite(v));
      }
    } else {
      EXPECT_THAT(d, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));
    }
    // A random manifest is refused.
    v1::TensorManifest junk;
    const std::string raw = bytes.substr(0, 40);
    if (junk.ParseFromString(raw)) {
      EXPECT_FALSE(Decode(junk, payload_.bytes).ok());
    }
    // Random bytes as chunks fail the CRC check.
    auto a = PayloadAssembler::Create(static_cast<int64_t>(bytes.size()), 1 << 20);
    ASSERT_THAT(a, IsOk());
    for (const v1::DataChunk& c : SplitIntoChunks(bytes, 33)) ASSERT_THAT(a->Add(c), IsOk());
    EXPECT_THAT(a->Finish(MakeTrailer(payload_.bytes)),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("CRC-32")));
  }
  EXPECT_LT(accepted, 200);
}

TEST_F(PayloadErrorsTest, DecodeModelParametersLeavesTheModelUnchangedOnError) {
  v1::ModelProto target = model_;
  v1::TensorManifest m = payload_.manifest;
  m.mutable_tensors(3)->set_byte_size(12);
  EXPECT_FALSE(DecodeModelParameters(m, payload_.bytes, &target).ok());
  EXPECT_EQ(target.SerializeAsString(), model_.SerializeAsString());
}

// ---- compressed encodings ----

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
  FloatTensorView view() const { return {name, shape, values}; }
  PayloadTensorSpec spec() const { return {name, shape}; }
};

Tensor RandomTensor(const std::string& name, std::vector<int64_t> shape, uint64_t seed,
                    float spread = 1.0f) {
  Tensor t{name, std::move(shape), {}};
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  std::mt19937 gen(static_cast<uint32_t>(seed));
  std::normal_distribution<float> normal(0.0f, spread);
  t.values.resize(static_cast<size_t>(n));
  for (float& v : t.values) v = normal(gen);
  return t;
}

float MaxAbsOf(const float* x, int64_t n) {
  float m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::abs(x[i]));
  return m;
}

absl::StatusOr<std::vector<DecodedTensor>> RoundTrip(const std::vector<Tensor>& tensors,
                                                     v1::TensorEncoding e, uint64_t seed = 0) {
  std::vector<FloatTensorView> views;
  std::vector<PayloadTensorSpec> specs;
  for (const Tensor& t : tensors) {
    views.push_back(t.view());
    specs.push_back(t.spec());
  }
  auto p = EncodeTensors(views, e, seed);
  if (!p.ok()) return p.status();
  EXPECT_EQ(static_cast<int64_t>(p->bytes.size()), EncodedPayloadBytes(specs, e));
  for (const v1::TensorInfo& info : p->manifest.tensors()) EXPECT_EQ(info.encoding(), e);
  return DecodeTensors(p->manifest, Assemble(*p), specs, {e});
}

TEST(PayloadEncodingTest, Int8PerChannelErrorIsAtMostHalfAStepPerRow) {
  // Rows of very different magnitudes: per-row scales keep the small row accurate.
  Tensor w = RandomTensor("fc1.weight", {3, 50}, 1);
  for (int j = 0; j < 50; ++j) w.values[j] *= 1000.0f;
  for (int j = 100; j < 150; ++j) w.values[j] *= 0.001f;
  const Tensor b = RandomTensor("fc1.bias", {3}, 2);
  auto d = RoundTrip({w, b}, v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
  ASSERT_THAT(d, IsOk());
  for (int r = 0; r < 3; ++r) {
    const float s = MaxAbsOf(&w.values[r * 50], 50) / 127.0f;
    for (int j = r * 50; j < r * 50 + 50; ++j) {
      EXPECT_LE(std::abs((*d)[0].values[j] - w.values[j]), 0.5f * s * 1.0001f) << j;
    }
  }
  // A bias is one row with one scale: half a step of its largest value.
  const float sb = MaxAbsOf(b.values.data(), 3) / 127.0f;
  for (int j = 0; j < 3; ++j) EXPECT_LE(std::abs((*d)[1].values[j] - b.values[j]), 0.5f * sb * 1.0001f);
  EXPECT_EQ(EncodedBytes(w.spec(), v1::TENSOR_ENCODING_INT8_PER_CHANNEL), 4 * 3 + 150);
  EXPECT_EQ(EncodedBytes(b.spec(), v1::TENSOR_ENCODING_INT8_PER_CHANNEL), 4 + 3);
}

TEST(PayloadEncodingTest, Int4Block32ErrorIsBoundedPerBlockAndRowsArePadded) {
  // 70 values per row: 3 blocks, the last one padded with 26 zeros.
  const Tensor w = RandomTensor("w", {4, 70}, 3);
  const Tensor b = RandomTensor("b", {40}, 4);
  auto d = RoundTrip({w, b}, v1::TENSOR_ENCODING_INT4_BLOCK32);
  ASSERT_THAT(d, IsOk());
  for (int r = 0; r < 4; ++r) {
    for (int blk = 0; blk < 3; ++blk) {
      const int begin = r * 70 + blk * 32, end = r * 70 + std::min(70, blk * 32 + 32);
      // d = max/8 (fp16); the largest value lands exactly, others within one step d.
      const float step = MaxAbsOf(&w.values[begin], end - begin) / 8.0f * 1.002f;
      for (int j = begin; j < end; ++j) {
        EXPECT_LE(std::abs((*d)[0].values[j] - w.values[j]), step) << j;
      }
    }
  }
  for (int j = 0; j < 40; ++j) EXPECT_NEAR((*d)[1].values[j], b.values[j], 0.2f);
  EXPECT_EQ(EncodedBytes(w.spec(), v1::TENSOR_ENCODING_INT4_BLOCK32), 18 * 4 * 3);
  EXPECT_EQ(EncodedBytes(b.spec(), v1::TENSOR_ENCODING_INT4_BLOCK32), 18 * 2);
}

TEST(PayloadEncodingTest, StochasticInt8ErrorIsBelowOneStepPerChunk) {
  // 600 values: chunks of 256, 256 and 88, with magnitudes far apart.
  Tensor t = RandomTensor("delta", {20, 30}, 5);
  for (int j = 256; j < 512; ++j) t.values[j] *= 1e-4f;
  auto d = RoundTrip({t}, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED, 77);
  ASSERT_THAT(d, IsOk());
  for (int c = 0; c < 3; ++c) {
    const int begin = c * 256, end = std::min(600, begin + 256);
    const float s = MaxAbsOf(&t.values[begin], end - begin) / 127.0f;
    for (int j = begin; j < end; ++j) {
      EXPECT_LT(std::abs((*d)[0].values[j] - t.values[j]), s * 1.0001f) << j;
    }
  }
  EXPECT_EQ(EncodedBytes(t.spec(), v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED), 4 * 3 + 600);
  // Zeros (scale 0) decode as zeros; scalars and empty tensors work.
  const Tensor zeros{"z", {300}, std::vector<float>(300, 0.0f)};
  const Tensor scalar{"s", {}, {-0.75f}};
  const Tensor empty{"e", {0, 5}, {}};
  for (v1::TensorEncoding e : DecodableEncodings()) {
    auto z = RoundTrip({zeros, scalar, empty}, e, 1);
    ASSERT_THAT(z, IsOk()) << v1::TensorEncoding_Name(e);
    EXPECT_EQ((*z)[0].values, std::vector<float>(300, 0.0f));
    EXPECT_NEAR((*z)[1].values[0], -0.75f, 0.01f) << v1::TensorEncoding_Name(e);
    EXPECT_TRUE((*z)[2].values.empty());
  }
}

TEST(PayloadEncodingTest, CompressedBytesOfA784By400Layer) {
  const PayloadTensorSpec w{"fc1.weight", {400, 784}};
  const double fp32 = static_cast<double>(EncodedBytes(w, v1::TENSOR_ENCODING_FLOAT32));
  EXPECT_EQ(fp32, 4.0 * 784 * 400);
  EXPECT_LE(EncodedBytes(w, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED) / fp32, 0.27);
  EXPECT_LE(EncodedBytes(w, v1::TENSOR_ENCODING_INT4_BLOCK32) / fp32, 0.15);
  EXPECT_LE(EncodedBytes(w, v1::TENSOR_ENCODING_INT8_PER_CHANNEL) / fp32, 0.26);
  // What an actual encoding of such a tensor produces.
  const Tensor t = RandomTensor("fc1.weight", {400, 784}, 6, 0.05f);
  auto p = EncodeTensors({t.view()}, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED, 3);
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(p->bytes.size(), 4u * 1225 + 313600);
  EXPECT_EQ(EncodedBytes(w, v1::TENSOR_ENCODING_FIXED_POINT_U32), -1);
  EXPECT_EQ(EncodedBytes(PayloadTensorSpec{"x", {-1}}, v1::TENSOR_ENCODING_FLOAT32), -1);
}

TEST(PayloadEncodingTest, StochasticRoundingIsUnbiasedWithBoundedVariance) {
  // 300 values in two chunks; each coordinate encoded with 2000 seeds.
  const Tensor t = RandomTensor("delta", {300}, 8);
  constexpr int kDraws = 2000;
  std::vector<double> sum(300, 0.0), sum_sq(300, 0.0);
  std::string first_bytes;
  for (int seed = 0; seed < kDraws; ++seed) {
    auto p = EncodeTensors({t.view()}, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED,
                           static_cast<uint64_t>(seed) * 7919 + 1);
    ASSERT_THAT(p, IsOk());
    if (seed == 0) first_bytes = p->bytes;
    auto d = DecodeTensors(p->manifest, p->bytes, {t.spec()});
    ASSERT_THAT(d, IsOk());
    for (int j = 0; j < 300; ++j) {
      const double err = static_cast<double>((*d)[0].values[j]) - t.values[j];
      sum[j] += err;
      sum_sq[j] += err * err;
    }
  }
  int rounded_both_ways = 0;
  double total_mean_err = 0;
  for (int j = 0; j < 300; ++j) {
    const int begin = j < 256 ? 0 : 256, end = j < 256 ? 256 : 300;
    const double s = MaxAbsOf(&t.values[begin], end - begin) / 127.0;
    const double mean = sum[j] / kDraws;
    const double var = sum_sq[j] / kDraws - mean * mean;
    // Rounding up with probability f = frac(x/s): variance f(1−f)s² ≤ s²/4.
    EXPECT_LE(var, s * s / 4 * 1.1 + 1e-12) << j;
    // |mean error| within 5 standard errors (the draws are fixed: no flakiness). A
    // round-to-nearest encoder fails here: its error is a constant up to s/2.
    const double se = std::sqrt(s * s / 4 / kDraws);
    EXPECT_LT(std::abs(mean), 5 * se + 1e-6 * s) << j;
    if (var > 0.01 * s * s) ++rounded_both_ways;
    total_mean_err += mean / s;
  }
  // The rounding really is random (most coordinates are rounded up and down)...
  EXPECT_GT(rounded_both_ways, 200);
  // ...and unbiased overall: the mean of 300 normalized mean errors is ~N(0, ≤ 1/(4·2000·300)).
  EXPECT_LT(std::abs(total_mean_err / 300), 5 * std::sqrt(0.25 / kDraws / 300));
  // Seeds: the same seed gives the same bytes, another seed other bytes.
  auto again = EncodeTensors({t.view()}, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED, 1);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->bytes, first_bytes);
  auto other = EncodeTensors({t.view()}, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED, 2);
  ASSERT_THAT(other, IsOk());
  EXPECT_NE(other->bytes, first_bytes);
}

// Overwrites the 4 bytes at `at` with a little-endian float.
void PutScale(std::string* bytes, size_t at, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  for (int k = 0; k < 4; ++k) (*bytes)[at + k] = static_cast<char>((u >> (8 * k)) & 0xff);
}

TEST(PayloadEncodingTest, CorruptScalesAreRejectedNamingTensorAndChunk) {
  const Tensor a = RandomTensor("fc0.bias", {10}, 9);
  const Tensor w = RandomTensor("fc1.weight", {8, 128}, 10);  // 1024 values: 4 chunks
  const std::vector<PayloadTensorSpec> specs = {a.spec(), w.spec()};
  auto p = EncodeTensors({a.view(), w.view()}, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED, 4);
  ASSERT_THAT(p, IsOk());
  const size_t w_offset = static_cast<size_t>(p->manifest.tensors(1).offset());
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -1.0f}) {
    std::string bytes = p->bytes;
    PutScale(&bytes, w_offset + 4 * 3, bad);
    auto d = DecodeTensors(p->manifest, bytes, specs);
    EXPECT_THAT(d, StatusIs(absl::StatusCode::kInvalidArgument,
                            HasSubstr(absl::StrCat("tensor 'fc1.weight' chunk 3 has scale ",
                                                   bad))));
  }
  // A finite scale so large that q·s overflows.
  std::string huge = p->bytes;
  PutScale(&huge, w_offset, 3e38f);
  EXPECT_THAT(DecodeTensors(p->manifest, huge, specs),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fc1.weight' has a non-finite")));

  // Per-channel: a row's scale.
  auto pc = EncodeTensors({w.view()}, v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
  ASSERT_THAT(pc, IsOk());
  std::string bytes = pc->bytes;
  PutScale(&bytes, 4 * 5, -0.5f);
  EXPECT_THAT(DecodeTensors(pc->manifest, bytes, {w.spec()}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor 'fc1.weight' row 5 has scale -0.5")));

  // Int4: a block's fp16 d set to +inf (0x7C00) or NaN (0x7E00).
  auto q4 = EncodeTensors({w.view()}, v1::TENSOR_ENCODING_INT4_BLOCK32);
  ASSERT_THAT(q4, IsOk());
  for (uint16_t half : {uint16_t{0x7C00}, uint16_t{0x7E00}}) {
    std::string b4 = q4->bytes;
    const size_t block = 2 * 4 + 1;  // row 2, block 1 (4 blocks per row of 128)
    b4[18 * block] = static_cast<char>(half & 0xff);
    b4[18 * block + 1] = static_cast<char>(half >> 8);
    EXPECT_THAT(DecodeTensors(q4->manifest, b4, {w.spec()}),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("tensor 'fc1.weight' row 2 block 1 has scale")));
  }
}

TEST(PayloadEncodingTest, RejectsWrongByteSizesAndEncodingsNotAskedFor) {
  const Tensor w = RandomTensor("fc1.weight", {4, 300}, 11);
  auto p = EncodeTensors({w.view()}, v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED, 1);
  ASSERT_THAT(p, IsOk());
  ASSERT_EQ(p->bytes.size(), 4u * 5 + 1200);
  {
    // The float32 size under a quantized encoding (and payload to match): refused.
    v1::TensorManifest m = p->manifest;
    m.mutable_tensors(0)->set_byte_size(4800);
    EXPECT_THAT(DecodeTensors(m, std::string(4800, '\0'), {w.spec()}),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("'fc1.weight' has 4800 bytes, expected 1220")));
  }
  {
    // Claiming another encoding changes the expected size.
    v1::TensorManifest m = p->manifest;
    m.mutable_tensors(0)->set_encoding(v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
    EXPECT_THAT(DecodeTensors(m, p->bytes, {w.spec()}),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected 1216")));
  }
  // The receiver refuses encodings it did not ask for, and FIXED_POINT_U32 here.
  EXPECT_THAT(DecodeTensors(p->manifest, p->bytes, {w.spec()}, {v1::TENSOR_ENCODING_FLOAT32}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED, expected "
                                 "TENSOR_ENCODING_FLOAT32")));
  EXPECT_THAT(DecodeFloat32Tensors(p->manifest, p->bytes, {w.spec()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected TENSOR_ENCODING_FLOAT32")));
  v1::TensorManifest fixed = p->manifest;
  fixed.mutable_tensors(0)->set_encoding(v1::TENSOR_ENCODING_FIXED_POINT_U32);
  EXPECT_FALSE(DecodeTensors(fixed, p->bytes, {w.spec()}).ok());
  EXPECT_THAT(EncodeTensors({w.view()}, v1::TENSOR_ENCODING_FIXED_POINT_U32),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cannot encode")));
  // Quantized encodings need finite input.
  Tensor nan = w;
  nan.values[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(EncodeTensors({nan.view()}, v1::TENSOR_ENCODING_INT8_PER_CHANNEL),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("index 7")));
}

TEST(PayloadEncodingTest, ModelParametersInEveryEncoding) {
  const v1::ModelProto m = MakeModel();
  for (v1::TensorEncoding e : DecodableEncodings()) {
    auto p = EncodeModelParameters(m, e, 5);
    ASSERT_THAT(p, IsOk());
    v1::ModelProto target = m;
    // FLOAT32 only unless the receiver allows more.
    if (e != v1::TENSOR_ENCODING_FLOAT32) {
      EXPECT_FALSE(DecodeModelParameters(p->manifest, p->bytes, &target).ok());
    }
    ASSERT_THAT(DecodeModelParameters(p->manifest, p->bytes, &target, {e}), IsOk());
    for (int i = 0; i < m.parameters_size(); ++i) {
      for (int j = 0; j < m.parameters(i).values_size(); ++j) {
        // Values in [-3, 2.75]: one int4 step of a block is at most 3/8.
        EXPECT_NEAR(target.parameters(i).values(j), m.parameters(i).values(j), 0.38f)
            << v1::TensorEncoding_Name(e);
      }
    }
  }
}

}  // namespace
}  // namespace fedge::model

#include "model/payload.h"

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

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

}  // namespace
}  // namespace fedge::model

#include "data/shard.h"

#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "base/rng.h"
#include "data/partition.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::data {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

Dataset RandomDataset(int n, std::vector<int> shape, int num_classes, uint64_t seed) {
  base::Rng rng(seed);
  Dataset d;
  d.num_examples = n;
  d.shape = std::move(shape);
  d.num_classes = num_classes;
  d.features.resize(n * d.feature_size());
  for (float& x : d.features) x = static_cast<float>(rng.Normal());
  for (int i = 0; i < n; ++i) d.labels.push_back(static_cast<int32_t>(rng.UniformInt(num_classes)));
  return d;
}

void ExpectSameDataset(const Dataset& a, const Dataset& b) {
  EXPECT_EQ(a.num_examples, b.num_examples);
  EXPECT_EQ(a.shape, b.shape);
  EXPECT_EQ(a.num_classes, b.num_classes);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.features, b.features);  // bit-exact
}

std::string TempDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/shard_test_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
}

void PutLe32(std::string& s, size_t offset, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[offset + i] = static_cast<char>(v >> (8 * i));
}

// Recomputes the trailing CRC so that a content edit passes the checksum.
void FixCrc(std::string& s) {
  const uLong crc = crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(s.data()),
                          static_cast<uInt>(s.size() - 4));
  PutLe32(s, s.size() - 4, static_cast<uint32_t>(crc));
}

TEST(ShardTest, RoundTrip) {
  const std::string path = TempDir("roundtrip") + "/a.shard";
  const Dataset d = RandomDataset(7, {1, 3, 2}, 5, 1);
  ASSERT_THAT(WriteShard(path, d), IsOk());
  auto back = ReadShard(path);
  ASSERT_THAT(back, IsOk());
  ExpectSameDataset(*back, d);
  // 24 header + 3 dims + 7 labels + 42 features + CRC, 4 bytes each.
  EXPECT_EQ(std::filesystem::file_size(path), 24u + 4 * (3 + 7 + 42 + 1));
  EXPECT_EQ(ReadBytes(path).substr(0, 8), "FEDGESHD");
}

TEST(ShardTest, RoundTripEmptyAndScalar) {
  const std::string dir = TempDir("empty");
  Dataset empty = RandomDataset(0, {28, 28}, 10, 2);
  ASSERT_THAT(WriteShard(dir + "/empty.shard", empty), IsOk());
  auto back = ReadShard(dir + "/empty.shard");
  ASSERT_THAT(back, IsOk());
  ExpectSameDataset(*back, empty);
  Dataset scalar = RandomDataset(4, {}, 2, 3);  // rank 0: one value per example
  ASSERT_THAT(WriteShard(dir + "/scalar.shard", scalar), IsOk());
  back = ReadShard(dir + "/scalar.shard");
  ASSERT_THAT(back, IsOk());
  ExpectSameDataset(*back, scalar);
}

TEST(ShardTest, OverwriteLeavesNoTemporaryFiles) {
  const std::string dir = TempDir("overwrite");
  const std::string path = dir + "/x.shard";
  ASSERT_THAT(WriteShard(path, RandomDataset(5, {2}, 3, 1)), IsOk());
  const Dataset second = RandomDataset(9, {4}, 3, 2);
  ASSERT_THAT(WriteShard(path, second), IsOk());
  auto back = ReadShard(path);
  ASSERT_THAT(back, IsOk());
  ExpectSameDataset(*back, second);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    ++files;
    EXPECT_EQ(e.path().filename(), "x.shard");
  }
  EXPECT_EQ(files, 1);
}

TEST(ShardTest, MissingFileIsNotFound) {
  const std::string path = TempDir("missing") + "/nope.shard";
  EXPECT_THAT(ReadShard(path), StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

TEST(ShardTest, WriteIntoMissingDirectoryFails) {
  const std::string path = TempDir("nodir") + "/no/such/dir/x.shard";
  EXPECT_THAT(WriteShard(path, RandomDataset(2, {2}, 2, 1)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

TEST(ShardTest, WriteRejectsInvalidDataset) {
  const std::string path = TempDir("invalid") + "/x.shard";
  Dataset d = RandomDataset(3, {2}, 2, 1);
  d.labels[1] = 2;
  EXPECT_THAT(WriteShard(path, d), StatusIs(absl::StatusCode::kInvalidArgument,
                                            AllOf(HasSubstr(path), HasSubstr("label"))));
  d = RandomDataset(3, {2}, 2, 1);
  d.features[4] = std::nanf("");
  EXPECT_THAT(WriteShard(path, d), StatusIs(absl::StatusCode::kInvalidArgument,
                                            AllOf(HasSubstr(path), HasSubstr("not finite"))));
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(ShardTest, EveryTruncationIsDataLoss) {
  const std::string dir = TempDir("truncate");
  const std::string good = dir + "/good.shard";
  ASSERT_THAT(WriteShard(good, RandomDataset(3, {2, 2}, 4, 5)), IsOk());
  const std::string bytes = ReadBytes(good);
  const std::string path = dir + "/cut.shard";
  for (size_t len = 0; len < bytes.size(); ++len) {
    WriteBytes(path, bytes.substr(0, len));
    EXPECT_THAT(ReadShard(path), StatusIs(absl::StatusCode::kDataLoss,
                                          AllOf(HasSubstr(path), HasSubstr("truncated"))))
        << "length " << len;
  }
  WriteBytes(path, bytes + "x");
  EXPECT_THAT(ReadShard(path), StatusIs(absl::StatusCode::kDataLoss,
                                        AllOf(HasSubstr(path), HasSubstr("trailing bytes"))));
}

TEST(ShardTest, EveryFlippedByteIsAnError) {
  const std::string dir = TempDir("flip");
  const std::string good = dir + "/good.shard";
  ASSERT_THAT(WriteShard(good, RandomDataset(3, {2, 2}, 4, 6)), IsOk());
  const std::string bytes = ReadBytes(good);
  const std::string path = dir + "/flipped.shard";
  const size_t payload_start = 24 + 2 * 4;
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string b = bytes;
    b[i] = static_cast<char>(b[i] ^ 0x10);
    WriteBytes(path, b);
    auto r = ReadShard(path);
    EXPECT_THAT(r, Not(IsOk())) << "byte " << i;
    EXPECT_THAT(r.status().message(), HasSubstr(path)) << "byte " << i;
    if (i >= payload_start) {
      EXPECT_THAT(r, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("CRC mismatch")))
          << "byte " << i;
    }
  }
}

TEST(ShardTest, BadMagicAndVersion) {
  const std::string dir = TempDir("magic");
  ASSERT_THAT(WriteShard(dir + "/good.shard", RandomDataset(2, {3}, 2, 1)), IsOk());
  std::string b = ReadBytes(dir + "/good.shard");
  std::string bad = b;
  bad.replace(0, 8, "FEDGEXXX");
  WriteBytes(dir + "/magic.shard", bad);
  EXPECT_THAT(ReadShard(dir + "/magic.shard"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir + "/magic.shard"), HasSubstr("bad magic"))));
  bad = b;
  PutLe32(bad, 8, 2);
  FixCrc(bad);
  WriteBytes(dir + "/version.shard", bad);
  EXPECT_THAT(ReadShard(dir + "/version.shard"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("unsupported version 2")));
}

TEST(ShardTest, HugeDeclaredSizesAreRejectedBeforeAllocating) {
  const std::string dir = TempDir("huge");
  ASSERT_THAT(WriteShard(dir + "/good.shard", RandomDataset(2, {3}, 2, 1)), IsOk());
  const std::string b = ReadBytes(dir + "/good.shard");
  const std::string path = dir + "/huge.shard";
  struct Case {
    size_t offset;
    uint32_t value;
    absl::StatusCode code;
    const char* message;
  };
  const Case cases[] = {
      {12, 0xFFFFFFFFu, absl::StatusCode::kInvalidArgument, "4294967295 examples"},
      {12, 9000000, absl::StatusCode::kDataLoss, "truncated"},
      {16, 0, absl::StatusCode::kInvalidArgument, "num_classes is 0"},
      {16, 0x7FFFFFFF, absl::StatusCode::kInvalidArgument, "num_classes is 2147483647"},
      {20, 1000, absl::StatusCode::kInvalidArgument, "rank is 1000"},
      {24, 0xFFFFFFFFu, absl::StatusCode::kInvalidArgument, "dimension 0 is 4294967295"},
      {24, 0, absl::StatusCode::kInvalidArgument, "dimension 0 is 0"},
      {24, 1 << 24, absl::StatusCode::kDataLoss, "truncated"},
  };
  for (const Case& c : cases) {
    std::string bad = b;
    PutLe32(bad, c.offset, c.value);
    WriteBytes(path, bad);
    EXPECT_THAT(ReadShard(path), StatusIs(c.code, AllOf(HasSubstr(path), HasSubstr(c.message))))
        << "offset " << c.offset << " value " << c.value;
  }
}

TEST(ShardTest, LabelOutOfRangeWithValidCrcIsRejected) {
  const std::string dir = TempDir("label");
  ASSERT_THAT(WriteShard(dir + "/good.shard", RandomDataset(2, {3}, 2, 1)), IsOk());
  std::string b = ReadBytes(dir + "/good.shard");
  PutLe32(b, 28, 7);  // label of example 0 (after 24 header bytes + 1 dim)
  FixCrc(b);
  WriteBytes(dir + "/bad.shard", b);
  EXPECT_THAT(ReadShard(dir + "/bad.shard"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("label of example 0 is 7")));
  b = ReadBytes(dir + "/good.shard");
  PutLe32(b, 36, 0x7FC00000u);  // feature 0 := NaN
  FixCrc(b);
  WriteBytes(dir + "/nan.shard", b);
  EXPECT_THAT(ReadShard(dir + "/nan.shard"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not finite")));
}

TEST(ShardTest, WritePartitionWritesOneShardPerClient) {
  const std::string dir = TempDir("partition") + "/clients";  // created by WritePartition
  const Dataset d = RandomDataset(50, {1, 2, 2}, 3, 9);
  auto parts = Iid(50, 4, 1);
  ASSERT_THAT(parts, IsOk());
  ASSERT_THAT(WritePartition(dir, d, *parts), IsOk());
  EXPECT_EQ(ShardPath(dir, 3), dir + "/client-00003.shard");
  for (int c = 0; c < 4; ++c) {
    auto shard = ReadShard(ShardPath(dir, c));
    ASSERT_THAT(shard, IsOk());
    ExpectSameDataset(*shard, Subset(d, (*parts)[c]));
  }
  EXPECT_FALSE(std::filesystem::exists(ShardPath(dir, 4)));
}

TEST(ShardTest, WritePartitionRejectsBadIndex) {
  const std::string dir = TempDir("badpartition");
  EXPECT_THAT(
      WritePartition(dir, RandomDataset(5, {2}, 2, 1), {{0, 1}, {5}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Shard: client 1 holds example 5")));
}

// compact_u8: a shard of 8-bit images is read into 8-bit storage with the same values; a shard
// with one other value, even past the first chunk read, is read as floats, identically to the
// plain read.
TEST(ShardTest, EightBitImagesAreReadCompactOtherValuesAsFloats) {
  const std::string dir = TempDir("compact");
  Dataset d;
  d.num_examples = 700;
  d.shape = {28, 28};
  d.num_classes = 10;
  for (int i = 0; i < d.num_examples; ++i) d.labels.push_back(i % 10);
  for (size_t v = 0; v < static_cast<size_t>(d.num_examples) * 784; ++v) {
    d.features.push_back(static_cast<float>((v * 7) % 256) * (1.0f / 255.0f));
  }
  ASSERT_THAT(WriteShard(dir + "/pixels.shard", d), IsOk());
  ShardReadOptions compact;
  compact.compact_u8 = true;
  auto u8 = ReadShard(dir + "/pixels.shard", compact);
  ASSERT_THAT(u8, IsOk());
  EXPECT_TRUE(u8->is_u8());
  EXPECT_THAT(ValidateDataset(*u8), IsOk());
  ToFloat(*u8);
  EXPECT_EQ(u8->features, d.features);
  EXPECT_EQ(u8->labels, d.labels);

  d.features[400000] = 0.123f;  // past the first 1 MiB read (262,144 values)
  ASSERT_THAT(WriteShard(dir + "/mixed.shard", d), IsOk());
  auto mixed = ReadShard(dir + "/mixed.shard", compact);
  ASSERT_THAT(mixed, IsOk());
  EXPECT_FALSE(mixed->is_u8());
  EXPECT_EQ(mixed->features, d.features);
  auto plain = ReadShard(dir + "/mixed.shard");
  ASSERT_THAT(plain, IsOk());
  EXPECT_EQ(plain->features, mixed->features);
}

// A byte string's CRC-32 appended, as the writer does, for hand-built files.
std::string WithCrc(std::string body) {
  const uLong crc = crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(body.data()),
                          static_cast<uInt>(body.size()));
  for (int i = 0; i < 4; ++i) body.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  return body;
}

std::string Le32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

TEST(TextShardTest, RoundTripsAnyBytes) {
  const std::string dir = TempDir("text");
  std::vector<TextDocument> docs = {{"ck01", "It was a dark night.\n\"Who?\""},
                                    {"", std::string("\0\xff\x1b[2J", 6)},
                                    {"cr09", ""}};
  ASSERT_THAT(WriteTextShard(dir + "/a.txtshard", docs), IsOk());
  auto back = ReadTextShard(dir + "/a.txtshard");
  ASSERT_THAT(back, IsOk());
  ASSERT_EQ(back->size(), 3u);
  for (size_t i = 0; i < docs.size(); ++i) {
    EXPECT_EQ((*back)[i].id, docs[i].id);
    EXPECT_EQ((*back)[i].text, docs[i].text);
  }
  ASSERT_THAT(WriteTextShard(dir + "/empty.txtshard", {}), IsOk());
  EXPECT_THAT(ReadTextShard(dir + "/empty.txtshard"), IsOk());
  EXPECT_EQ(std::filesystem::file_size(dir + "/empty.txtshard"), 20u);
}

TEST(TextShardTest, RejectsDamagedAndHostileFiles) {
  const std::string dir = TempDir("text_bad");
  ASSERT_THAT(WriteTextShard(dir + "/good", {{"a", "hello"}, {"b", "world"}}), IsOk());
  const std::string good = ReadBytes(dir + "/good");
  const std::string path = dir + "/bad";
  // Every truncation, and one flipped byte anywhere, is caught.
  for (size_t len = 0; len < good.size(); ++len) {
    WriteBytes(path, good.substr(0, len));
    EXPECT_FALSE(ReadTextShard(path).ok()) << "length " << len;
  }
  for (size_t i = 0; i < good.size(); ++i) {
    std::string b = good;
    b[i] ^= 0x20;
    WriteBytes(path, b);
    EXPECT_FALSE(ReadTextShard(path).ok()) << "byte " << i;
  }
  // Well-formed CRCs around hostile lengths: a huge count, a text length past the end, an id
  // over the limit, trailing bytes.
  const std::string head = std::string("FEDGETXT") + Le32(1);
  WriteBytes(path, WithCrc(head + Le32(4000000000u)));
  EXPECT_THAT(ReadTextShard(path), StatusIs(absl::StatusCode::kInvalidArgument,
                                            ::testing::HasSubstr("documents")));
  WriteBytes(path, WithCrc(head + Le32(1) + Le32(1) + "a" + Le32(1000) + "xy"));
  EXPECT_THAT(ReadTextShard(path), StatusIs(absl::StatusCode::kDataLoss,
                                            ::testing::HasSubstr("past the end")));
  WriteBytes(path, WithCrc(head + Le32(1) + Le32(300) + std::string(300, 'i') + Le32(0)));
  EXPECT_THAT(ReadTextShard(path), StatusIs(absl::StatusCode::kInvalidArgument,
                                            ::testing::HasSubstr("id of 300 bytes")));
  WriteBytes(path, WithCrc(head + Le32(1) + Le32(1) + "a" + Le32(1) + "b" + "zz"));
  EXPECT_THAT(ReadTextShard(path), StatusIs(absl::StatusCode::kDataLoss,
                                            ::testing::HasSubstr("trailing")));
  WriteBytes(path, WithCrc(std::string("FEDGESHD") + Le32(1) + Le32(0)));
  EXPECT_THAT(ReadTextShard(path), StatusIs(absl::StatusCode::kInvalidArgument,
                                            ::testing::HasSubstr("magic")));
  EXPECT_THAT(ReadTextShard(dir + "/missing"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(WriteTextShard(path, {{std::string(257, 'x'), ""}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace fedge::data

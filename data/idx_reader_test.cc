#include "data/idx_reader.h"

#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::data {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

void PutBigEndian32(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v >> 24));
  s.push_back(static_cast<char>(v >> 16));
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}

std::string ImagesBytes(uint32_t n, uint32_t rows, uint32_t cols,
                        const std::vector<uint8_t>& pixels) {
  std::string s;
  PutBigEndian32(s, kIdxImagesMagic);
  PutBigEndian32(s, n);
  PutBigEndian32(s, rows);
  PutBigEndian32(s, cols);
  s.append(pixels.begin(), pixels.end());
  return s;
}

std::string LabelsBytes(uint32_t n, const std::vector<uint8_t>& labels) {
  std::string s;
  PutBigEndian32(s, kIdxLabelsMagic);
  PutBigEndian32(s, n);
  s.append(labels.begin(), labels.end());
  return s;
}

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/idx_reader_test_" + name;
}

std::string WritePlain(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
  return path;
}

std::string WriteGzip(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  gzFile f = gzopen(path.c_str(), "wb");
  EXPECT_NE(f, nullptr);
  EXPECT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  gzclose(f);
  return path;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// 3 images of 2×4 with pixel values 0, 10, 20, ... and labels 2, 0, 9.
struct SmallIdx {
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> labels = {2, 0, 9};
  SmallIdx() {
    for (int i = 0; i < 24; ++i) pixels.push_back(static_cast<uint8_t>(i * 10));
  }
  std::string images() const { return ImagesBytes(3, 2, 4, pixels); }
  std::string label_bytes() const { return LabelsBytes(3, labels); }
};

void ExpectSmallDataset(const Dataset& d) {
  EXPECT_EQ(d.num_examples, 3);
  EXPECT_EQ(d.shape, (std::vector<int>{1, 2, 4}));
  EXPECT_EQ(d.feature_size(), 8u);
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.labels, (std::vector<int32_t>{2, 0, 9}));
  ASSERT_EQ(d.features.size(), 24u);
  for (int i = 0; i < 24; ++i) EXPECT_FLOAT_EQ(d.features[i], i * 10 / 255.0f) << i;
  EXPECT_FLOAT_EQ(d.example(1)[0], 80 / 255.0f);
  EXPECT_THAT(ValidateDataset(d), IsOk());
}

TEST(IdxReaderTest, ReadsGzippedFiles) {
  SmallIdx s;
  auto d =
      LoadIdxDataset(WriteGzip("gz-images", s.images()), WriteGzip("gz-labels", s.label_bytes()));
  ASSERT_THAT(d, IsOk());
  ExpectSmallDataset(*d);
}

TEST(IdxReaderTest, ReadsPlainFiles) {
  SmallIdx s;
  auto d = LoadIdxDataset(WritePlain("plain-images", s.images()),
                          WritePlain("plain-labels", s.label_bytes()));
  ASSERT_THAT(d, IsOk());
  ExpectSmallDataset(*d);
}

TEST(IdxReaderTest, ScalesPixelsToUnitInterval) {
  auto d = LoadIdxDataset(WritePlain("scale-images", ImagesBytes(1, 1, 3, {0, 128, 255})),
                          WritePlain("scale-labels", LabelsBytes(1, {1})), 2);
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->features, (std::vector<float>{0.0f, 128 / 255.0f, 1.0f}));
}

TEST(IdxReaderTest, MissingFileIsNotFoundAndNamesIt) {
  SmallIdx s;
  const std::string labels = WritePlain("missing-labels", s.label_bytes());
  const std::string missing = TempPath("does-not-exist-images.gz");
  EXPECT_THAT(LoadIdxDataset(missing, labels),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
}

TEST(IdxReaderTest, TruncatedPlainImagesIsDataLoss) {
  SmallIdx s;
  std::string bytes = s.images();
  bytes.resize(bytes.size() - 5);
  const std::string path = WritePlain("trunc-images", bytes);
  EXPECT_THAT(
      LoadIdxDataset(path, WritePlain("trunc-labels", s.label_bytes())),
      StatusIs(absl::StatusCode::kDataLoss,
               AllOf(HasSubstr(path), HasSubstr("truncated: expected 24 pixel bytes, got 19"))));
}

TEST(IdxReaderTest, TruncatedHeaderIsDataLoss) {
  SmallIdx s;
  const std::string path = WritePlain("trunc-header", s.images().substr(0, 9));
  EXPECT_THAT(
      LoadIdxDataset(path, WritePlain("trunc-header-labels", s.label_bytes())),
      StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr(path), HasSubstr("truncated"))));
}

TEST(IdxReaderTest, HugeDeclaredCountWithLittleDataIsTruncated) {
  // A header promising 1M images of 28×28 over a 100-byte body fails without reading more.
  const std::string path =
      WriteGzip("huge-images", ImagesBytes(1000000, 28, 28, std::vector<uint8_t>(100, 7)));
  EXPECT_THAT(LoadIdxDataset(path, WritePlain("huge-labels", LabelsBytes(1, {0}))),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(path),
                             HasSubstr("truncated: expected 784000000 pixel bytes, got 100"))));
}

TEST(IdxReaderTest, TruncatedGzipStreamIsDataLoss) {
  SmallIdx s;
  std::vector<uint8_t> many(5000);
  for (size_t i = 0; i < many.size(); ++i) many[i] = static_cast<uint8_t>(i * 7919 % 251);
  const std::string full = WriteGzip("gztrunc-full", ImagesBytes(50, 10, 10, many));
  std::string gz = ReadAll(full);
  const std::string path = WritePlain("gztrunc-images.gz", gz.substr(0, gz.size() / 2));
  EXPECT_THAT(LoadIdxDataset(path, WritePlain("gztrunc-labels", s.label_bytes())),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
}

TEST(IdxReaderTest, TruncatedLabelsIsDataLoss) {
  SmallIdx s;
  const std::string path = WriteGzip("trunc-labels2", LabelsBytes(3, {1, 2}));
  EXPECT_THAT(LoadIdxDataset(WritePlain("trunc-images2", s.images()), path),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(path), HasSubstr("expected 3 label bytes, got 2"))));
}

TEST(IdxReaderTest, CorruptGzipIsDataLoss) {
  SmallIdx s;
  std::vector<uint8_t> many(5000);
  for (size_t i = 0; i < many.size(); ++i) many[i] = static_cast<uint8_t>(i % 13);
  const std::string full = WriteGzip("corrupt-full", ImagesBytes(50, 10, 10, many));
  std::string gz = ReadAll(full);
  ASSERT_GT(gz.size(), 40u);
  for (size_t i = 15; i < gz.size() - 10; i += 3) gz[i] = static_cast<char>(gz[i] ^ 0x5a);
  const std::string path = WritePlain("corrupt-images.gz", gz);
  EXPECT_THAT(LoadIdxDataset(path, WritePlain("corrupt-labels", s.label_bytes())),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
}

TEST(IdxReaderTest, GzipChecksumMismatchIsDataLoss) {
  SmallIdx s;
  std::string gz = ReadAll(WriteGzip("crc-full", s.images()));
  gz[gz.size() - 6] = static_cast<char>(gz[gz.size() - 6] ^ 1);  // inside the CRC-32 trailer
  const std::string path = WritePlain("crc-images.gz", gz);
  EXPECT_THAT(LoadIdxDataset(path, WritePlain("crc-labels", s.label_bytes())),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
}

TEST(IdxReaderTest, WrongMagicIsInvalidArgument) {
  SmallIdx s;
  // Swapped: a labels file where images are expected, and the reverse.
  const std::string images = WritePlain("magic-images", s.images());
  const std::string labels = WritePlain("magic-labels", s.label_bytes());
  EXPECT_THAT(LoadIdxDataset(labels, images),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(labels), HasSubstr("bad magic 0x00000801"))));
  EXPECT_THAT(LoadIdxDataset(images, images),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(images), HasSubstr("bad magic 0x00000803"))));
}

TEST(IdxReaderTest, AbsurdDimensionsAreInvalidArgument) {
  SmallIdx s;
  const std::string labels = WritePlain("dims-labels", s.label_bytes());
  const std::string too_many = WritePlain("dims-many", ImagesBytes(20000000, 1, 1, {}));
  EXPECT_THAT(LoadIdxDataset(too_many, labels),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(too_many), HasSubstr("20000000 examples"))));
  const std::string too_wide = WritePlain("dims-wide", ImagesBytes(1, 5000, 2, {}));
  EXPECT_THAT(LoadIdxDataset(too_wide, labels),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(too_wide), HasSubstr("rows is 5000"))));
  const std::string zero = WritePlain("dims-zero", ImagesBytes(1, 2, 0, {}));
  EXPECT_THAT(
      LoadIdxDataset(zero, labels),
      StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr(zero), HasSubstr("cols is 0"))));
  const std::string too_many_pixels =
      WritePlain("dims-pixels", ImagesBytes(9000000, 4096, 4096, {}));
  EXPECT_THAT(LoadIdxDataset(too_many_pixels, labels),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(too_many_pixels), HasSubstr("pixels"))));
  const std::string many_labels = WritePlain("dims-labels-many", LabelsBytes(4000000000u, {}));
  EXPECT_THAT(LoadIdxDataset(WritePlain("dims-ok-images", s.images()), many_labels),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(many_labels)));
}

TEST(IdxReaderTest, CountMismatchNamesBothFiles) {
  SmallIdx s;
  const std::string images = WritePlain("mismatch-images", s.images());
  const std::string labels = WritePlain("mismatch-labels", LabelsBytes(2, {1, 1}));
  EXPECT_THAT(LoadIdxDataset(images, labels),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(images), HasSubstr(labels), HasSubstr("3 images"),
                             HasSubstr("2 labels"))));
}

TEST(IdxReaderTest, LabelOutOfRangeIsInvalidArgument) {
  SmallIdx s;
  const std::string labels = WritePlain("range-labels", LabelsBytes(3, {1, 10, 2}));
  EXPECT_THAT(LoadIdxDataset(WritePlain("range-images", s.images()), labels, 10),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(labels), HasSubstr("label 1 is 10"))));
}

TEST(IdxReaderTest, BadNumClassesIsInvalidArgument) {
  SmallIdx s;
  EXPECT_THAT(LoadIdxDataset(WritePlain("nc-images", s.images()),
                             WritePlain("nc-labels", s.label_bytes()), 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("IdxReader")));
}

TEST(IdxReaderTest, LoadsRealFashionMnist) {
  if (!std::filesystem::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST is not installed at " << kFashionMnistDir;
  }
  auto fm = LoadFashionMnist();
  ASSERT_THAT(fm, IsOk());
  for (const Dataset* d : {&fm->train, &fm->test}) {
    EXPECT_EQ(d->shape, (std::vector<int>{1, 28, 28}));
    EXPECT_EQ(d->num_classes, 10);
    EXPECT_THAT(ValidateDataset(*d), IsOk());
  }
  EXPECT_EQ(fm->train.num_examples, 60000);
  EXPECT_EQ(fm->test.num_examples, 10000);
  std::vector<int> train_counts(10, 0), test_counts(10, 0);
  for (int32_t y : fm->train.labels) ++train_counts[y];
  for (int32_t y : fm->test.labels) ++test_counts[y];
  EXPECT_EQ(train_counts, std::vector<int>(10, 6000));
  EXPECT_EQ(test_counts, std::vector<int>(10, 1000));
  float lo = 1.0f, hi = 0.0f;
  for (float x : fm->train.features) {
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  EXPECT_EQ(lo, 0.0f);
  EXPECT_EQ(hi, 1.0f);
}

TEST(IdxReaderTest, MissingFashionMnistDirNamesTheFile) {
  const std::string dir = TempPath("no-such-dir");
  EXPECT_THAT(LoadFashionMnist(dir), StatusIs(absl::StatusCode::kNotFound,
                                              HasSubstr(dir + "/train-images-idx3-ubyte.gz")));
}

}  // namespace
}  // namespace fedge::data

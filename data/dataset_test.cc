#include "data/dataset.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::data {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

// 4 examples of shape {2}: example i is {10i, 10i + 1}, label i % 3.
Dataset Small() {
  Dataset d;
  d.num_examples = 4;
  d.shape = {2};
  d.num_classes = 3;
  for (int i = 0; i < 4; ++i) {
    d.features.push_back(10.0f * i);
    d.features.push_back(10.0f * i + 1);
    d.labels.push_back(i % 3);
  }
  return d;
}

TEST(DatasetTest, Accessors) {
  Dataset d = Small();
  EXPECT_EQ(d.feature_size(), 2u);
  EXPECT_EQ(d.example(2)[0], 20.0f);
  EXPECT_EQ(d.example(2)[1], 21.0f);
  EXPECT_EQ(d.label(3), 0);
  d.mutable_example(1)[1] = -1.0f;
  EXPECT_EQ(d.features[3], -1.0f);
  EXPECT_THAT(ValidateDataset(d), IsOk());
}

TEST(DatasetTest, SubsetCopiesInOrder) {
  const Dataset d = Small();
  const Dataset s = Subset(d, {3, 1, 3});
  EXPECT_EQ(s.num_examples, 3);
  EXPECT_EQ(s.shape, d.shape);
  EXPECT_EQ(s.num_classes, 3);
  EXPECT_EQ(s.features, (std::vector<float>{30, 31, 10, 11, 30, 31}));
  EXPECT_EQ(s.labels, (std::vector<int32_t>{0, 1, 0}));
  EXPECT_THAT(ValidateDataset(s), IsOk());
  EXPECT_EQ(Subset(d, {}).num_examples, 0);
}

TEST(DatasetTest, AllIndices) { EXPECT_EQ(AllIndices(Small()), (std::vector<int>{0, 1, 2, 3})); }

TEST(DatasetTest, SubsetOutOfRangeAborts) {
  const Dataset d = Small();
  EXPECT_DEATH(Subset(d, {4}), "FEDGE_CHECK");
}

TEST(DatasetTest, ValidateCatchesEachInconsistency) {
  Dataset d = Small();
  d.features.pop_back();
  EXPECT_THAT(ValidateDataset(d),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Dataset: 7 feature")));
  d = Small();
  d.labels.pop_back();
  EXPECT_THAT(ValidateDataset(d), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("Dataset: 3 labels, expected 4")));
  d = Small();
  d.labels[2] = 3;
  EXPECT_THAT(ValidateDataset(d),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("label of example 2 is 3")));
  d = Small();
  d.shape = {0};
  EXPECT_THAT(ValidateDataset(d),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shape dimension 0 is 0")));
  d = Small();
  d.num_classes = 0;
  EXPECT_THAT(ValidateDataset(d),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_classes is 0")));
}

// 3 images of 5 pixels, each pixel an 8-bit value c as LoadIdxDataset makes it (c · 1/255).
Dataset Pixels() {
  Dataset d;
  d.num_examples = 3;
  d.shape = {5};
  d.num_classes = 2;
  for (int i = 0; i < 15; ++i) d.features.push_back(static_cast<float>(i * 17) * (1.0f / 255.0f));
  d.labels = {0, 1, 1};
  return d;
}

TEST(DatasetTest, EightBitStorageHoldsTheSameValues) {
  const Dataset floats = Pixels();
  Dataset d = floats;
  ASSERT_TRUE(CompactToU8(d));
  EXPECT_TRUE(d.is_u8());
  EXPECT_TRUE(d.features.empty());
  ASSERT_EQ(d.features_u8.size(), 15u);
  EXPECT_EQ(d.features_u8[14], 14 * 17);
  EXPECT_THAT(ValidateDataset(d), IsOk());
  std::vector<float> row(5);
  for (int i = 0; i < 3; ++i) {
    d.CopyExample(i, row.data());
    for (int j = 0; j < 5; ++j) EXPECT_EQ(row[j], floats.example(i)[j]) << i << "," << j;
  }
  const Dataset sub = Subset(d, {2, 0});
  EXPECT_TRUE(sub.is_u8());
  sub.CopyExample(0, row.data());
  EXPECT_EQ(row[0], floats.example(2)[0]);
  EXPECT_EQ(sub.label(0), 1);
  Dataset back = d;
  ToFloat(back);
  EXPECT_FALSE(back.is_u8());
  EXPECT_EQ(back.features, floats.features);
  // Standardize works on either storage, with the same result.
  Dataset a = floats, b = d;
  Standardize(a, 0.3f, 0.4f);
  Standardize(b, 0.3f, 0.4f);
  EXPECT_EQ(a.features, b.features);
  EXPECT_DEATH(d.example(0), "");
}

TEST(DatasetTest, OnlyExactEightBitValuesAreCompacted) {
  uint8_t c = 0;
  EXPECT_TRUE(U8Code(1.0f, &c));
  EXPECT_EQ(c, 255);
  EXPECT_TRUE(U8Code(0.0f, &c));
  EXPECT_EQ(c, 0);
  EXPECT_FALSE(U8Code(-0.0f, &c));
  EXPECT_FALSE(U8Code(0.5f, &c));  // 127.5 / 255
  EXPECT_FALSE(U8Code(std::nanf(""), &c));
  EXPECT_FALSE(U8Code(1.0001f, &c));
  EXPECT_FALSE(U8Code(std::nextafter(U8Value(7), 1.0f), &c));
  Dataset d = Pixels();
  d.features[9] = 0.5f;
  const Dataset before = d;
  EXPECT_FALSE(CompactToU8(d));
  EXPECT_EQ(d.features, before.features);
  EXPECT_FALSE(d.is_u8());
  Dataset both = Pixels();
  both.features_u8.assign(15, 0);
  EXPECT_THAT(ValidateDataset(both), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("both float and 8-bit")));
}

}  // namespace
}  // namespace fedge::data

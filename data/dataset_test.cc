#include "data/dataset.h"

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

}  // namespace
}  // namespace fedge::data

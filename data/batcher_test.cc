#include "data/batcher.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::data {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

// n examples of shape {3}: example i is {i, i + 0.25, i + 0.5}, label i % 4.
Dataset Counting(int n) {
  Dataset d;
  d.num_examples = n;
  d.shape = {3};
  d.num_classes = 4;
  for (int i = 0; i < n; ++i) {
    d.features.insert(d.features.end(), {float(i), i + 0.25f, i + 0.5f});
    d.labels.push_back(i % 4);
  }
  return d;
}

// Runs one epoch; checks each batch's contents against the dataset; returns the order.
std::vector<int> RunEpoch(Batcher& b, const Dataset& d, std::vector<int>* sizes = nullptr) {
  std::vector<int> seen;
  Batch batch;
  while (b.Next(&batch)) {
    EXPECT_EQ(batch.features.size(), batch.size * d.feature_size());
    EXPECT_EQ(batch.labels.size(), static_cast<size_t>(batch.size));
    EXPECT_EQ(batch.indices.size(), static_cast<size_t>(batch.size));
    for (int k = 0; k < batch.size; ++k) {
      const int i = batch.indices[k];
      EXPECT_EQ(batch.labels[k], d.label(i));
      for (size_t f = 0; f < d.feature_size(); ++f) {
        EXPECT_EQ(batch.features[k * d.feature_size() + f], d.example(i)[f]);
      }
      seen.push_back(i);
    }
    if (sizes != nullptr) sizes->push_back(batch.size);
  }
  return seen;
}

std::vector<int> Sorted(std::vector<int> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(BatcherTest, EachEpochVisitsEveryExampleOnce) {
  const Dataset d = Counting(103);
  Batcher b(d, AllIndices(d), 10, /*shuffle=*/true, 7);
  for (int e = 0; e < 4; ++e, b.NextEpoch()) {
    EXPECT_EQ(b.epoch(), e);
    std::vector<int> sizes;
    EXPECT_EQ(Sorted(RunEpoch(b, d, &sizes)), AllIndices(d)) << "epoch " << e;
    ASSERT_EQ(sizes.size(), 11u);
    EXPECT_EQ(b.num_batches(), 11);
    for (int k = 0; k < 10; ++k) EXPECT_EQ(sizes[k], 10);
    EXPECT_EQ(sizes[10], 3);
  }
}

TEST(BatcherTest, ShuffleDiffersBetweenEpochsAndReproduces) {
  const Dataset d = Counting(64);
  Batcher a(d, AllIndices(d), 8, true, 11);
  Batcher b(d, AllIndices(d), 8, true, 11);
  const std::vector<int> a0 = RunEpoch(a, d);
  a.NextEpoch();
  const std::vector<int> a1 = RunEpoch(a, d);
  EXPECT_NE(a0, a1);
  EXPECT_NE(a0, AllIndices(d));
  EXPECT_EQ(RunEpoch(b, d), a0);
  b.NextEpoch();
  EXPECT_EQ(RunEpoch(b, d), a1);
  // Jumping straight to an epoch gives that epoch's order (resuming after a restart).
  Batcher c(d, AllIndices(d), 8, true, 11);
  c.StartEpoch(1);
  EXPECT_EQ(RunEpoch(c, d), a1);
  // A different seed gives a different order.
  Batcher other(d, AllIndices(d), 8, true, 12);
  EXPECT_NE(RunEpoch(other, d), a0);
}

TEST(BatcherTest, NoShuffleKeepsGivenOrder) {
  const Dataset d = Counting(20);
  const std::vector<int> indices = {5, 3, 19, 0, 7};
  Batcher b(d, indices, 2, /*shuffle=*/false, 1);
  EXPECT_EQ(RunEpoch(b, d), indices);
  b.NextEpoch();
  EXPECT_EQ(RunEpoch(b, d), indices);
}

TEST(BatcherTest, SubsetOfIndicesOnly) {
  const Dataset d = Counting(50);
  const std::vector<int> indices = {49, 2, 17, 33, 8, 21, 40};
  Batcher b(d, indices, 3, true, 5);
  EXPECT_EQ(Sorted(RunEpoch(b, d)), Sorted(indices));
}

TEST(BatcherTest, DropLastSkipsPartialBatch) {
  const Dataset d = Counting(25);
  Batcher b(d, AllIndices(d), 10, true, 3, /*drop_last=*/true);
  EXPECT_EQ(b.num_batches(), 2);
  std::vector<int> sizes;
  const std::vector<int> seen = RunEpoch(b, d, &sizes);
  EXPECT_EQ(sizes, (std::vector<int>{10, 10}));
  EXPECT_EQ(seen.size(), 20u);
  Batch batch;
  EXPECT_FALSE(b.Next(&batch));  // stays exhausted
  Batcher small(d, {1, 2, 3}, 10, false, 3, true);
  EXPECT_EQ(small.num_batches(), 0);
  EXPECT_FALSE(small.Next(&batch));
}

TEST(BatcherTest, ExactMultipleHasNoEmptyBatch) {
  const Dataset d = Counting(30);
  Batcher b(d, AllIndices(d), 10, false, 1);
  std::vector<int> sizes;
  RunEpoch(b, d, &sizes);
  EXPECT_EQ(sizes, (std::vector<int>{10, 10, 10}));
}

TEST(BatcherTest, EmptyIndexListYieldsNothing) {
  const Dataset d = Counting(5);
  Batcher b(d, {}, 4, true, 1);
  Batch batch;
  EXPECT_FALSE(b.Next(&batch));
  EXPECT_EQ(b.num_batches(), 0);
}

TEST(BatcherTest, ReusesBatchStorage) {
  const Dataset d = Counting(40);
  Batcher b(d, AllIndices(d), 8, true, 2);
  Batch batch;
  ASSERT_TRUE(b.Next(&batch));
  const float* data = batch.features.data();
  while (b.Next(&batch)) EXPECT_EQ(batch.features.data(), data);
}

TEST(BatcherTest, CreateValidates) {
  const Dataset d = Counting(5);
  EXPECT_THAT(Batcher::Create(d, {0, 1}, 0, true, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("Batcher: batch_size is 0")));
  EXPECT_THAT(Batcher::Create(d, {0, 5}, 2, true, 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("Batcher: index 1 is 5, outside [0, 5)")));
  auto ok = Batcher::Create(d, {4, 0}, 2, true, 1);
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ((*ok)->num_examples(), 2);
}

TEST(BatcherTest, ConstructorAbortsOnBadIndex) {
  const Dataset d = Counting(5);
  EXPECT_DEATH(Batcher(d, {7}, 2, true, 1), "FEDGE_CHECK");
}

// 8-bit storage gives the same batches, converted.
TEST(BatcherTest, EightBitStorageGivesTheSameBatches) {
  Dataset floats;
  floats.num_examples = 10;
  floats.shape = {3};
  floats.num_classes = 4;
  for (int i = 0; i < 30; ++i) floats.features.push_back(static_cast<float>(i * 8) * (1.0f / 255.0f));
  for (int i = 0; i < 10; ++i) floats.labels.push_back(i % 4);
  Dataset u8 = floats;
  ASSERT_TRUE(CompactToU8(u8));
  Batcher a(floats, AllIndices(floats), 4, /*shuffle=*/true, 11);
  Batcher b(u8, AllIndices(u8), 4, /*shuffle=*/true, 11);
  Batch x, y;
  while (a.Next(&x)) {
    ASSERT_TRUE(b.Next(&y));
    EXPECT_EQ(x.features, y.features);
    EXPECT_EQ(x.labels, y.labels);
  }
  EXPECT_FALSE(b.Next(&y));
}

}  // namespace
}  // namespace fedge::data

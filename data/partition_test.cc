#include "data/partition.h"

#include <algorithm>
#include <cstdint>
#include <set>
#include <vector>

#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::data {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int kClasses = 10;

// n labels, class sizes unequal: label of example i is drawn from a skewed fixed draw.
std::vector<int32_t> Labels(int n, uint64_t seed = 7) {
  base::Rng rng(seed);
  std::vector<int32_t> labels(n);
  for (int i = 0; i < n; ++i) labels[i] = static_cast<int32_t>(rng.UniformInt(kClasses));
  return labels;
}

// Every index in [0, n) exactly once.
void ExpectDisjointCover(const ClientIndices& parts, int n) {
  EXPECT_THAT(ValidatePartition(parts, n), IsOk());
  size_t total = 0;
  for (const auto& p : parts) total += p.size();
  EXPECT_EQ(total, static_cast<size_t>(n));
}

size_t MinSize(const ClientIndices& parts) {
  size_t m = SIZE_MAX;
  for (const auto& p : parts) m = std::min(m, p.size());
  return m;
}

// Mean over clients of the number of classes holding more than 5% of the client's data.
double MeanMajorClasses(const std::vector<int32_t>& labels, const ClientIndices& parts) {
  auto counts = PartitionClassCounts(labels, kClasses, parts);
  EXPECT_THAT(counts, IsOk());
  double sum = 0.0;
  for (size_t c = 0; c < parts.size(); ++c) {
    for (int k = 0; k < kClasses; ++k) {
      if ((*counts)[c][k] > 0.05 * static_cast<double>(parts[c].size())) sum += 1.0;
    }
  }
  return sum / static_cast<double>(parts.size());
}

TEST(IidTest, CoversEvenly) {
  auto parts = Iid(1003, 10, 1);
  ASSERT_THAT(parts, IsOk());
  ASSERT_EQ(parts->size(), 10u);
  ExpectDisjointCover(*parts, 1003);
  for (int c = 0; c < 10; ++c) EXPECT_EQ((*parts)[c].size(), c < 3 ? 101u : 100u) << c;
}

TEST(IidTest, DeterministicPerSeed) {
  EXPECT_EQ(*Iid(500, 7, 42), *Iid(500, 7, 42));
  EXPECT_NE(*Iid(500, 7, 42), *Iid(500, 7, 43));
}

TEST(IidTest, OneExampleEach) {
  auto parts = Iid(5, 5, 3);
  ASSERT_THAT(parts, IsOk());
  ExpectDisjointCover(*parts, 5);
  EXPECT_EQ(MinSize(*parts), 1u);
}

TEST(IidTest, InvalidArguments) {
  EXPECT_THAT(Iid(10, 0, 1), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("Partition: num_clients is 0")));
  EXPECT_THAT(Iid(10, -3, 1), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("-3")));
  EXPECT_THAT(Iid(10, 11, 1), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("11 clients but only 10 examples")));
}

TEST(LabelDirichletTest, CoversAndRespectsMinSize) {
  const auto labels = Labels(3000);
  for (double alpha : {0.1, 0.5, 1.0, 100.0}) {
    auto parts = LabelDirichlet(labels, kClasses, 20, alpha, 5, /*min_size=*/25);
    ASSERT_THAT(parts, IsOk()) << alpha;
    ASSERT_EQ(parts->size(), 20u);
    ExpectDisjointCover(*parts, 3000);
    EXPECT_GE(MinSize(*parts), 25u) << alpha;
  }
}

TEST(LabelDirichletTest, DeterministicPerSeed) {
  const auto labels = Labels(2000);
  EXPECT_EQ(*LabelDirichlet(labels, kClasses, 10, 0.5, 9),
            *LabelDirichlet(labels, kClasses, 10, 0.5, 9));
  EXPECT_NE(*LabelDirichlet(labels, kClasses, 10, 0.5, 9),
            *LabelDirichlet(labels, kClasses, 10, 0.5, 10));
}

TEST(LabelDirichletTest, LargeAlphaBalancedSmallAlphaSkewed) {
  const auto labels = Labels(10000);
  auto balanced = LabelDirichlet(labels, kClasses, 10, 100.0, 3);
  auto skewed = LabelDirichlet(labels, kClasses, 10, 0.1, 3);
  ASSERT_THAT(balanced, IsOk());
  ASSERT_THAT(skewed, IsOk());
  const double balanced_classes = MeanMajorClasses(labels, *balanced);
  const double skewed_classes = MeanMajorClasses(labels, *skewed);
  EXPECT_GE(balanced_classes, 9.5);
  EXPECT_LE(skewed_classes, 4.0);
  // Large alpha also balances the sizes: each client near 1000.
  for (const auto& p : *balanced) {
    EXPECT_GT(p.size(), 800u);
    EXPECT_LT(p.size(), 1200u);
  }
}

TEST(LabelDirichletTest, ClientListsAreShuffled) {
  const auto labels = Labels(2000);
  auto parts = LabelDirichlet(labels, kClasses, 4, 1.0, 2);
  ASSERT_THAT(parts, IsOk());
  for (const auto& p : *parts) EXPECT_FALSE(std::is_sorted(p.begin(), p.end()));
}

TEST(LabelDirichletTest, TinyAlphaStillCovers) {
  const auto labels = Labels(2000);
  auto parts = LabelDirichlet(labels, kClasses, 8, 1e-4, 11, /*min_size=*/0);
  ASSERT_THAT(parts, IsOk());
  ExpectDisjointCover(*parts, 2000);
}

TEST(LabelDirichletTest, GivesUpWhenMinSizeUnreachable) {
  // 100 clients, 1000 examples, min_size 10: only an exactly even split qualifies.
  const auto labels = Labels(1000);
  EXPECT_THAT(LabelDirichlet(labels, kClasses, 100, 0.05, 1, 10),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gave up after 1000")));
}

TEST(LabelDirichletTest, InvalidArguments) {
  const auto labels = Labels(100);
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(LabelDirichlet(labels, kClasses, 0, 0.5, 1),
              StatusIs(kInvalid, HasSubstr("num_clients")));
  EXPECT_THAT(LabelDirichlet(labels, kClasses, 101, 0.5, 1, 0),
              StatusIs(kInvalid, HasSubstr("101 clients")));
  EXPECT_THAT(LabelDirichlet(labels, kClasses, 5, 0.0, 1), StatusIs(kInvalid, HasSubstr("alpha")));
  EXPECT_THAT(LabelDirichlet(labels, kClasses, 5, -1.0, 1), StatusIs(kInvalid, HasSubstr("alpha")));
  EXPECT_THAT(LabelDirichlet(labels, kClasses, 5, std::nan(""), 1),
              StatusIs(kInvalid, HasSubstr("alpha")));
  EXPECT_THAT(LabelDirichlet(labels, kClasses, 5, 0.5, 1, -1),
              StatusIs(kInvalid, HasSubstr("min_size is -1")));
  EXPECT_THAT(LabelDirichlet(labels, kClasses, 20, 0.5, 1, 10),
              StatusIs(kInvalid, HasSubstr("min_size 10")));
  EXPECT_THAT(LabelDirichlet(labels, 0, 5, 0.5, 1), StatusIs(kInvalid, HasSubstr("num_classes")));
  std::vector<int32_t> bad = labels;
  bad[17] = kClasses;
  EXPECT_THAT(LabelDirichlet(bad, kClasses, 5, 0.5, 1),
              StatusIs(kInvalid, HasSubstr("label of example 17 is 10")));
}

TEST(KClassesPerClientTest, EachClientHasExactlyKClassesAndAllCovered) {
  const auto labels = Labels(5000);
  for (int k : {1, 2, 3, 10}) {
    auto parts = KClassesPerClient(labels, kClasses, 20, k, 4);
    ASSERT_THAT(parts, IsOk()) << k;
    ExpectDisjointCover(*parts, 5000);
    auto counts = PartitionClassCounts(labels, kClasses, *parts);
    ASSERT_THAT(counts, IsOk());
    for (int c = 0; c < 20; ++c) {
      int held = 0;
      for (int y = 0; y < kClasses; ++y) held += (*counts)[c][y] > 0;
      EXPECT_EQ(held, k) << "client " << c;
      EXPECT_GT((*counts)[c][c % kClasses], 0) << "client " << c;
    }
  }
}

TEST(KClassesPerClientTest, ClassSplitEvenlyAmongHolders) {
  const auto labels = Labels(5000);
  auto parts = KClassesPerClient(labels, kClasses, 30, 2, 8);
  ASSERT_THAT(parts, IsOk());
  auto counts = PartitionClassCounts(labels, kClasses, *parts);
  ASSERT_THAT(counts, IsOk());
  for (int y = 0; y < kClasses; ++y) {
    int lo = INT32_MAX, hi = 0;
    for (int c = 0; c < 30; ++c) {
      if ((*counts)[c][y] == 0) continue;
      lo = std::min(lo, (*counts)[c][y]);
      hi = std::max(hi, (*counts)[c][y]);
    }
    EXPECT_LE(hi - lo, 1) << "class " << y;
  }
}

TEST(KClassesPerClientTest, FewerClientsThanClassesStaysDisjoint) {
  const auto labels = Labels(1000);
  auto parts = KClassesPerClient(labels, kClasses, 3, 2, 1);
  ASSERT_THAT(parts, IsOk());
  EXPECT_THAT(ValidatePartition(*parts, 1000), IsOk());
  for (const auto& p : *parts) {
    std::set<int32_t> classes;
    for (int i : p) classes.insert(labels[i]);
    EXPECT_EQ(classes.size(), 2u);
  }
}

TEST(KClassesPerClientTest, DeterministicPerSeed) {
  const auto labels = Labels(2000);
  EXPECT_EQ(*KClassesPerClient(labels, kClasses, 10, 2, 5),
            *KClassesPerClient(labels, kClasses, 10, 2, 5));
  EXPECT_NE(*KClassesPerClient(labels, kClasses, 10, 2, 5),
            *KClassesPerClient(labels, kClasses, 10, 2, 6));
}

TEST(KClassesPerClientTest, InvalidArguments) {
  const auto labels = Labels(100);
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(KClassesPerClient(labels, kClasses, 10, 0, 1),
              StatusIs(kInvalid, HasSubstr("k is 0")));
  EXPECT_THAT(KClassesPerClient(labels, kClasses, 10, 11, 1),
              StatusIs(kInvalid, HasSubstr("k is 11")));
  EXPECT_THAT(KClassesPerClient(labels, kClasses, 0, 2, 1),
              StatusIs(kInvalid, HasSubstr("num_clients")));
  EXPECT_THAT(KClassesPerClient(labels, kClasses, 101, 2, 1), StatusIs(kInvalid, HasSubstr("101")));
  EXPECT_THAT(KClassesPerClient({0, 1, -1}, kClasses, 1, 2, 1),
              StatusIs(kInvalid, HasSubstr("label of example 2 is -1")));
}

TEST(QuantitySkewTest, CoversContiguousPermutationWithMinSize) {
  auto parts = QuantitySkew(5000, 10, 0.5, 3, 20);
  ASSERT_THAT(parts, IsOk());
  ExpectDisjointCover(*parts, 5000);
  EXPECT_GE(MinSize(*parts), 20u);
}

TEST(QuantitySkewTest, SizesVary) {
  auto parts = QuantitySkew(10000, 10, 0.5, 3);
  ASSERT_THAT(parts, IsOk());
  size_t lo = SIZE_MAX, hi = 0;
  for (const auto& p : *parts) {
    lo = std::min(lo, p.size());
    hi = std::max(hi, p.size());
  }
  EXPECT_GT(hi, 3 * lo);
  // Large alpha: nearly equal.
  auto even = QuantitySkew(10000, 10, 1000.0, 3);
  ASSERT_THAT(even, IsOk());
  for (const auto& p : *even) {
    EXPECT_GT(p.size(), 900u);
    EXPECT_LT(p.size(), 1100u);
  }
}

TEST(QuantitySkewTest, DeterministicPerSeed) {
  EXPECT_EQ(*QuantitySkew(3000, 10, 0.5, 1), *QuantitySkew(3000, 10, 0.5, 1));
  EXPECT_NE(*QuantitySkew(3000, 10, 0.5, 1), *QuantitySkew(3000, 10, 0.5, 2));
}

TEST(QuantitySkewTest, InvalidArguments) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(QuantitySkew(100, 0, 0.5, 1), StatusIs(kInvalid, HasSubstr("num_clients")));
  EXPECT_THAT(QuantitySkew(100, 101, 0.5, 1, 0), StatusIs(kInvalid, HasSubstr("101 clients")));
  EXPECT_THAT(QuantitySkew(100, 5, 0.0, 1), StatusIs(kInvalid, HasSubstr("alpha is 0")));
  EXPECT_THAT(QuantitySkew(100, 11, 0.5, 1), StatusIs(kInvalid, HasSubstr("min_size 10")));
  EXPECT_THAT(QuantitySkew(1000, 100, 0.01, 1, 10), StatusIs(kInvalid, HasSubstr("gave up")));
}

TEST(ValidatePartitionTest, CatchesOverlapAndRange) {
  EXPECT_THAT(ValidatePartition({{0, 1}, {2}}, 3), IsOk());
  EXPECT_THAT(ValidatePartition({{0, 1}, {1}}, 3),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("example 1 is held by client 0 and again by client 1")));
  EXPECT_THAT(ValidatePartition({{0, 3}}, 3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("example 3")));
}

TEST(PartitionClassCountsTest, CountsAndFormats) {
  const std::vector<int32_t> labels = {0, 1, 1, 2, 2, 2};
  auto counts = PartitionClassCounts(labels, 3, {{0, 3}, {1, 2, 4, 5}});
  ASSERT_THAT(counts, IsOk());
  EXPECT_EQ(*counts, (std::vector<std::vector<int>>{{1, 0, 1}, {0, 2, 2}}));
  const std::string table = FormatClassCounts(*counts);
  EXPECT_THAT(table, HasSubstr("client      0      1      2   total\n"));
  EXPECT_THAT(table, HasSubstr("     1      0      2      2       4\n"));
  EXPECT_THAT(table, HasSubstr(" total      1      2      3       6\n"));
  EXPECT_THAT(PartitionClassCounts(labels, 3, {{6}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("example 6")));
}

}  // namespace
}  // namespace fedge::data

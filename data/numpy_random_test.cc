// NumpyRandomState and the NIID-Bench partitions against numpy itself: every expected value
// below was printed by numpy 1.24 (Debian 12's python3-numpy), by the lines quoted above it.
#include "data/numpy_random.h"

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "data/idx_reader.h"
#include "data/partition.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::data {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// Compares bit for bit (numpy printed float.hex()).
void ExpectBits(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i], want[i]) << "element " << i << ": " << std::hexfloat << got[i] << " vs "
                               << want[i];
  }
}

TEST(NumpyRandomStateTest, RawStreamIsNumpysMt19937) {
  // np.random.RandomState(0)._bit_generator.random_raw(3)
  NumpyRandomState rs(0);
  EXPECT_EQ(rs.NextU32(), 2357136044u);
  EXPECT_EQ(rs.NextU32(), 2546248239u);
  EXPECT_EQ(rs.NextU32(), 3071714933u);
}

TEST(NumpyRandomStateTest, RandomSampleMatchesNumpy) {
  // np.random.RandomState(0).random_sample(3)
  NumpyRandomState rs(0);
  std::vector<double> got;
  for (int i = 0; i < 3; ++i) got.push_back(rs.RandomSample());
  ExpectBits(got, {0x1.18fe1565f12a8p-1, 0x1.6e2d4cf608733p-1, 0x1.349d66b6e894bp-1});
}

TEST(NumpyRandomStateTest, GaussKeepsTheSecondOfEachPairLikeNumpy) {
  // np.random.RandomState(5).standard_normal(3)
  NumpyRandomState rs(5);
  std::vector<double> got;
  for (int i = 0; i < 3; ++i) got.push_back(rs.Gauss());
  ExpectBits(got, {0x1.c3d1236911f14p-2, -0x1.52cfa0066e3e2p-2, 0x1.372382a020f64p+1});
}

TEST(NumpyRandomStateTest, ExponentialAndGammaMatchNumpyOnBothBranches) {
  {  // np.random.RandomState(7).standard_exponential(2)
    NumpyRandomState rs(7);
    std::vector<double> got = {rs.StandardExponential(), rs.StandardExponential()};
    ExpectBits(got, {0x1.4520b8e73c071p-4, 0x1.8385b041442c0p+0});
  }
  {  // np.random.RandomState(7).standard_gamma(0.5, 4): the shape < 1 rejection sampler
    NumpyRandomState rs(7);
    std::vector<double> got;
    for (int i = 0; i < 4; ++i) got.push_back(rs.StandardGamma(0.5));
    ExpectBits(got, {0x1.7d9cf96866923p-8, 0x1.89a18b9061436p-3, 0x1.2727d8fe67d44p-4,
                     0x1.0adabbdfdd410p-1});
  }
  {  // np.random.RandomState(7).standard_gamma(2.5, 4): Marsaglia–Tsang over legacy gauss
    NumpyRandomState rs(7);
    std::vector<double> got;
    for (int i = 0; i < 4; ++i) got.push_back(rs.StandardGamma(2.5));
    ExpectBits(got, {0x1.8cf7248ec7520p+0, 0x1.3354f198debcdp+0, 0x1.15b9025545027p+1,
                     0x1.02537f4be1998p+2});
  }
}

TEST(NumpyRandomStateTest, DirichletMatchesNumpy) {
  // rs = np.random.RandomState(11); rs.dirichlet(np.repeat(0.5, 10));
  // rs.dirichlet(np.repeat(100.0, 3))
  NumpyRandomState rs(11);
  ExpectBits(rs.Dirichlet(0.5, 10),
             {0x1.239b60a6c538bp-5, 0x1.dfed6b4d40d8ap-6, 0x1.c6a5495fffbacp-16,
              0x1.a5a0642d9d836p-2, 0x1.bba8620a5395ap-4, 0x1.1436f67220ff2p-2,
              0x1.284e36b37d47ap-8, 0x1.23f34e56e493bp-14, 0x1.100b468234d98p-6,
              0x1.fc440c1c0ec93p-4});
  ExpectBits(rs.Dirichlet(100.0, 3),
             {0x1.3b2936ca055a5p-2, 0x1.4157c21b276b6p-2, 0x1.837f071ad33a2p-2});
}

TEST(NumpyRandomStateTest, ShuffleMatchesNumpyForArraysAndLists) {
  // rs = np.random.RandomState(2); a = np.arange(10); rs.shuffle(a);
  // l = list(range(300)); rs.shuffle(l); l[:12]
  NumpyRandomState rs(2);
  std::vector<int> a = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  rs.Shuffle(a);
  EXPECT_THAT(a, ElementsAre(4, 1, 5, 0, 7, 2, 3, 6, 9, 8));
  std::vector<int> l(300);
  for (int i = 0; i < 300; ++i) l[i] = i;
  rs.Shuffle(l);
  EXPECT_THAT(std::vector<int>(l.begin(), l.begin() + 12),
              ElementsAre(172, 273, 7, 84, 214, 296, 242, 133, 142, 114, 174, 91));
}

TEST(NumpyRandomStateTest, RandomIntervalMatchesNumpyOnBothWordSizes) {
  // Legacy randint draws with the same masked rejection as shuffle's random_interval:
  // rs = np.random.RandomState(1); rs.randint(0, 7, size=6, dtype=np.int64);
  // rs.randint(0, 0x100000005, size=4, dtype=np.int64)   (the 64-bit path: max > 2^32 − 1)
  NumpyRandomState rs(1);
  std::vector<uint64_t> small, large;
  for (int i = 0; i < 6; ++i) small.push_back(rs.RandomInterval(6));
  for (int i = 0; i < 4; ++i) large.push_back(rs.RandomInterval(0x1'0000'0004ULL));
  EXPECT_THAT(small, ElementsAre(5, 3, 4, 0, 1, 3));
  EXPECT_THAT(large, ElementsAre(396591248, 1704103302, 1800426750, 878115723));
  EXPECT_EQ(rs.RandomInterval(0), 0u);
}

// labels (i * 7) % 5 for i < 120, NIID-Bench's partition_data "noniid-labeldir" body run after
// np.random.seed(seed) (K = 5 classes).
std::vector<int32_t> SmallLabels() {
  std::vector<int32_t> y(120);
  for (int i = 0; i < 120; ++i) y[i] = (i * 7) % 5;
  return y;
}

TEST(NiidBenchPartitionTest, LabelDirichletIsTheReferencesSplit) {
  // 4 parties, beta 0.5, seed 3 (accepted at the first draw).
  auto parts = NiidBenchLabelDirichlet(SmallLabels(), 5, 4, 0.5, 3);
  ASSERT_THAT(parts, IsOk());
  ASSERT_EQ(parts->size(), 4u);
  EXPECT_THAT((*parts)[0], ElementsAreArray({72, 117, 2,  27, 42, 67,  57, 32, 85, 87, 93,
                                             60, 82,  80, 75, 12, 107, 77, 37, 102, 5, 91,
                                             52, 7,   62, 110, 97, 112, 18, 70, 17, 113}));
  EXPECT_THAT((*parts)[1], ElementsAreArray({54, 89, 47, 68, 59, 44, 118, 8,   64, 49, 36,
                                             79, 74, 92, 34, 29, 104, 65, 105, 4,  114, 10}));
  EXPECT_THAT((*parts)[2],
              ElementsAreArray({109, 31, 100, 111, 46, 56, 45, 24, 119, 58, 101,
                                53,  38, 96,  0,   55, 20, 40, 30, 35,  15, 90,
                                76,  71, 95,  106, 115, 25, 33, 16, 63}));
  EXPECT_THAT((*parts)[3], ElementsAreArray({28, 39, 51, 6,  41, 61, 14, 88, 66, 43, 116, 108,
                                             22, 48, 1,  23, 26, 19, 86, 103, 13, 73, 83, 50,
                                             69, 94, 3,  81, 78, 99, 11, 84, 98, 9,  21}));
}

TEST(NiidBenchPartitionTest, LabelDirichletRedrawsAsTheReferenceDoes) {
  // 6 parties, beta 0.3, seed 0: the reference redraws 5 times before every party holds 10.
  auto parts = NiidBenchLabelDirichlet(SmallLabels(), 5, 6, 0.3, 0);
  ASSERT_THAT(parts, IsOk());
  ASSERT_EQ(parts->size(), 6u);
  EXPECT_THAT((*parts)[0], ElementsAre(27, 52, 55, 42, 109, 70, 112, 18, 45, 90, 28, 114, 37));
  EXPECT_THAT((*parts)[1], ElementsAre(35, 107, 111, 100, 116, 0, 85, 20, 25, 15, 105, 80, 75,
                                       10, 76, 91, 110));
  EXPECT_THAT((*parts)[2], ElementsAreArray({57, 67, 82, 98,  12, 49, 94, 32, 54, 19, 102, 119,
                                             62, 2,  77, 87, 72, 97, 34, 17, 9,  22, 117}));
  EXPECT_THAT((*parts)[3], ElementsAre(115, 65, 1, 6, 50, 30, 95, 47, 71, 7, 92, 41, 46, 101, 33,
                                       24, 40, 60));
  EXPECT_THAT((*parts)[4], ElementsAreArray({64, 39, 88, 43, 79, 53, 89,  3,   96,  69, 48, 8,
                                             14, 74, 59, 93, 99, 84, 4,   113, 29, 104, 106, 44}));
  EXPECT_THAT((*parts)[5], ElementsAreArray({61, 63, 16, 66, 11, 21,  58,  36,  81, 38, 5,  83, 118,
                                             31, 26, 103, 108, 73, 86, 13, 56, 23, 78, 68, 51}));
}

TEST(NiidBenchPartitionTest, IidIsNumpysPermutationArraySplit) {
  // np.random.seed(9); np.array_split(np.random.permutation(23), 4)
  auto parts = NiidBenchIid(23, 4, 9);
  ASSERT_THAT(parts, IsOk());
  ASSERT_EQ(parts->size(), 4u);
  EXPECT_THAT((*parts)[0], ElementsAre(4, 9, 5, 3, 7, 18));
  EXPECT_THAT((*parts)[1], ElementsAre(16, 6, 2, 13, 15, 10));
  EXPECT_THAT((*parts)[2], ElementsAre(19, 11, 14, 12, 0, 22));
  EXPECT_THAT((*parts)[3], ElementsAre(17, 8, 20, 1, 21));
}

TEST(NiidBenchPartitionTest, FashionMnistSeedZeroIsNiidBenchsSplit) {
  if (!std::filesystem::exists(std::string(kFashionMnistDir) + "/train-labels-idx1-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST is not installed at " << kFashionMnistDir;
  }
  auto fm = LoadFashionMnist();
  ASSERT_THAT(fm, IsOk());
  // NIID-Bench partition_data('fmnist', ..., 'noniid-labeldir', 10, beta=0.5) after
  // np.random.seed(0): per-client class counts and the first five indices.
  auto parts = NiidBenchLabelDirichlet(fm->train.labels, 10, 10, 0.5, 0);
  ASSERT_THAT(parts, IsOk());
  auto counts = PartitionClassCounts(fm->train.labels, 10, *parts);
  ASSERT_THAT(counts, IsOk());
  const std::vector<std::vector<int>> want = {
      {1290, 200, 3, 1067, 110, 142, 1555, 529, 1364, 0},
      {53, 21, 295, 141, 1407, 649, 2067, 86, 191, 65},
      {20, 684, 403, 1079, 129, 1759, 50, 1671, 51, 131},
      {127, 2028, 1599, 148, 316, 146, 1107, 514, 71, 0},
      {1871, 0, 64, 11, 1129, 133, 59, 290, 728, 75},
      {235, 837, 2823, 806, 1573, 0, 0, 0, 0, 0},
      {9, 127, 73, 211, 293, 1654, 361, 1723, 1250, 13},
      {70, 539, 55, 1619, 916, 40, 120, 744, 1689, 859},
      {2109, 692, 130, 183, 78, 250, 544, 3, 233, 1393},
      {216, 872, 555, 735, 49, 1227, 137, 440, 423, 3464}};
  EXPECT_EQ(*counts, want);
  const std::vector<std::vector<int>> first5 = {
      {33952, 18268, 39060, 9212, 49681}, {49605, 29455, 41245, 2330, 19638},
      {7884, 754, 22785, 28428, 24897},   {22493, 23746, 13045, 37342, 36805},
      {13055, 9755, 32140, 36416, 36948}, {58683, 17701, 26616, 38942, 26808},
      {44380, 34944, 11051, 1781, 23064}, {49, 4751, 44068, 16022, 14952},
      {39704, 29605, 8083, 23660, 36739}, {7561, 59631, 51528, 43912, 58676}};
  for (int j = 0; j < 10; ++j) {
    EXPECT_EQ(std::vector<int>((*parts)[j].begin(), (*parts)[j].begin() + 5), first5[j])
        << "client " << j;
  }
}

TEST(NiidBenchPartitionTest, SplitStreamChoosesTheGeneratorAndBoundsNumpySeeds) {
  EXPECT_THAT(ParseSplitStream("numpy"), IsOk());
  EXPECT_EQ(*ParseSplitStream("numpy"), SplitStream::kNumpy);
  EXPECT_EQ(*ParseSplitStream("fedge"), SplitStream::kFedge);
  EXPECT_THAT(ParseSplitStream("mt19937"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("must be fedge or numpy, got \"mt19937\"")));
  const std::vector<int32_t> y = SmallLabels();
  EXPECT_EQ(*LabelDirichletFrom(SplitStream::kNumpy, y, 5, 4, 0.5, 3),
            *NiidBenchLabelDirichlet(y, 5, 4, 0.5, 3));
  EXPECT_EQ(*LabelDirichletFrom(SplitStream::kFedge, y, 5, 4, 0.5, 3),
            *LabelDirichlet(y, 5, 4, 0.5, 3));
  EXPECT_NE(*LabelDirichletFrom(SplitStream::kFedge, y, 5, 4, 0.5, 3),
            *LabelDirichletFrom(SplitStream::kNumpy, y, 5, 4, 0.5, 3));
  EXPECT_EQ(*IidFrom(SplitStream::kNumpy, 23, 4, 9), *NiidBenchIid(23, 4, 9));
  EXPECT_EQ(*IidFrom(SplitStream::kFedge, 23, 4, 9), *Iid(23, 4, 9));
  // numpy.random.seed refuses 2^32; so do the numpy streams (base::Rng takes any seed).
  EXPECT_THAT(IidFrom(SplitStream::kNumpy, 23, 4, 1ULL << 32),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[0, 2^32)")));
  EXPECT_THAT(LabelDirichletFrom(SplitStream::kNumpy, y, 5, 4, 0.5, 1ULL << 32),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[0, 2^32)")));
  EXPECT_THAT(IidFrom(SplitStream::kFedge, 23, 4, 1ULL << 32), IsOk());
}

TEST(NiidBenchPartitionTest, RefusesWhatTheReferenceCannotSplit) {
  EXPECT_THAT(NiidBenchLabelDirichlet(SmallLabels(), 5, 4, 0.0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("alpha")));
  EXPECT_THAT(NiidBenchIid(3, 4, 0), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("4 clients but only 3 examples")));
  // alpha 1e-3, 4 parties, seed 3: every party below the cap draws 0 for class 4, where the
  // reference's proportions / proportions.sum() divides by zero (numpy: "invalid value
  // encountered in divide"). min_size 0, so the redraw loop is not what stops it.
  EXPECT_THAT(NiidBenchLabelDirichlet(SmallLabels(), 5, 4, 1e-3, 3, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("drew 0 for class 4")));
}

}  // namespace
}  // namespace fedge::data

#include "client/preprocessing.h"

#include "data/idx_reader.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::client {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;

std::shared_ptr<const data::Dataset> Pixels() {
  data::Dataset d;
  d.num_examples = 2;
  d.shape = {2};
  d.num_classes = 2;
  d.features = {0.0f, 1.0f, 0.5f, 0.25f};
  d.labels = {0, 1};
  return std::make_shared<const data::Dataset>(d);
}

TEST(PreprocessingTest, UnitRangeIsTheRawDataWithoutACopy) {
  auto raw = Pixels();
  LocalDataCache cache(raw);
  v1::Preprocessing p;  // UNSPECIFIED = UNIT_RANGE
  auto d = cache.Get(p);
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->get(), raw.get());
  p.set_kind(v1::Preprocessing::KIND_UNIT_RANGE);
  EXPECT_EQ(cache.Get(p)->get(), raw.get());
  EXPECT_EQ(cache.copies_made(), 0);
}

TEST(PreprocessingTest, StandardizeUsesFashionMnistDefaultsAndCachesTheCopy) {
  LocalDataCache cache(Pixels());
  v1::Preprocessing p;
  p.set_kind(v1::Preprocessing::KIND_STANDARDIZE);
  auto d = cache.Get(p);
  ASSERT_THAT(d, IsOk());
  EXPECT_NEAR((*d)->features[1], (1.0f - data::kFashionMnistMean) / data::kFashionMnistStd, 1e-6);
  EXPECT_NEAR((*d)->features[0], -data::kFashionMnistMean / data::kFashionMnistStd, 1e-6);
  EXPECT_EQ(cache.raw().features[1], 1.0f);  // the raw data is untouched
  // Same preprocessing again (as every round of a job): no second copy.
  EXPECT_EQ(cache.Get(p)->get(), d->get());
  EXPECT_EQ(cache.copies_made(), 1);
  // Explicit values equal to the defaults are the same preprocessing.
  p.set_mean(data::kFashionMnistMean);
  p.set_std(data::kFashionMnistStd);
  EXPECT_EQ(cache.Get(p)->get(), d->get());
  // A different mean/std makes a new copy.
  p.set_mean(0.5);
  p.set_std(0.5);
  auto e = cache.Get(p);
  ASSERT_THAT(e, IsOk());
  EXPECT_NEAR((*e)->features[1], 1.0f, 1e-6);
  EXPECT_EQ(cache.copies_made(), 2);
}

TEST(PreprocessingTest, RejectsImpossibleStd) {
  LocalDataCache cache(Pixels());
  v1::Preprocessing p;
  p.set_kind(v1::Preprocessing::KIND_STANDARDIZE);
  p.set_std(0);
  EXPECT_THAT(cache.Get(p), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("std")));
  p.set_std(-1);
  EXPECT_THAT(cache.Get(p), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("std")));
}

}  // namespace
}  // namespace fedge::client

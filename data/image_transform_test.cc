#include "data/image_transform.h"

#include "gtest/gtest.h"

namespace fedge::data {
namespace {

Dataset Images(int n, int c, int h, int w) {
  Dataset d;
  d.num_examples = n;
  d.shape = {c, h, w};
  d.num_classes = 2;
  d.labels.assign(n, 1);
  d.features.resize(static_cast<size_t>(n) * c * h * w);
  for (size_t i = 0; i < d.features.size(); ++i) d.features[i] = static_cast<float>(i % 7) / 7;
  return d;
}

TEST(ImageTransformTest, ResizeKeepsAConstantImageAndTheLabels) {
  Dataset d = Images(2, 1, 28, 28);
  for (float& x : d.features) x = 0.25f;
  absl::StatusOr<Dataset> r = ResizeImages(d, 32);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->shape, (std::vector<int>{1, 32, 32}));
  EXPECT_EQ(r->labels, d.labels);
  ASSERT_EQ(r->features.size(), 2u * 32 * 32);
  for (float x : r->features) EXPECT_FLOAT_EQ(x, 0.25f);
}

TEST(ImageTransformTest, ResizeInterpolatesWithHalfPixelCentres) {
  // Rows [0, 1] from 2×2 to 4×4: output column x = 0..3 samples source column
  // (ox + 0.5)·0.5 − 0.5 = −0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped 1).
  Dataset d;
  d.num_examples = 1;
  d.shape = {1, 2, 2};
  d.num_classes = 1;
  d.labels = {0};
  d.features = {0, 1, 0, 1};
  absl::StatusOr<Dataset> r = ResizeImages(d, 4);
  ASSERT_TRUE(r.ok());
  const float want[4] = {0, 0.25f, 0.75f, 1};
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 4; ++x) EXPECT_FLOAT_EQ(r->features[y * 4 + x], want[x]) << y << "," << x;
  }
}

TEST(ImageTransformTest, ResizeRefusesDataThatIsNotImages) {
  Dataset d = Images(1, 1, 2, 2);
  d.shape = {4};
  EXPECT_FALSE(ResizeImages(d, 32).ok());
  EXPECT_FALSE(ResizeImages(Images(1, 1, 2, 2), 0).ok());
}

TEST(ImageTransformTest, SymmetricRangeAndChannelsLast) {
  Dataset d = Images(1, 2, 1, 3);  // channel 0: 0,1,2 /7; channel 1: 3,4,5 /7
  ScaleToSymmetricRange(d);
  EXPECT_FLOAT_EQ(d.features[0], -1.0f);
  ASSERT_TRUE(ToChannelsLast(d).ok());
  EXPECT_EQ(d.shape, (std::vector<int>{1, 3, 2}));
  // HWC: pixel 0 = (ch0 p0, ch1 p0), pixel 1 = (ch0 p1, ch1 p1), ...
  const float want[6] = {0, 3, 1, 4, 2, 5};
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(d.features[i], (want[i] / 7 - 0.5f) / 0.5f) << i;
}

}  // namespace
}  // namespace fedge::data

#include "data/token_windows.h"

#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace fedge::data {
namespace {

std::vector<int32_t> Iota(int n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

TEST(TokenWindowsTest, RejectsStreamsShorterThanAWindow) {
  EXPECT_FALSE(TokenWindows::Create(Iota(4), 4).ok());
  EXPECT_FALSE(TokenWindows::Create(Iota(4), 0).ok());
  EXPECT_TRUE(TokenWindows::Create(Iota(5), 4).ok());
}

TEST(TokenWindowsTest, TargetsAreTheNextTokens) {
  auto w = TokenWindows::Create(Iota(100), 7).value();
  base::Rng rng(1);
  std::vector<int32_t> x(5 * 7), y(5 * 7);
  for (int rep = 0; rep < 50; ++rep) {
    w.Sample(rng, 5, x.data(), y.data());
    for (int b = 0; b < 5; ++b) {
      EXPECT_LE(x[b * 7 + 6] + 1, 99);
      for (int t = 0; t < 7; ++t) {
        EXPECT_EQ(y[b * 7 + t], x[b * 7 + t] + 1);
        if (t > 0) {
          EXPECT_EQ(x[b * 7 + t], x[b * 7 + t - 1] + 1);
        }
      }
    }
  }
}

TEST(TokenWindowsTest, EvaluationWindowsTileTheStream) {
  auto w = TokenWindows::Create(Iota(23), 5).value();
  ASSERT_EQ(w.num_windows(), 4);  // predicts tokens 1..20 of 0..22
  std::vector<int32_t> x(5), y(5);
  for (int64_t i = 0; i < w.num_windows(); ++i) {
    w.Window(i, x.data(), y.data());
    EXPECT_EQ(x[0], i * 5);
    EXPECT_EQ(y[4], i * 5 + 5);
  }
}

TEST(TokenWindowsTest, DocumentsAreJoinedByABlankLine) {
  EXPECT_EQ(ConcatenateDocuments({"a b", "c"}), "a b\n\nc");
}

}  // namespace
}  // namespace fedge::data

#include "aggregation/weighted_mean.h"

#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::aggregation {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<TensorSpec> SmallSpecs() { return {{"fc1.weight", {2, 3}}, {"fc1.bias", {2}}}; }

Update MakeUpdate(std::string client, double weight, std::vector<float> w,
                  std::vector<float> b) {
  Update u;
  u.client_id = std::move(client);
  u.weight = weight;
  u.tensors.push_back({"fc1.weight", {2, 3}, std::move(w), std::nullopt});
  u.tensors.push_back({"fc1.bias", {2}, std::move(b), std::nullopt});
  return u;
}

std::unique_ptr<WeightedMean> NewMean(std::vector<TensorSpec> specs = SmallSpecs()) {
  auto m = WeightedMean::Create(std::move(specs));
  EXPECT_THAT(m, IsOk());
  return std::move(m).value();
}

TEST(WeightedMeanTest, MatchesHandComputedWeightedMean) {
  auto mean = NewMean();
  // Weights 1, 3: mean = (1·a + 3·b) / 4.
  ASSERT_THAT(mean->Accumulate(MakeUpdate("a", 1, {1, 2, 3, 4, 5, 6}, {8, -4})), IsOk());
  ASSERT_THAT(mean->Accumulate(MakeUpdate("b", 3, {5, 6, 7, 8, 9, 10}, {0, 4})), IsOk());
  EXPECT_EQ(mean->num_updates(), 2);
  auto delta = std::move(*mean).Report();
  ASSERT_THAT(delta, IsOk());
  EXPECT_EQ(delta->num_updates, 2);
  EXPECT_EQ(delta->total_weight, 4.0);
  ASSERT_EQ(delta->tensors.size(), 2u);
  EXPECT_EQ(delta->tensors[0].name, "fc1.weight");
  EXPECT_THAT(delta->tensors[0].shape, ElementsAre(2, 3));
  EXPECT_THAT(delta->tensors[0].values, ElementsAre(4, 5, 6, 7, 8, 9));
  EXPECT_FALSE(delta->tensors[0].held.has_value());
  EXPECT_THAT(delta->tensors[1].values, ElementsAre(2, 2));
}

TEST(WeightedMeanTest, AveragesEachCoordinateOverTheClientsThatHeldIt) {
  auto mean = NewMean();
  // Client a (weight 1) holds everything; b (weight 3) holds the 1×2 prefix of fc1.weight
  // and bias[0]; c (weight 4) holds only weight coordinates 1 and 5 and no bias.
  ASSERT_THAT(mean->Accumulate(MakeUpdate("a", 1, {1, 1, 1, 1, 1, 1}, {1, 1})), IsOk());
  Update b = MakeUpdate("b", 3, {5, 5, 5, 5, 5, 5}, {5, 5});
  b.tensors[0].held = CoordinateMask::Prefix({2, 3}, {1, 2}).value();
  b.tensors[1].held = CoordinateMask::Prefix({2}, {1}).value();
  ASSERT_THAT(mean->Accumulate(b), IsOk());
  Update c = MakeUpdate("c", 4, {9, 9, 9, 9, 9, 9}, {0, 0});
  c.tensors[0].held = CoordinateMask::FromIndices(6, {1, 5}).value();
  c.tensors[1].held = CoordinateMask(2);
  ASSERT_THAT(mean->Accumulate(c), IsOk());
  auto delta = std::move(*mean).Report();
  ASSERT_THAT(delta, IsOk());
  // [0]: a,b → (1 + 15)/4 = 4; [1]: a,b,c → (1 + 15 + 36)/8 = 6.5; [2],[3],[4]: a → 1;
  // [5]: a,c → (1 + 36)/5 = 7.4.
  EXPECT_THAT(delta->tensors[0].values, ElementsAre(4.0f, 6.5f, 1.0f, 1.0f, 1.0f, 7.4f));
  EXPECT_FALSE(delta->tensors[0].held.has_value());  // a held every coordinate
  EXPECT_THAT(delta->tensors[1].values, ElementsAre(4.0f, 1.0f));
}

TEST(WeightedMeanTest, CoordinatesNobodyHeldReportZeroAndAreNotHeld) {
  auto mean = NewMean();
  Update a = MakeUpdate("a", 2, {1, 2, 3, 4, 5, 6}, {7, 8});
  a.tensors[0].held = CoordinateMask::Prefix({2, 3}, {1, 3}).value();  // row 0 only
  a.tensors[1].held = CoordinateMask::FromIndices(2, {1}).value();
  Update b = MakeUpdate("b", 6, {3, 2, 1, 0, 0, 0}, {0, 4});
  b.tensors[0].held = CoordinateMask::FromIndices(6, {0}).value();
  b.tensors[1].held = CoordinateMask::FromIndices(2, {1}).value();
  ASSERT_THAT(mean->Accumulate(a), IsOk());
  ASSERT_THAT(mean->Accumulate(b), IsOk());
  auto delta = std::move(*mean).Report();
  ASSERT_THAT(delta, IsOk());
  // [0]: (2·1 + 6·3)/8 = 2.5; [1], [2]: a only; row 1: nobody → 0, not held.
  EXPECT_THAT(delta->tensors[0].values, ElementsAre(2.5f, 2.0f, 3.0f, 0.0f, 0.0f, 0.0f));
  ASSERT_TRUE(delta->tensors[0].held.has_value());
  EXPECT_EQ(delta->tensors[0].held->CountHeld(), 3);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(delta->tensors[0].held->held(i), i < 3) << i;
  // bias[0] nobody; bias[1]: (2·8 + 6·4)/8 = 5.
  EXPECT_THAT(delta->tensors[1].values, ElementsAre(0.0f, 5.0f));
  ASSERT_TRUE(delta->tensors[1].held.has_value());
  EXPECT_FALSE(delta->tensors[1].held->held(0));
  EXPECT_TRUE(delta->tensors[1].held->held(1));
}

// Larger random updates (several tiles, odd sizes, masks) for the state-equivalence tests.
std::vector<TensorSpec> BigSpecs() {
  return {{"conv.weight", {8, 3, 3, 5}}, {"fc.weight", {301, 517}}, {"fc.bias", {301}}};
}

std::vector<Update> RandomUpdates(int n, uint64_t seed) {
  base::Rng rng(seed);
  std::vector<Update> out;
  for (int k = 0; k < n; ++k) {
    Update u;
    u.client_id = "c" + std::to_string(k);
    u.weight = static_cast<double>(1 + rng.UniformInt(1000));
    for (const TensorSpec& spec : BigSpecs()) {
      Tensor t{spec.name, spec.shape, std::vector<float>(spec.size()), std::nullopt};
      for (float& v : t.values) v = static_cast<float>(rng.Normal());
      if (k % 3 == 1) {
        std::vector<int64_t> prefix = spec.shape;
        prefix[0] = (prefix[0] + 1) / 2;
        t.held = CoordinateMask::Prefix(spec.shape, prefix).value();
      }
      u.tensors.push_back(std::move(t));
    }
    out.push_back(std::move(u));
  }
  return out;
}

void ExpectSameDelta(const ModelDelta& a, const ModelDelta& b, bool bit_exact) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  EXPECT_EQ(a.num_updates, b.num_updates);
  EXPECT_EQ(a.total_weight, b.total_weight);
  for (size_t t = 0; t < a.tensors.size(); ++t) {
    ASSERT_EQ(a.tensors[t].values.size(), b.tensors[t].values.size());
    EXPECT_EQ(a.tensors[t].held.has_value(), b.tensors[t].held.has_value());
    for (size_t i = 0; i < a.tensors[t].values.size(); ++i) {
      if (bit_exact) {
        ASSERT_EQ(a.tensors[t].values[i], b.tensors[t].values[i]) << a.tensors[t].name << " " << i;
      } else {
        ASSERT_NEAR(a.tensors[t].values[i], b.tensors[t].values[i], 1e-5f)
            << a.tensors[t].name << " " << i;
      }
    }
  }
}

ModelDelta AccumulateAll(const std::vector<Update>& updates) {
  auto mean = NewMean(BigSpecs());
  for (const Update& u : updates) EXPECT_THAT(mean->Accumulate(u), IsOk());
  return std::move(*mean).Report().value();
}

TEST(WeightedMeanTest, TwoHalvesMergedEqualAccumulatingAll) {
  const std::vector<Update> updates = RandomUpdates(7, 1);
  const ModelDelta all = AccumulateAll(updates);
  auto first = NewMean(BigSpecs()), second = NewMean(BigSpecs());
  for (int k = 0; k < 7; ++k) {
    ASSERT_THAT((k < 4 ? first : second)->Accumulate(updates[k]), IsOk());
  }
  ASSERT_THAT(first->MergeWith(std::move(*second)), IsOk());
  EXPECT_EQ(first->num_updates(), 7);
  EXPECT_EQ(second->num_updates(), 0);
  auto merged = std::move(*first).Report();
  ASSERT_THAT(merged, IsOk());
  // Float addition regroups, so equal to rounding, not bit for bit.
  ExpectSameDelta(*merged, all, /*bit_exact=*/false);
}

std::unique_ptr<WeightedMean> NewExactMean() {
  auto m = WeightedMean::Create(BigSpecs(), WeightedMeanOptions{/*exact=*/true});
  EXPECT_THAT(m, IsOk());
  return std::move(m).value();
}

// Exact sums: 12 updates in 3 groups of 4, each group accumulated apart (in its own order,
// in batches, on threads), serialized, and merged, give the same bits as the 12 in one
// running sum, in any order; and they agree with the float sums to float rounding.
TEST(WeightedMeanExactTest, GroupsOrdersBatchesAndMergesGiveTheSameBits) {
  const std::vector<Update> updates = RandomUpdates(12, 7);
  auto all = NewExactMean();
  for (const Update& u : updates) ASSERT_THAT(all->Accumulate(u), IsOk());
  const ModelDelta one_sum = std::move(*all).Report().value();

  auto root = NewExactMean();
  for (int g = 2; g >= 0; --g) {  // groups merged in reverse
    auto group = NewExactMean();
    std::vector<const Update*> batch;
    for (int k = 4 * g + 3; k >= 4 * g; --k) batch.push_back(&updates[k]);  // reversed
    AccumulateOptions options;
    options.threads = 2;
    ASSERT_THAT(group->AccumulateBatch(batch, options), IsOk());
    const std::string state = group->Serialize().value();
    auto restored = WeightedMean::Deserialize(state);
    ASSERT_THAT(restored, IsOk());
    EXPECT_TRUE((*restored)->exact());
    ASSERT_THAT(root->MergeWith(std::move(**restored)), IsOk());
  }
  EXPECT_EQ(root->num_updates(), 12);
  const ModelDelta merged = std::move(*root).Report().value();
  ExpectSameDelta(merged, one_sum, /*bit_exact=*/true);
  ExpectSameDelta(merged, AccumulateAll(updates), /*bit_exact=*/false);

  // The float sums of the same groups differ from their one running sum in the last bits
  // (what exact sums are for): otherwise this test would prove nothing.
  auto float_root = NewMean(BigSpecs());
  for (int g = 0; g < 3; ++g) {
    auto group = NewMean(BigSpecs());
    for (int k = 4 * g; k < 4 * g + 4; ++k) ASSERT_THAT(group->Accumulate(updates[k]), IsOk());
    ASSERT_THAT(float_root->MergeWith(std::move(*group)), IsOk());
  }
  const ModelDelta float_merged = std::move(*float_root).Report().value();
  const ModelDelta float_all = AccumulateAll(updates);
  bool differs = false;
  for (size_t t = 0; t < float_all.tensors.size() && !differs; ++t) {
    differs = float_all.tensors[t].values != float_merged.tensors[t].values;
  }
  EXPECT_TRUE(differs);
}

// The weights too: masked updates with weights past float's exact integers and with
// fractions (a weight cap scales them) give the same bits in either order.
TEST(WeightedMeanExactTest, WeightsOfAnySizeOrFractionDoNotDependOnOrder) {
  std::vector<Update> updates = RandomUpdates(6, 11);  // updates 1 and 4 are masked
  const double weights[] = {16777216.0, 1.0, 1.0, 0.5, 3.25, 16777217.0};
  for (int k = 0; k < 6; ++k) updates[k].weight = weights[k];
  ModelDelta results[2];
  for (int order = 0; order < 2; ++order) {
    auto mean = NewExactMean();
    for (int k = 0; k < 6; ++k) {
      ASSERT_THAT(mean->Accumulate(updates[order == 0 ? k : 5 - k]), IsOk());
    }
    results[order] = std::move(*mean).Report().value();
  }
  ExpectSameDelta(results[0], results[1], /*bit_exact=*/true);
}

TEST(WeightedMeanExactTest, ProductsPastTheRangeAreRefusedAndLeaveTheSumUnchanged) {
  const std::vector<Update> updates = RandomUpdates(3, 9);
  auto mean = NewExactMean();
  ASSERT_THAT(mean->Accumulate(updates[0]), IsOk());
  Update big = updates[1];
  big.weight = 1 << 20;
  big.tensors[1].values[4000] = 1.0e6f;  // 2^20 · 10^6 > 2^39
  // Refused on arrival (Validate, as the coordinator's intake calls it) and when added.
  EXPECT_THAT(mean->Validate(big),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2^39")));
  EXPECT_THAT(mean->Accumulate(big),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2^39")));
  Update nan = updates[1];
  nan.tensors[0].values[3] = std::nanf("");
  EXPECT_THAT(mean->Accumulate(nan), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("non-finite")));
  ASSERT_THAT(mean->Accumulate(updates[2]), IsOk());
  auto expected = NewExactMean();
  ASSERT_THAT(expected->Accumulate(updates[0]), IsOk());
  ASSERT_THAT(expected->Accumulate(updates[2]), IsOk());
  ExpectSameDelta(std::move(*mean).Report().value(), std::move(*expected).Report().value(),
                  /*bit_exact=*/true);
}

TEST(WeightedMeanExactTest, ExactAndFloatSumsDoNotMergeAndForgedStatesAreRefused) {
  auto exact = NewExactMean();
  auto plain = NewMean(BigSpecs());
  EXPECT_THAT(exact->MergeWith(std::move(*plain)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exact")));
  // A state claiming one update but holding a sum no update could add.
  const std::vector<Update> updates = RandomUpdates(1, 3);
  ASSERT_THAT(exact->Accumulate(updates[0]), IsOk());
  std::string state = exact->Serialize().value();
  const size_t at = state.find("conv.weight") + std::string("conv.weight").size() + 4 + 4 * 8 +
                    16 + 1 + 15;  // the high byte of the first sum
  state[at] = 0x7f;
  const uint32_t crc = static_cast<uint32_t>(crc32_z(
      0, reinterpret_cast<const Bytef*>(state.data()), state.size() - sizeof(uint32_t)));
  std::memcpy(state.data() + state.size() - sizeof(uint32_t), &crc, sizeof(crc));
  EXPECT_THAT(WeightedMean::Deserialize(state),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exceeds")));
}

TEST(WeightedMeanTest, MergeWithExactValuesIsExact) {
  auto a = NewMean(), b = NewMean(), all = NewMean();
  const Update u1 = MakeUpdate("1", 2, {1, 2, 3, 4, 5, 6}, {1, 1});
  Update u2 = MakeUpdate("2", 6, {2, 2, 2, 2, 2, 2}, {3, 3});
  u2.tensors[1].held = CoordinateMask::FromIndices(2, {0}).value();
  ASSERT_THAT(a->Accumulate(u1), IsOk());
  ASSERT_THAT(b->Accumulate(u2), IsOk());
  ASSERT_THAT(all->Accumulate(u1), IsOk());
  ASSERT_THAT(all->Accumulate(u2), IsOk());
  ASSERT_THAT(a->MergeWith(std::move(*b)), IsOk());
  ExpectSameDelta(std::move(*a).Report().value(), std::move(*all).Report().value(), true);
}

TEST(WeightedMeanTest, SerializeDeserializeContinueEqualsUninterrupted) {
  const std::vector<Update> updates = RandomUpdates(6, 2);
  const ModelDelta all = AccumulateAll(updates);
  auto mean = NewMean(BigSpecs());
  for (int k = 0; k < 3; ++k) ASSERT_THAT(mean->Accumulate(updates[k]), IsOk());
  auto state = mean->Serialize();
  ASSERT_THAT(state, IsOk());
  mean.reset();
  auto restored = WeightedMean::Deserialize(*state);
  ASSERT_THAT(restored, IsOk());
  EXPECT_EQ((*restored)->num_updates(), 3);
  EXPECT_EQ((*restored)->specs(), BigSpecs());
  for (int k = 3; k < 6; ++k) ASSERT_THAT((*restored)->Accumulate(updates[k]), IsOk());
  auto resumed = std::move(**restored).Report();
  ASSERT_THAT(resumed, IsOk());
  ExpectSameDelta(*resumed, all, /*bit_exact=*/true);
}

TEST(WeightedMeanTest, DeserializeRejectsCorruptOrTruncatedState) {
  auto mean = NewMean();
  ASSERT_THAT(mean->Accumulate(MakeUpdate("a", 1, {1, 2, 3, 4, 5, 6}, {1, 2})), IsOk());
  const std::string state = mean->Serialize().value();
  std::string flipped = state;
  flipped[state.size() / 2] ^= 0x10;
  EXPECT_THAT(WeightedMean::Deserialize(flipped),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("CRC")));
  EXPECT_THAT(WeightedMean::Deserialize(state.substr(0, state.size() - 9)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("WeightedMean")));
  EXPECT_THAT(WeightedMean::Deserialize("garbage"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("header")));
}

TEST(WeightedMeanTest, BatchesAndThreadsGiveTheSameBitsAsOneByOne) {
  // Several tiles per tensor and > 16 updates (two kernel groups per tile).
  const std::vector<TensorSpec> specs = {{"big", {70001}}, {"small", {33}}};
  base::Rng rng(5);
  std::vector<Update> updates;
  for (int k = 0; k < 19; ++k) {
    Update u;
    u.client_id = "c" + std::to_string(k);
    u.weight = 1 + k;
    for (const TensorSpec& s : specs) {
      Tensor t{s.name, s.shape, std::vector<float>(s.size()), std::nullopt};
      for (float& v : t.values) v = static_cast<float>(rng.Normal());
      if (k % 4 == 3) {
        std::vector<int64_t> idx;
        for (int64_t i = 0; i < s.size(); i += 1 + k % 5) idx.push_back(i);
        t.held = CoordinateMask::FromIndices(s.size(), idx).value();
      }
      u.tensors.push_back(std::move(t));
    }
    updates.push_back(std::move(u));
  }
  auto one_by_one = WeightedMean::Create(specs).value();
  for (const Update& u : updates) ASSERT_THAT(one_by_one->Accumulate(u), IsOk());
  std::vector<const Update*> ptrs;
  for (const Update& u : updates) ptrs.push_back(&u);
  auto batched = WeightedMean::Create(specs).value();
  ASSERT_THAT(batched->AccumulateBatch(ptrs, {/*threads=*/2}), IsOk());
  ExpectSameDelta(std::move(*batched).Report().value(), std::move(*one_by_one).Report().value(),
                  /*bit_exact=*/true);
}

// --- Errors: each names the client and the tensor, and leaves the state untouched. -------

class WeightedMeanErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mean_ = NewMean();
    ASSERT_THAT(mean_->Accumulate(MakeUpdate("good", 2, {1, 2, 3, 4, 5, 6}, {7, 8})), IsOk());
    before_ = mean_->Serialize().value();
  }
  void ExpectUnchanged() { EXPECT_EQ(mean_->Serialize().value(), before_); }

  std::unique_ptr<WeightedMean> mean_;
  std::string before_;
};

TEST_F(WeightedMeanErrorTest, UnknownTensorName) {
  Update u = MakeUpdate("c9", 1, {1, 2, 3, 4, 5, 6}, {1, 2});
  u.tensors[1].name = "fc2.bias";
  EXPECT_THAT(mean_->Accumulate(u),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("WeightedMean"), HasSubstr("c9"), HasSubstr("fc2.bias"))));
  ExpectUnchanged();
}

TEST_F(WeightedMeanErrorTest, MissingAndDuplicateTensor) {
  Update missing = MakeUpdate("c9", 1, {1, 2, 3, 4, 5, 6}, {1, 2});
  missing.tensors.pop_back();
  EXPECT_THAT(mean_->Accumulate(missing),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("missing"), HasSubstr("fc1.bias"))));
  Update dup = MakeUpdate("c9", 1, {1, 2, 3, 4, 5, 6}, {1, 2});
  dup.tensors[1] = dup.tensors[0];
  EXPECT_THAT(mean_->Accumulate(dup),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("twice"), HasSubstr("fc1.weight"))));
  ExpectUnchanged();
}

TEST_F(WeightedMeanErrorTest, WrongShapeOrValueCountOrMaskSize) {
  Update shape = MakeUpdate("c9", 1, {1, 2, 3, 4, 5, 6}, {1, 2});
  shape.tensors[0].shape = {3, 2};
  EXPECT_THAT(mean_->Accumulate(shape),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("fc1.weight"), HasSubstr("[3,2]"), HasSubstr("[2,3]"))));
  Update count = MakeUpdate("c9", 1, {1, 2, 3, 4, 5}, {1, 2});
  EXPECT_THAT(mean_->Accumulate(count),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("fc1.weight"), HasSubstr("5 values"))));
  Update mask = MakeUpdate("c9", 1, {1, 2, 3, 4, 5, 6}, {1, 2});
  mask.tensors[1].held = CoordinateMask(3);
  EXPECT_THAT(mean_->Accumulate(mask),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("fc1.bias"), HasSubstr("mask"))));
  ExpectUnchanged();
}

TEST_F(WeightedMeanErrorTest, NanOrInfAnywhere) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    Update u = MakeUpdate("c9", 1, {1, 2, 3, 4, 5, 6}, {1, 2});
    u.tensors[1].values[1] = bad;
    EXPECT_THAT(mean_->Accumulate(u),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("c9"), HasSubstr("fc1.bias"), HasSubstr("non-finite"),
                               HasSubstr("coordinate 1"))));
    ExpectUnchanged();
  }
}

TEST(WeightedMeanTest, ValuesAtCoordinatesNotHeldAreIgnoredEvenNan) {
  auto mean = NewMean();
  Update u = MakeUpdate("a", 2, {1, 2, 3, 4, 5, 6}, {1, 2});
  u.tensors[0].values[5] = std::numeric_limits<float>::quiet_NaN();
  u.tensors[0].held = CoordinateMask::FromIndices(6, {0, 1, 2, 3, 4}).value();
  ASSERT_THAT(mean->Accumulate(u), IsOk());
  auto delta = std::move(*mean).Report();
  ASSERT_THAT(delta, IsOk());
  EXPECT_THAT(delta->tensors[0].values, ElementsAre(1, 2, 3, 4, 5, 0));
}

TEST_F(WeightedMeanErrorTest, SumOverflowingFloatIsRejected) {
  Update u = MakeUpdate("huge", 1e30, {1, 2, 3, 4, 5, 6}, {1e10f, 2});
  EXPECT_THAT(mean_->Accumulate(u), StatusIs(absl::StatusCode::kInvalidArgument,
                                             AllOf(HasSubstr("huge"), HasSubstr("overflows"))));
  ExpectUnchanged();
}

TEST(WeightedMeanBatchErrorTest, NanLateInABigTensorRestoresEveryTileExactly) {
  // The bad value sits in the last tile of the second thread's range, after both threads
  // have added many tiles, so the rejection must undo them.
  const std::vector<TensorSpec> specs = {{"big", {200003}}};
  auto mean = WeightedMean::Create(specs).value();
  Update first{"first", 3,
      {{"big", {200003}, std::vector<float>(200003, 0.25f), std::nullopt}}, std::nullopt};
  ASSERT_THAT(mean->Accumulate(first), IsOk());
  const std::string before = mean->Serialize().value();
  Update good{"ok", 1,
      {{"big", {200003}, std::vector<float>(200003, 1.5f), std::nullopt}}, std::nullopt};
  Update bad{"evil", 1,
      {{"big", {200003}, std::vector<float>(200003, 2.0f), std::nullopt}}, std::nullopt};
  bad.tensors[0].values[200000] = std::numeric_limits<float>::quiet_NaN();
  const Update* batch[] = {&good, &bad};
  EXPECT_THAT(mean->AccumulateBatch(batch, {/*threads=*/2}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("update 1 of the batch"), HasSubstr("evil"),
                             HasSubstr("big"), HasSubstr("coordinate 200000"))));
  EXPECT_EQ(mean->Serialize().value(), before);
  EXPECT_EQ(mean->num_updates(), 1);
}

TEST(WeightedMeanBatchErrorTest, RejectedFirstBatchLeavesTheAggregateEmpty) {
  // The first batch into an empty aggregate writes the sum without an undo copy; its
  // rejection must zero every tile it wrote (the masked case zeroes the weight sums too),
  // after which the aggregate behaves exactly as a new one.
  const std::vector<TensorSpec> specs = {{"big", {200003}}};
  const int64_t n = 200003;
  for (bool masked : {false, true}) {
    SCOPED_TRACE(masked ? "masked" : "dense");
    auto mean = WeightedMean::Create(specs).value();
    const std::string empty = mean->Serialize().value();
    Update good{"ok", 2, {{"big", {n}, std::vector<float>(n, 1.5f), std::nullopt}}, std::nullopt};
    if (masked) {
      std::vector<int64_t> idx;
      for (int64_t i = 0; i < n; i += 3) idx.push_back(i);
      good.tensors[0].held = CoordinateMask::FromIndices(n, idx).value();
    }
    Update bad{"evil", 1, {{"big", {n}, std::vector<float>(n, 2.0f), std::nullopt}}, std::nullopt};
    bad.tensors[0].values[199999] = std::numeric_limits<float>::infinity();
    const Update* batch[] = {&good, &bad};
    EXPECT_THAT(mean->AccumulateBatch(batch, {/*threads=*/2}),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("evil"), HasSubstr("coordinate 199999"))));
    EXPECT_EQ(mean->num_updates(), 0);
    // Byte-equal to a new aggregate, except that the weight sums, once allocated, stay
    // (all zero, which means the same).
    if (!masked) {
      EXPECT_EQ(mean->Serialize().value(), empty);
    }
    ASSERT_THAT(mean->Accumulate(good), IsOk());
    auto fresh = WeightedMean::Create(specs).value();
    ASSERT_THAT(fresh->Accumulate(good), IsOk());
    ExpectSameDelta(std::move(*mean).Report().value(), std::move(*fresh).Report().value(),
                    /*bit_exact=*/true);
  }
}

TEST_F(WeightedMeanErrorTest, ValidateBoundsTheHeldValuesAndRefusesAsAccumulateDoes) {
  double max_abs = -1;
  ASSERT_THAT(mean_->Validate(MakeUpdate("a", 2, {1, -9.5f, 3, 4, 5, 6}, {7, 8}), &max_abs),
              IsOk());
  EXPECT_EQ(max_abs, 9.5);
  // A NaN where the mask does not hold is ignored, and so is its neighbour's size.
  Update masked = MakeUpdate("m", 2, {1, 2, 3, 4, 5, 6}, {0.5f, 1e20f});
  masked.tensors[1].held = CoordinateMask::FromIndices(2, {0}).value();
  masked.tensors[0].values[4] = std::numeric_limits<float>::quiet_NaN();
  masked.tensors[0].held = CoordinateMask::FromIndices(6, {0, 1, 2, 3, 5}).value();
  ASSERT_THAT(mean_->Validate(masked, &max_abs), IsOk());
  EXPECT_GE(max_abs, 6.0);  // an upper bound (here: 6 from fc1.weight, or the unheld 1e20)
  Update nan = MakeUpdate("c9", 1, {1, 2, 3, 4, 5, 6}, {1, 2});
  nan.tensors[1].values[1] = std::numeric_limits<float>::infinity();
  EXPECT_THAT(mean_->Validate(nan, &max_abs),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("c9"), HasSubstr("fc1.bias"), HasSubstr("coordinate 1"))));
  Update wrong = MakeUpdate("c8", 1, {1, 2, 3}, {1, 2});
  EXPECT_THAT(mean_->Validate(wrong), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("c8")));
  ExpectUnchanged();
}

TEST_F(WeightedMeanErrorTest, NegativeZeroOrNonFiniteWeight) {
  for (double w : {-1.0, 0.0, std::numeric_limits<double>::quiet_NaN(),
                   std::numeric_limits<double>::infinity(), 1e300}) {
    EXPECT_THAT(mean_->Accumulate(MakeUpdate("c9", w, {1, 2, 3, 4, 5, 6}, {1, 2})),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("c9"), HasSubstr("weight"))))
        << w;
  }
  ExpectUnchanged();
}

TEST(WeightedMeanReportTest, ReportWithNoUpdatesFails) {
  auto mean = NewMean();
  EXPECT_THAT(std::move(*mean).Report(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("WeightedMean"), HasSubstr("no accumulated updates"))));
}

TEST(WeightedMeanCreateTest, RejectsDuplicateOrBadSpecs) {
  EXPECT_THAT(WeightedMean::Create({{"a", {2}}, {"a", {3}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a is listed twice")));
  EXPECT_THAT(WeightedMean::Create({{"neg", {2, -1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("neg")));
}

TEST(WeightedMeanMergeTest, RejectsOtherSpecs) {
  auto a = NewMean();
  auto b = NewMean({{"fc1.weight", {2, 3}}});
  EXPECT_THAT(a->MergeWith(std::move(*b)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("specs")));
}

}  // namespace
}  // namespace fedge::aggregation

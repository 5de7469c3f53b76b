#include "aggregation/robust_aggregators.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "aggregation/fed_opt.h"
#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::aggregation {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using Rule = RobustRuleOptions::Rule;

std::vector<TensorSpec> Specs() { return {{"w", {2, 2}}, {"b", {1}}}; }

Update MakeUpdate(std::string client, double weight, std::vector<float> w, float b) {
  Update u;
  u.client_id = std::move(client);
  u.weight = weight;
  u.tensors.push_back({"w", {2, 2}, std::move(w), std::nullopt});
  u.tensors.push_back({"b", {1}, {b}, std::nullopt});
  return u;
}

std::unique_ptr<RobustAggregator> New(Rule rule, double beta = 0.1, int f = 1, int m = 0) {
  RobustRuleOptions o;
  o.rule = rule;
  o.trim_fraction = beta;
  o.byzantine = f;
  o.selected = m;
  auto a = CreateRobustAggregator(Specs(), o);
  EXPECT_THAT(a, IsOk());
  return std::move(a).value();
}

// The plain references: sort every coordinate's values.
float RefMedian(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size();
  return h % 2 ? v[h / 2] : static_cast<float>((double{v[h / 2 - 1]} + v[h / 2]) / 2);
}
float RefTrimmed(std::vector<float> v, double beta) {
  std::sort(v.begin(), v.end());
  const size_t t = static_cast<size_t>(std::floor(beta * v.size() + 1e-9));
  double s = 0;
  for (size_t i = t; i < v.size() - t; ++i) s += v[i];
  return static_cast<float>(s / (v.size() - 2 * t));
}

// Random updates; each rule against its reference at every coordinate.
TEST(RobustAggregatorsTest, MedianAndTrimmedMeanMatchSortedReferences) {
  for (int n : {1, 2, 3, 4, 7, 10}) {
    base::Rng rng(7, n);
    std::vector<Update> updates;
    for (int k = 0; k < n; ++k) {
      std::vector<float> w(4);
      for (float& x : w) x = static_cast<float>(rng.Uniform() * 2 - 1);
      updates.push_back(MakeUpdate("c" + std::to_string(k), 1 + k, w,
                                   static_cast<float>(rng.Uniform())));
    }
    for (Rule rule : {Rule::kCoordinateMedian, Rule::kTrimmedMean}) {
      auto agg = New(rule, 0.2);
      for (const Update& u : updates) ASSERT_THAT(agg->Accumulate(u), IsOk());
      auto delta = std::move(*agg).Report();
      ASSERT_THAT(delta, IsOk());
      EXPECT_EQ(delta->num_updates, n);
      EXPECT_EQ(delta->total_weight, n);  // unweighted
      for (size_t s = 0; s < 2; ++s) {
        for (size_t i = 0; i < delta->tensors[s].values.size(); ++i) {
          std::vector<float> v;
          for (const Update& u : updates) v.push_back(u.tensors[s].values[i]);
          const float want = rule == Rule::kCoordinateMedian ? RefMedian(v) : RefTrimmed(v, 0.2);
          EXPECT_FLOAT_EQ(delta->tensors[s].values[i], want) << "n " << n << " s " << s;
        }
        EXPECT_FALSE(delta->tensors[s].held.has_value());
      }
    }
  }
}

TEST(RobustAggregatorsTest, AnOutlierOf1e30MovesNoRule) {
  for (Rule rule : {Rule::kCoordinateMedian, Rule::kTrimmedMean, Rule::kMultiKrum}) {
    auto agg = New(rule, 0.25, /*f=*/1);
    for (int k = 0; k < 4; ++k) {
      const float v = 0.1f * static_cast<float>(k + 1);  // 0.1 .. 0.4
      ASSERT_THAT(agg->Accumulate(MakeUpdate("h" + std::to_string(k), 1, {v, v, v, v}, v)),
                  IsOk());
    }
    ASSERT_THAT(agg->Accumulate(MakeUpdate("evil", 1e9, {1e30f, -1e30f, 1e30f, 1e30f}, 1e30f)),
                IsOk());
    auto delta = std::move(*agg).Report();
    ASSERT_THAT(delta, IsOk());
    for (const Tensor& t : delta->tensors) {
      for (float x : t.values) {
        EXPECT_GE(x, 0.1f) << static_cast<int>(rule);
        EXPECT_LE(x, 0.4f) << static_cast<int>(rule);
      }
    }
  }
}

TEST(RobustAggregatorsTest, MultiKrumSelectsTheClusterAndAveragesIt) {
  RobustRuleOptions o;
  o.rule = Rule::kMultiKrum;
  o.byzantine = 1;
  o.selected = 3;
  auto krum = MultiKrum::Create(Specs(), o);
  ASSERT_THAT(krum, IsOk());
  // Four close updates and one far one: n = 5 > 2f + 2 = 4.
  ASSERT_THAT((*krum)->Accumulate(MakeUpdate("a", 1, {1, 1, 1, 1}, 1)), IsOk());
  ASSERT_THAT((*krum)->Accumulate(MakeUpdate("b", 1, {1.1f, 1, 1, 1}, 1)), IsOk());
  ASSERT_THAT((*krum)->Accumulate(MakeUpdate("c", 1, {1, 1.1f, 1, 1}, 1)), IsOk());
  ASSERT_THAT((*krum)->Accumulate(MakeUpdate("d", 1, {1.5f, 1.5f, 1.5f, 1.5f}, 1.5f)), IsOk());
  ASSERT_THAT((*krum)->Accumulate(MakeUpdate("e", 100, {-50, 50, -50, 50}, 9)), IsOk());
  MultiKrum& k = **krum;
  auto delta = std::move(k).Report();
  ASSERT_THAT(delta, IsOk());
  EXPECT_THAT(k.selected(), UnorderedElementsAre("a", "b", "c"));
  EXPECT_EQ(delta->total_weight, 3);
  EXPECT_FLOAT_EQ(delta->tensors[0].values[0], 3.1f / 3);
  EXPECT_FLOAT_EQ(delta->tensors[0].values[1], 3.1f / 3);
  EXPECT_FLOAT_EQ(delta->tensors[0].values[2], 1.0f);
  EXPECT_FLOAT_EQ(delta->tensors[1].values[0], 1.0f);
}

TEST(RobustAggregatorsTest, MultiKrumNeedsMoreThanTwoFPlusTwoUpdates) {
  auto agg = New(Rule::kMultiKrum, 0.1, /*f=*/1);
  for (int k = 0; k < 4; ++k) {
    ASSERT_THAT(agg->Accumulate(MakeUpdate("c" + std::to_string(k), 1, {1, 2, 3, 4}, 5)), IsOk());
  }
  EXPECT_THAT(std::move(*agg).Report(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("more than 2f + 2 = 4")));
}

// Masks: each coordinate's rule runs over its holders; Krum's distance over the common ones.
TEST(RobustAggregatorsTest, MasksRestrictEachCoordinateToItsHolders) {
  auto masked = [](std::string id, std::vector<float> w, std::vector<int64_t> held) {
    Update u = MakeUpdate(std::move(id), 1, std::move(w), 0);
    u.tensors[0].held = *CoordinateMask::FromIndices(4, held);
    return u;
  };
  for (Rule rule : {Rule::kCoordinateMedian, Rule::kTrimmedMean, Rule::kMultiKrum}) {
    auto agg = New(rule, 0.0, /*f=*/0);
    // Coordinate 0: held by all (1, 2, 3); coordinate 1 by the first two (4, 6); 2 by one
    // (7; the others' 1000s there are not held); 3 by nobody.
    ASSERT_THAT(agg->Accumulate(masked("a", {1, 4, 7, 1000}, {0, 1, 2})), IsOk());
    ASSERT_THAT(agg->Accumulate(masked("b", {2, 6, 1000, 1000}, {0, 1})), IsOk());
    ASSERT_THAT(agg->Accumulate(masked("c", {3, 1000, 1000, 1000}, {0})), IsOk());
    auto delta = std::move(*agg).Report();
    ASSERT_THAT(delta, IsOk());
    const Tensor& w = delta->tensors[0];
    ASSERT_TRUE(w.held.has_value());
    EXPECT_TRUE(w.held->held(0) && w.held->held(1) && w.held->held(2));
    EXPECT_FALSE(w.held->held(3));
    EXPECT_FLOAT_EQ(w.values[0], 2.0f);  // median, mean (f = 0 keeps all three) alike
    EXPECT_FLOAT_EQ(w.values[1], 5.0f);
    EXPECT_FLOAT_EQ(w.values[2], 7.0f);
    EXPECT_FLOAT_EQ(w.values[3], 0.0f);
    EXPECT_FALSE(delta->tensors[1].held.has_value());
  }
}

TEST(RobustAggregatorsTest, SerializeDeserializeContinue) {
  for (Rule rule : {Rule::kCoordinateMedian, Rule::kTrimmedMean, Rule::kMultiKrum}) {
    std::vector<Update> updates;
    for (int k = 0; k < 6; ++k) {
      const float v = static_cast<float>(k * k) - 3;
      updates.push_back(MakeUpdate("c" + std::to_string(k), k + 1, {v, -v, v / 2, 1}, v));
    }
    updates[2].tensors[0].held = *CoordinateMask::FromIndices(4, {0, 3});
    auto whole = New(rule, 0.2);
    auto first = New(rule, 0.2);
    for (int k = 0; k < 6; ++k) ASSERT_THAT(whole->Accumulate(updates[k]), IsOk());
    for (int k = 0; k < 3; ++k) ASSERT_THAT(first->Accumulate(updates[k]), IsOk());
    auto state = first->Serialize();
    ASSERT_THAT(state, IsOk());
    auto restored = DeserializeRobustAggregator(*state);
    ASSERT_THAT(restored, IsOk());
    EXPECT_EQ((*restored)->num_updates(), 3);
    EXPECT_EQ((*restored)->options().rule, rule);
    for (int k = 3; k < 6; ++k) ASSERT_THAT((*restored)->Accumulate(updates[k]), IsOk());
    auto a = std::move(*whole).Report();
    auto b = std::move(**restored).Report();
    ASSERT_THAT(a, IsOk());
    ASSERT_THAT(b, IsOk());
    for (size_t s = 0; s < 2; ++s) EXPECT_EQ(a->tensors[s].values, b->tensors[s].values);
  }
}

TEST(RobustAggregatorsTest, CorruptStatesAreDataLoss) {
  auto agg = New(Rule::kTrimmedMean);
  ASSERT_THAT(agg->Accumulate(MakeUpdate("a", 1, {1, 2, 3, 4}, 5)), IsOk());
  std::string state = *agg->Serialize();
  std::string flipped = state;
  flipped[flipped.size() / 2] ^= 1;
  EXPECT_THAT(DeserializeRobustAggregator(flipped), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DeserializeRobustAggregator(state.substr(0, state.size() - 9)),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DeserializeRobustAggregator("FEDGEWM1xxxxxxxx"),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(RobustAggregatorsTest, MergeWithTakesTheOthersUpdates) {
  auto a = New(Rule::kCoordinateMedian);
  auto b = New(Rule::kCoordinateMedian);
  ASSERT_THAT(a->Accumulate(MakeUpdate("a", 1, {1, 1, 1, 1}, 1)), IsOk());
  ASSERT_THAT(b->Accumulate(MakeUpdate("b", 1, {2, 2, 2, 2}, 2)), IsOk());
  ASSERT_THAT(b->Accumulate(MakeUpdate("c", 1, {9, 9, 9, 9}, 9)), IsOk());
  ASSERT_THAT(a->MergeWith(std::move(*b)), IsOk());
  EXPECT_EQ(a->num_updates(), 3);
  EXPECT_EQ(b->num_updates(), 0);
  auto delta = std::move(*a).Report();
  ASSERT_THAT(delta, IsOk());
  EXPECT_THAT(delta->tensors[1].values, ElementsAre(2.0f));
  auto trimmed = New(Rule::kTrimmedMean);
  auto median = New(Rule::kCoordinateMedian);
  EXPECT_THAT(median->MergeWith(std::move(*trimmed)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RobustAggregatorsTest, BadUpdatesAreRefusedAndLeaveTheStateAlone) {
  auto agg = New(Rule::kCoordinateMedian);
  ASSERT_THAT(agg->Accumulate(MakeUpdate("ok", 1, {1, 2, 3, 4}, 5)), IsOk());
  Update nan = MakeUpdate("nan", 1, {1, NAN, 3, 4}, 5);
  EXPECT_THAT(agg->Accumulate(nan),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));
  nan.tensors[0].held = *CoordinateMask::FromIndices(4, {0, 2, 3});  // NaN not held: fine
  double max_abs = 0;
  EXPECT_THAT(agg->Validate(nan, &max_abs), IsOk());
  EXPECT_EQ(max_abs, 5.0);
  Update shape = MakeUpdate("shape", 1, {1, 2, 3, 4}, 5);
  shape.tensors[0].shape = {4, 1};
  EXPECT_THAT(agg->Accumulate(shape), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("CoordinateMedian")));
  Update missing = MakeUpdate("missing", 1, {1, 2, 3, 4}, 5);
  missing.tensors.pop_back();
  EXPECT_THAT(agg->Accumulate(missing),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing tensor b")));
  EXPECT_THAT(agg->Accumulate(MakeUpdate("w", 0, {1, 2, 3, 4}, 5)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weight")));
  // A batch with one bad update takes none.
  Update good = MakeUpdate("good", 1, {1, 2, 3, 4}, 5);
  const Update* batch[] = {&good, &missing};
  EXPECT_THAT(agg->AccumulateBatch(batch), StatusIs(absl::StatusCode::kInvalidArgument,
                                                   HasSubstr("update 1 of the batch")));
  EXPECT_EQ(agg->num_updates(), 1);
}

TEST(RobustAggregatorsTest, MemoryBoundAndOptionsAreEnforced) {
  RobustRuleOptions o;
  o.max_updates = 2;
  auto agg = CoordinateMedian::Create(Specs(), o);
  ASSERT_THAT(agg, IsOk());
  ASSERT_THAT((*agg)->Accumulate(MakeUpdate("a", 1, {1, 2, 3, 4}, 5)), IsOk());
  ASSERT_THAT((*agg)->Accumulate(MakeUpdate("b", 1, {1, 2, 3, 4}, 5)), IsOk());
  EXPECT_THAT((*agg)->Accumulate(MakeUpdate("c", 1, {1, 2, 3, 4}, 5)),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("at most 2")));
  o.trim_fraction = 0.5;
  EXPECT_THAT(TrimmedMean::Create(Specs(), o), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::move(*New(Rule::kCoordinateMedian)).Report(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

// The strategy keeps FedAvg's step and swaps the aggregator.
TEST(RobustAggregatorsTest, WithRobustRuleSwapsOnlyTheAggregator) {
  RobustRuleOptions o;
  o.rule = Rule::kTrimmedMean;
  std::unique_ptr<Strategy> s = WithRobustRule(*FedAvg::Create(), o);
  EXPECT_EQ(s->name(), "fedavg");
  auto agg = s->CreateAggregator(Specs());
  ASSERT_THAT(agg, IsOk());
  EXPECT_NE(dynamic_cast<TrimmedMean*>(agg->get()), nullptr);
  ASSERT_THAT((*agg)->Accumulate(MakeUpdate("a", 1, {1, 2, 3, 4}, 5)), IsOk());
  auto delta = std::move(**agg).Report();
  ASSERT_THAT(delta, IsOk());
  ModelWeights model = {{"w", {2, 2}, {0, 0, 0, 0}, std::nullopt}, {"b", {1}, {1}, std::nullopt}};
  ASSERT_THAT(s->Apply(*delta, &model), IsOk());
  EXPECT_THAT(model[0].values, ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(model[1].values, ElementsAre(6));
}

}  // namespace
}  // namespace fedge::aggregation

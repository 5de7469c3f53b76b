#include "server/update_bound.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::server {
namespace {

using ::testing::ElementsAre;

// An update of 4 coordinates, all equal, of L2 norm `norm`.
aggregation::Update Of(std::string id, double weight, double norm) {
  aggregation::Update u;
  u.client_id = std::move(id);
  u.weight = weight;
  const float v = static_cast<float>(norm / 2);
  u.tensors.push_back({"w", {4}, {v, v, v, v}, std::nullopt});
  return u;
}

double NormOf(const aggregation::Update& u) { return aggregation::L2Norm(u); }

UpdateBound::Options Adaptive(int held = 64) {
  UpdateBound::Options o;
  o.norm_multiple = 3;
  o.weight_multiple = 10;
  o.held_updates = held;
  return o;
}

// Takes every update, releases the rest at the close; returns all, by client id.
std::vector<aggregation::Update> RunRound(UpdateBound& bound,
                                          std::vector<aggregation::Update> updates) {
  std::vector<aggregation::Update> out;
  for (aggregation::Update& u : updates) {
    const double n = NormOf(u);
    for (aggregation::Update& r : bound.Take(std::move(u), n)) out.push_back(std::move(r));
  }
  for (aggregation::Update& r : bound.Release()) out.push_back(std::move(r));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.client_id < b.client_id;
  });
  return out;
}

TEST(RunningLowerMedianTest, MatchesTheSortedLowerMedian) {
  base::Rng rng(3);
  RunningLowerMedian m;
  std::vector<double> seen;
  EXPECT_EQ(m.Get(), 0.0);
  for (int i = 0; i < 200; ++i) {
    const double x = std::floor(rng.Uniform() * 50);  // with repeats
    m.Add(x);
    seen.push_back(x);
    std::vector<double> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    ASSERT_EQ(m.Get(), sorted[(sorted.size() + 1) / 2 - 1]) << i;
  }
  EXPECT_EQ(m.count(), 200);
}

TEST(UpdateBoundTest, AnOutlierIsClippedToKTimesTheMedianNorm) {
  UpdateBound bound(Adaptive());
  auto out = RunRound(bound, {Of("a", 10, 1.0), Of("b", 10, 1.1), Of("c", 10, 0.9),
                              Of("d", 10, 1.0), Of("evil", 10, 1e30)});
  ASSERT_EQ(out.size(), 5u);
  EXPECT_NEAR(NormOf(out[0]), 1.0, 1e-6);  // the honest ones are untouched
  EXPECT_NEAR(NormOf(out[1]), 1.1, 1e-6);
  EXPECT_NEAR(NormOf(out[4]), 3.0, 1e-5);  // 3 × the lower median (1.0)
  v1::RobustnessRoundMetrics m;
  bound.Report(&m);
  EXPECT_NEAR(m.norm_bound(), 3.0, 1e-6);
  EXPECT_EQ(m.clipped(), 1);
  EXPECT_EQ(m.weight_capped(), 0);
  EXPECT_EQ(m.released_early(), 0);
  EXPECT_EQ(m.weight_cap(), 100);
}

// An attacker arriving first or last gets the same bound; with W = 2 held updates and 20
// arrivals, one that arrives first is still held (it is the largest) and bounded with the
// whole round's median.
TEST(UpdateBoundTest, ArrivalOrderDoesNotDecideTheAttackersBound) {
  std::vector<aggregation::Update> honest;
  for (int i = 0; i < 19; ++i) honest.push_back(Of("h" + std::to_string(100 + i), 5, 1 + 0.01 * i));
  for (int held : {64, 2}) {
    for (bool first : {true, false}) {
      std::vector<aggregation::Update> round = honest;
      auto evil = Of("evil", 5, 1e6);
      round.insert(first ? round.begin() : round.end(), evil);
      UpdateBound bound(Adaptive(held));
      auto out = RunRound(bound, round);
      ASSERT_EQ(out.size(), 20u);
      EXPECT_EQ(out[0].client_id, "evil");
      EXPECT_NEAR(NormOf(out[0]), 3 * 1.09, 1e-4) << held << first;  // median of 1.00 .. 1.18
      v1::RobustnessRoundMetrics m;
      bound.Report(&m);
      EXPECT_EQ(m.clipped(), 1);
      EXPECT_EQ(m.released_early(), held == 2 ? 18 : 0);
    }
  }
}

TEST(UpdateBoundTest, WeightsAreCappedByTheJobAndByTheRoundsMedian) {
  UpdateBound::Options o = Adaptive();
  o.max_weight = 1000;
  UpdateBound bound(o);
  std::vector<aggregation::Update> round = {Of("a", 10, 1), Of("b", 20, 1), Of("c", 30, 1),
                                            Of("evil", 1 << 30, 1)};
  for (aggregation::Update& u : round) bound.CapWeight(u);
  EXPECT_EQ(round[3].weight, 1000);  // the job's cap, on arrival
  auto out = RunRound(bound, round);
  EXPECT_EQ(out[3].weight, 200);     // 10 × the lower median (20)
  EXPECT_EQ(out[0].weight, 10);
  v1::RobustnessRoundMetrics m;
  bound.Report(&m);
  EXPECT_EQ(m.weight_capped(), 2);  // once each cap
  EXPECT_EQ(m.weight_cap(), 200);
}

// A sub-model holding a quarter of the coordinates is held to half the full bound.
TEST(UpdateBoundTest, ASubModelsBoundScalesWithTheCoordinatesItHeld) {
  UpdateBound bound(Adaptive());
  auto quarter = [](std::string id, float v) {
    aggregation::Update u;
    u.client_id = std::move(id);
    u.weight = 1;
    u.tensors.push_back(
        {"w", {4}, {v, 0, 0, 0}, *aggregation::CoordinateMask::FromIndices(4, {0})});
    return u;
  };
  // Full-model norms: 1, 1, 1 (a quarter update of norm 0.5 is 0.5·√4 = 1) and 20.
  auto out = RunRound(bound, {Of("a", 1, 1), Of("b", 1, 1), quarter("c", 0.5f),
                              quarter("d", 10.0f)});
  EXPECT_NEAR(NormOf(out[2]), 0.5, 1e-6);
  EXPECT_NEAR(NormOf(out[3]), 1.5, 1e-5);  // 3 × 1 × √(1/4)
}

TEST(UpdateBoundTest, AFixedBoundClipsOnArrival) {
  UpdateBound::Options o;
  o.fixed_norm = 2;
  UpdateBound bound(o);
  auto now = bound.Take(Of("a", 3, 10), 10);
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NEAR(NormOf(now[0]), 2, 1e-6);
  EXPECT_EQ(now[0].weight, 3);
  EXPECT_TRUE(bound.Release().empty());
}

// ---- the direction check ----

// An update of `values` (one tensor), optionally holding only the listed coordinates.
aggregation::Update Vec(std::string id, std::vector<float> values,
                        std::vector<int64_t> held = {}) {
  aggregation::Update u;
  u.client_id = std::move(id);
  u.weight = 1;
  const int64_t n = static_cast<int64_t>(values.size());
  std::optional<aggregation::CoordinateMask> mask;
  if (!held.empty()) {
    mask = *aggregation::CoordinateMask::FromIndices(n, held);
    for (int64_t j = 0; j < n; ++j) {
      if (!mask->held(j)) values[j] = 0;
    }
  }
  u.tensors.push_back({"w", {n}, std::move(values), std::move(mask)});
  return u;
}

UpdateBound::Options DirectionOnly(double rho) {
  UpdateBound::Options o;
  o.direction_check = true;
  o.min_agreement = rho;
  return o;
}

// The reference: each coordinate's median over its holders (mean of the middle two for an
// even count), each update's cosine with it over the coordinates it held.
std::vector<double> ReferenceCosines(const std::vector<aggregation::Update>& updates) {
  const size_t size = updates[0].tensors[0].values.size();
  auto holds = [](const aggregation::Update& u, size_t j) {
    return !u.tensors[0].held.has_value() || u.tensors[0].held->held(static_cast<int64_t>(j));
  };
  std::vector<double> median(size, 0.0);
  for (size_t j = 0; j < size; ++j) {
    std::vector<double> column;
    for (const auto& u : updates) {
      if (holds(u, j)) column.push_back(u.tensors[0].values[j]);
    }
    if (column.empty()) continue;
    std::sort(column.begin(), column.end());
    const size_t c = column.size();
    median[j] = c % 2 == 1 ? column[c / 2] : 0.5 * (column[c / 2 - 1] + column[c / 2]);
  }
  std::vector<double> cosines;
  for (const auto& u : updates) {
    double dot = 0, uu = 0, mm = 0;
    for (size_t j = 0; j < size; ++j) {
      if (!holds(u, j)) continue;
      dot += u.tensors[0].values[j] * median[j];
      uu += double(u.tensors[0].values[j]) * u.tensors[0].values[j];
      mm += median[j] * median[j];
    }
    cosines.push_back(uu > 0 && mm > 0 ? dot / std::sqrt(uu * mm) : 0.0);
  }
  return cosines;
}

std::vector<std::string> Ids(const std::vector<aggregation::Update>& updates) {
  std::vector<std::string> ids;
  for (const auto& u : updates) ids.push_back(u.client_id);
  return ids;
}

// Honest updates scatter around one direction; a sign-flipped one and a −w-like one point
// against the round's median and are excluded, with their reasons; one orthogonal to it
// (agreement ≈ 0) stays at the default ρ = −0.2 and is excluded at ρ = 0.1.
TEST(UpdateBoundTest, TheDirectionCheckExcludesUpdatesThatPullAgainstTheRound) {
  base::Rng rng(11);
  const int dim = 64;
  std::vector<float> d(dim);
  for (float& x : d) x = static_cast<float>(rng.Normal());
  std::vector<aggregation::Update> round;
  for (int i = 0; i < 7; ++i) {
    std::vector<float> v(dim);
    for (int j = 0; j < dim; ++j) v[j] = d[j] + 0.3f * static_cast<float>(rng.Normal());
    round.push_back(Vec("h" + std::to_string(i), v));
  }
  std::vector<float> flipped = round[0].tensors[0].values;
  for (float& x : flipped) x *= -10;
  round.push_back(Vec("flip", flipped));
  std::vector<float> against(dim);
  for (int j = 0; j < dim; ++j) against[j] = -d[j] + 0.3f * static_cast<float>(rng.Normal());
  round.push_back(Vec("neg", against));
  // Orthogonal to the honest direction d: cosine ≈ 0 with the round's median.
  std::vector<float> ortho(dim, 1.0f);
  double dd = 0, od = 0;
  for (int j = 0; j < dim; ++j) dd += double(d[j]) * d[j], od += d[j];
  for (int j = 0; j < dim; ++j) ortho[j] -= static_cast<float>(od / dd * d[j]);
  round.push_back(Vec("const", ortho));

  const std::vector<double> cosines = ReferenceCosines(round);
  std::vector<double> sorted = cosines;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[(sorted.size() - 1) / 2];
  EXPECT_LT(std::abs(cosines[9] / median), 0.1);  // "const" is orthogonal to the round

  UpdateBound defaults(DirectionOnly(-0.2));
  auto out = RunRound(defaults, round);
  EXPECT_THAT(Ids(out), ElementsAre("const", "h0", "h1", "h2", "h3", "h4", "h5", "h6"));
  ASSERT_EQ(defaults.excluded().size(), 2u);
  EXPECT_EQ(defaults.excluded()[0].client_id, "flip");  // in arrival order
  EXPECT_EQ(defaults.excluded()[1].client_id, "neg");
  EXPECT_THAT(defaults.excluded()[0].reason, ::testing::HasSubstr("against the round's"));
  v1::RobustnessRoundMetrics m;
  defaults.Report(&m);
  EXPECT_EQ(m.excluded(), 2);
  EXPECT_NEAR(m.direction_threshold(), -0.2 * median, 1e-9);

  UpdateBound strict(DirectionOnly(0.1));
  out = RunRound(strict, round);
  EXPECT_THAT(Ids(out), ElementsAre("h0", "h1", "h2", "h3", "h4", "h5", "h6"));
  ASSERT_EQ(strict.excluded().size(), 3u);
  EXPECT_EQ(strict.excluded()[2].client_id, "const");
}

// The threshold is exactly ρ × the lower median of the cosines with the coordinate-wise
// median over each coordinate's holders (sub-model updates hold some coordinates only):
// random rounds against the reference, with ρ set just above and just below one update's
// ratio to the median.
TEST(UpdateBoundTest, TheDirectionCheckMatchesTheReferenceWithSubModels) {
  base::Rng rng(5);
  for (int trial = 0; trial < 40; ++trial) {
    const int n = 3 + trial % 9, dim = 24;
    std::vector<aggregation::Update> round;
    for (int i = 0; i < n; ++i) {
      std::vector<float> v(dim);
      for (float& x : v) x = static_cast<float>(1.0 + rng.Normal());
      std::vector<int64_t> held;
      if (i % 3 == 1) {
        for (int64_t j = 0; j < dim; j += 2) held.push_back(j);  // a sub-model: half
      }
      round.push_back(Vec("c" + std::to_string(10 + i), v, held));
    }
    const std::vector<double> cosines = ReferenceCosines(round);
    std::vector<double> sorted = cosines;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[(sorted.size() - 1) / 2];
    ASSERT_GT(median, 0);
    const double lowest = sorted[0] / median;  // the least agreeing update's ratio
    for (double rho : {lowest + 1e-6, lowest - 1e-6}) {
      if (!(rho >= -1 && rho <= 1)) continue;
      UpdateBound bound(DirectionOnly(rho));
      auto out = RunRound(bound, round);
      size_t below = 0;
      for (double c : cosines) below += c < rho * median ? 1 : 0;
      EXPECT_EQ(bound.excluded().size(), below) << trial << " rho " << rho;
      EXPECT_EQ(out.size() + bound.excluded().size(), round.size());
      // Fewer than half are ever excluded (ρ ≤ 1: everything at or above the median stays).
      EXPECT_LE(2 * bound.excluded().size(), round.size() - 1) << trial;
    }
  }
}

// The 0-1 principle: a comparator network sorts every input iff it sorts every 0/1 input.
TEST(MergeExchangeNetworkTest, SortsEveryZeroOneInputUpToSixteenAndRandomOnesToSixtyFive) {
  EXPECT_TRUE(MergeExchangeNetwork(1).empty());
  for (int n = 2; n <= 16; ++n) {
    const auto network = MergeExchangeNetwork(n);
    for (uint32_t bits = 0; bits < (1u << n); ++bits) {
      std::vector<int> x(n);
      for (int i = 0; i < n; ++i) x[i] = (bits >> i) & 1;
      for (const auto& [a, b] : network) {
        ASSERT_LT(a, b);
        if (x[a] > x[b]) std::swap(x[a], x[b]);
      }
      ASSERT_TRUE(std::is_sorted(x.begin(), x.end())) << "n " << n << " input " << bits;
    }
  }
  base::Rng rng(13);
  for (int n = 17; n <= 65; ++n) {
    const auto network = MergeExchangeNetwork(n);
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<double> x(n);
      for (double& v : x) v = std::floor(rng.Uniform() * 8);  // with ties
      for (const auto& [a, b] : network) {
        if (x[a] > x[b]) std::swap(x[a], x[b]);
      }
      ASSERT_TRUE(std::is_sorted(x.begin(), x.end())) << "n " << n;
    }
  }
}

// The blocked median (whole tensors) and the per-coordinate one (sub-models) give the
// reference's cosines, for every round size up to the 64 updates the coordinator holds,
// tensor sizes around the block of 64 coordinates, and a mix of both kinds of tensors.
TEST(UpdateBoundTest, CosinesToTheCoordinateMedianMatchTheReference) {
  base::Rng rng(21);
  for (int n = 1; n <= 64; n += (n < 12 ? 1 : 13)) {
    for (int dim : {1, 63, 64, 65, 200}) {
      for (bool masks : {false, true}) {
        std::vector<aggregation::Update> round;
        for (int i = 0; i < n; ++i) {
          std::vector<float> v(dim);
          for (float& x : v) x = static_cast<float>(std::floor(rng.Normal() * 4) / 4 + 0.3);
          std::vector<int64_t> held;
          if (masks && i % 2 == 1) {
            for (int64_t j = 0; j < dim; j += 3) held.push_back(j);
          }
          round.push_back(Vec("c" + std::to_string(i), v, held));
        }
        const std::vector<double> want = ReferenceCosines(round);
        const std::vector<double> got = CosinesToCoordinateMedian(round);
        ASSERT_EQ(got.size(), want.size());
        for (int i = 0; i < n; ++i) {
          EXPECT_NEAR(got[i], want[i], 1e-12) << "n " << n << " dim " << dim << " masks " << masks;
        }
      }
    }
  }
}

TEST(UpdateBoundTest, TheDirectionCheckNeedsThreeUpdatesAndAnAgreedDirection) {
  UpdateBound two(DirectionOnly(1));
  auto out = RunRound(two, {Vec("a", {1, 0}), Vec("b", {-1, 0})});
  EXPECT_EQ(out.size(), 2u);
  EXPECT_TRUE(two.excluded().empty());
  // Three updates with no common direction: the median is 0, no cosine is positive.
  UpdateBound none(DirectionOnly(1));
  out = RunRound(none, {Vec("a", {1, 0}), Vec("b", {-1, 0}), Vec("c", {0, 0})});
  EXPECT_EQ(out.size(), 3u);
  v1::RobustnessRoundMetrics m;
  none.Report(&m);
  EXPECT_EQ(m.direction_threshold(), 0);
  EXPECT_EQ(m.excluded(), 0);
}

TEST(UpdateBoundTest, ForJobFollowsPrivacyAndMemory) {
  v1::JobConfig job;
  job.mutable_robustness()->set_max_examples_per_update(640);
  job.mutable_robustness()->set_max_weight_multiple(10);
  job.mutable_robustness()->set_norm_bound_multiple(3);
  auto o = UpdateBound::ForJob(job, 1000, 64, int64_t{256} << 20);
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->max_weight, 640);
  EXPECT_EQ(o->norm_multiple, 3);
  EXPECT_EQ(o->held_updates, 64);
  EXPECT_FALSE(o->direction_check);  // as the job says (ValidateJobConfig fills its default)
  job.mutable_robustness()->set_direction_check(true);
  job.mutable_robustness()->set_min_direction_agreement(0.1);
  o = UpdateBound::ForJob(job, 1000, 64, int64_t{256} << 20);
  EXPECT_TRUE(o->direction_check);
  EXPECT_EQ(o->min_agreement, 0.1);
  EXPECT_EQ(UpdateBound::ForJob(job, 1 << 24, 64, int64_t{256} << 20)->held_updates, 4);
  EXPECT_EQ(UpdateBound::ForJob(job, 1 << 28, 64, int64_t{256} << 20)->held_updates, 1);
  job.mutable_privacy()->set_noise_multiplier(1);  // central DP: no data-dependent bound
  o = UpdateBound::ForJob(job, 1000, 64, int64_t{256} << 20);
  EXPECT_EQ(o->norm_multiple, 0);
  EXPECT_EQ(o->weight_multiple, 0);
  EXPECT_FALSE(o->direction_check);
  job.mutable_privacy()->set_secure_aggregation_threshold(2);
  EXPECT_FALSE(UpdateBound::ForJob(job, 1000, 64, int64_t{256} << 20).has_value());
}

}  // namespace
}  // namespace fedge::server

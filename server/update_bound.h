// The update bound (a room of the update intake; docs/security.md): how much one update in
// the clear may weigh and how large it may be, applied before aggregation.
//
//   std::optional<UpdateBound::Options> o = UpdateBound::ForJob(job, held_updates, held_bytes);
//   UpdateBound bound(*o);                       // one per round
//   bound.CapWeight(update);                     // the job's cap, on arrival
//   for (Update& u : bound.Take(std::move(update), norm)) accumulate(u);
//   at the close: for (Update& u : bound.Release()) accumulate(u); bound.Report(&metrics);
//
// Weight. An update's weight (its example count, already ≤ what the device registered) is
// capped at the job's max_examples_per_update and at c × the median weight of the round's
// updates (RobustnessConfig.max_weight_multiple): the registered count is the device's own
// claim, so the round's median is what keeps one device from outweighing the others.
//
// Norm. Every update is scaled down (clipped) to a bound B: the job's max_update_norm, or
// adaptive, k × the median over the round's updates of their "full-model norm" ‖Δ‖·√(P/H)
// (H the coordinates the update held, P the model's), so that a sub-model's update is held
// to B·√(H/P): its share of the bound at the same size per coordinate. Medians are lower
// medians (the ⌈n/2⌉-th smallest): with fewer than half of a round's updates hostile, B is
// at most k × an honest update's norm, and a lone hostile device among honest ones cannot
// raise it. They cannot push it down by more than the honest spread either, but a majority
// of zero updates bounds every update to zero (progress stops; nothing moves the model).
//
// Arrival order. The bound of the whole round is known only at its close, but updates are
// accumulated as they arrive (in batches). So the W updates of largest weighted norm
// (weight × full-model norm: their pull on the sum) are held until the close, and bounded
// with the round's medians then; an update leaves early only when W larger ones are held,
// and then gets the bounds of the medians of every update seen so far. A hostile update is
// therefore bounded by the whole round's medians unless more than W updates of the round
// are larger than it — an attacker needs more than W updates in one round, and a majority
// of those that arrive before some point, to be bounded by a median it inflated. Rounds of
// at most W updates (W ≥ 1: the job's clients per round, as most are) are bounded exactly
// as if every update had been seen first. Memory: W updates (CoordinatorOptions
// bound_held_updates, default 64, and at most bound_held_bytes of values, default 256 MiB),
// beside the intake's accumulation batch, plus O(updates) scalars for the medians.
//
// Direction (RobustnessConfig.direction_check, on by default with the weighted mean): at the
// close, with at least 3 held updates, each held update's cosine c_i with the coordinate-
// wise median of the held updates (bounded; each coordinate's median over its holders, the
// cosine over the coordinates the update held) is divided by the lower median c̃ of those
// cosines: its agreement a_i = c_i / c̃ (1 typical, 0 orthogonal, < 0 against the round).
// An update with a_i < min_direction_agreement (ρ, default 0: a negative cosine) is
// excluded from the round; no check when c̃ ≤ 0 (no direction most updates share). The
// coordinate-wise median is what most devices pull towards; sign-flipped, −w and
// label-flipped updates pull against it in the fleet setting of docs/security.md, where
// honest ones agree (a ≥ 0.3). With fewer than half of the held updates hostile the median
// is an honest direction, and since ρ ≤ 1, at least half the updates are kept. A device
// whose data is far from everyone's (the only holder of a class) points against the round
// too and is excluded: that costs accuracy on strongly skewed data (docs/security.md). Rounds over W updates check the W held ones only (those
// released early pull the least).
//
// DP noise (privacy.noise_multiplier > 0): the adaptive bound is off (a bound drawn from the
// other devices' updates would change with one device's data, which the sensitivity
// analysis does not allow), and so is the direction check; updates over privacy.clip_norm are refused instead and
// max_update_norm, a constant, still applies. Every participant weighs 1 there. Secure
// aggregation: the coordinator sees no single update; ForJob returns nullopt.
//
// Thread safety: none (the coordinator's lock, like the intake).
#ifndef FEDGE_SERVER_UPDATE_BOUND_H_
#define FEDGE_SERVER_UPDATE_BOUND_H_

#include <algorithm>
#include <cstdint>
#include <optional>
#include <functional>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "aggregation/update.h"
#include "proto/job.pb.h"

namespace fedge::server {

// The lower median (the ⌈n/2⌉-th smallest) of a stream of numbers, in O(log n) per Add.
class RunningLowerMedian {
 public:
  void Add(double x);
  // 0 when nothing was added.
  double Get() const { return lower_.empty() ? 0.0 : lower_.top(); }
  int64_t count() const { return static_cast<int64_t>(lower_.size() + upper_.size()); }

 private:
  std::priority_queue<double> lower_;  // the ⌈n/2⌉ smallest, largest on top
  std::priority_queue<double, std::vector<double>, std::greater<double>> upper_;
};

// The direction check's measure: the cosine of each update with the coordinate-wise median
// of all of them (each coordinate's median over the updates that held it, the mean of the
// two middle values for an even count; each cosine over the coordinates its update held;
// 0 for a zero vector). O(updates × model) time; tensors every update holds whole go
// kLanes coordinates at a time through a sorting network.
std::vector<double> CosinesToCoordinateMedian(const std::vector<aggregation::Update>& updates);
// The compare-exchange pairs (a < b, in order) of Batcher's merge-exchange network, which
// sorts any n values (Knuth, TAOCP 5.2.2, Algorithm M).
std::vector<std::pair<int, int>> MergeExchangeNetwork(int n);

class UpdateBound {
 public:
  struct Options {
    int64_t max_weight = 0;       // the job's weight cap; 0 = none
    double weight_multiple = 0;   // c: weight ≤ c × the round's median weight; 0 = off
    double fixed_norm = 0;        // > 0: B, whatever the round
    double norm_multiple = 0;     // k of the adaptive bound (fixed_norm 0); 0 = off
    bool direction_check = false;
    double min_agreement = 0;     // in [−1, 1]
    int held_updates = 64;        // W ≥ 1
  };
  // The job's bounds (JobConfig.robustness, filled by ValidateJobConfig); W is
  // `held_updates`, fewer if W updates of the job's model would exceed `held_bytes`.
  // nullopt under secure aggregation.
  static std::optional<Options> ForJob(const v1::JobConfig& job, int64_t model_parameters,
                                       int held_updates, int64_t held_bytes);

  explicit UpdateBound(Options options);

  // The job's weight cap, on arrival: `weight` capped, and the update's weight capped
  // (counted in the metrics).
  double JobCapped(double weight) const {
    return options_.max_weight > 0 ? std::min(weight, static_cast<double>(options_.max_weight))
                                   : weight;
  }
  void CapWeight(aggregation::Update& update);
  // A validated update in the full model's shapes, whose L2 norm is `norm`. Returns the
  // updates that leave now, bounded (none, this one, or a held one it displaced).
  std::vector<aggregation::Update> Take(aggregation::Update update, double norm);
  // At the round's close: every held update, bounded with the round's medians.
  std::vector<aggregation::Update> Release();
  // The bounds at the close and the counts, into `m`.
  void Report(v1::RobustnessRoundMetrics* m) const;
  // The updates the direction check excluded at the close: client id and why (for the
  // client's round outcome and the log). After Release.
  struct Excluded {
    std::string client_id;
    std::string reason;
  };
  const std::vector<Excluded>& excluded() const { return excluded_; }

 private:
  struct Entry {
    double key = 0;         // weight × full-model norm: held when among the W largest
    double full_norm = 0;   // ‖Δ‖·√(P/H)
    int64_t arrival = 0;    // its place in the round's arrivals
    aggregation::Update update;
  };
  // Whether bounds depend on the round's medians (else every update leaves on arrival).
  bool holds() const {
    return (options_.norm_multiple > 0 && options_.fixed_norm <= 0) ||
           options_.weight_multiple > 0 || options_.direction_check;
  }
  // B (full-model terms) and the weight cap from the medians of the updates seen so far.
  double NormBound() const;
  double WeightCap() const;
  // Scales and caps `e`'s update to the bounds; counts what it changed.
  aggregation::Update Bounded(Entry e, double norm_bound, double weight_cap);
  // The direction check over the bounded held updates: removes the excluded ones from
  // `updates` and records them.
  void CheckDirections(std::vector<aggregation::Update>& updates);

  const Options options_;
  std::vector<Entry> held_;  // a min-heap on key
  RunningLowerMedian norms_;
  RunningLowerMedian weights_;
  int64_t arrivals_ = 0;
  int32_t clipped_ = 0;
  int32_t weight_capped_ = 0;
  int32_t released_early_ = 0;
  std::vector<Excluded> excluded_;
  double direction_threshold_ = 0;
  double final_norm_bound_ = 0;
  double final_weight_cap_ = 0;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_UPDATE_BOUND_H_

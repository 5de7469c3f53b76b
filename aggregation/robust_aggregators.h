// Robust aggregation rules (docs/security.md): aggregators that hold the round's updates
// and combine them so that a minority of hostile ones cannot drag the result far.
//
//   CoordinateMedian  per coordinate, the median of the values of the updates that held it
//                     (Yin et al., ICML 2018); an even count takes the mean of the middle two.
//   TrimmedMean       per coordinate over its h holders, drop the ⌊β·h⌋ smallest and the
//                     ⌊β·h⌋ largest values and average the rest (Yin et al. 2018), β in
//                     [0, 0.5).
//   MultiKrum         score each update by the sum of its squared distances to its n − f − 2
//                     nearest others; average (per coordinate, over the holders) the m
//                     updates of lowest score (Blanchard et al., NeurIPS 2017; El Mhamdi et
//                     al., ICML 2018). Needs n > 2f + 2 updates: Report is
//                     kFailedPrecondition otherwise (the coordinator then fails the round,
//                     with that reason, and retries it).
//
// Weights: the rules are unweighted, every update counts once. An update's weight is its
// device's claim of how many examples it trained on; a rule meant to resist hostile
// devices does not let one claim its way to the middle. ModelDelta.total_weight is the
// number of updates the result is made of.
//
// Sub-models: a coordinate's rule runs over the updates whose mask held it (all of them for
// tensors without a mask); a coordinate no update held reports 0 and is left out of
// `held`. Multi-Krum's distance between two updates is taken over the coordinates both
// held, rescaled to the whole model: d(i, j) = Σ_{c ∈ H_i ∩ H_j} (Δ_i[c] − Δ_j[c])² ·
// P / |H_i ∩ H_j| for P coordinates in all (so a pair of small sub-models is not closer
// just for having fewer coordinates in common); two updates with no coordinate in common
// are infinitely far apart. Robustness per coordinate is only as good as its holders: a
// coordinate held by one update is that update's value (tiers whose devices all hold the
// large sub-model's extra coordinates decide those coordinates alone).
//
// Memory: O(updates × model): each accumulated update is copied (values in spec order, and
// its masks). At most `max_updates` are held; beyond that Accumulate is
// kResourceExhausted (the coordinator sets it from the job's model size so that a round
// holds at most kRobustHeldBytes of values, and MultiKrum at most kMaxMultiKrumUpdates).
// Report needs O(updates) scratch (CoordinateMedian, TrimmedMean) or O(updates²) distances
// (MultiKrum, whose time is O(updates² × model)).
//
// Contract otherwise as aggregation/aggregator.h: Validate and Accumulate check names,
// shapes, masks, weight and finite values at held coordinates (kInvalidArgument, state
// unchanged); AccumulateBatch is all-or-nothing; MergeWith takes another aggregator of the
// same rule, parameters and specs; Serialize writes the held updates ("FEDGERA1", CRC-32)
// and DeserializeRobustAggregator restores them. Thread safety: none.
#ifndef FEDGE_AGGREGATION_ROBUST_AGGREGATORS_H_
#define FEDGE_AGGREGATION_ROBUST_AGGREGATORS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "aggregation/aggregator.h"
#include "aggregation/strategy.h"
#include "aggregation/update.h"

namespace fedge::aggregation {

// Values of one round's updates a robust rule may hold at most (4 GiB would not fit the
// coordinator's budget beside the model copies it keeps).
inline constexpr int64_t kRobustHeldBytes = int64_t{1} << 30;
// Updates MultiKrum may hold at most: its n × n distances are doubles (128 MiB at 4096).
inline constexpr int64_t kMaxMultiKrumUpdates = 4096;

struct RobustRuleOptions {
  enum class Rule { kCoordinateMedian, kTrimmedMean, kMultiKrum };
  Rule rule = Rule::kCoordinateMedian;
  double trim_fraction = 0.1;  // TrimmedMean: β in [0, 0.5)
  int byzantine = 1;           // MultiKrum: f ≥ 0
  int selected = 0;            // MultiKrum: m ≥ 0; 0 = n − f
  int64_t max_updates = 1 << 20;  // ≥ 1
};

// The held updates and their checks, shared by the three rules; Report is the rule.
class RobustAggregator : public Aggregator {
 public:
  absl::Status Validate(const Update& update, double* max_abs = nullptr) const override;
  absl::Status Accumulate(const Update& update) override;
  absl::Status AccumulateBatch(absl::Span<const Update* const> updates,
                               const AccumulateOptions& options = {}) override;
  // Errors: kInvalidArgument for another rule, other parameters or other specs.
  absl::Status MergeWith(Aggregator&& other) override;
  absl::StatusOr<std::string> Serialize() const override;

  int64_t num_updates() const override { return static_cast<int64_t>(held_.size()); }
  const std::vector<TensorSpec>& specs() const override { return specs_; }
  const RobustRuleOptions& options() const { return options_; }

 protected:
  // One held update: values and masks in spec order.
  struct Held {
    std::string client_id;
    double weight = 0;
    std::vector<std::vector<float>> values;
    std::vector<std::optional<CoordinateMask>> held;
  };
  RobustAggregator(absl::string_view name, std::vector<TensorSpec> specs,
                   RobustRuleOptions options);
  // Checks shared by the Create functions (specs, options). Errors: kInvalidArgument.
  static absl::Status CheckCreate(absl::string_view name, const std::vector<TensorSpec>& specs,
                                  const RobustRuleOptions& options);
  // A delta of zeros over specs_, num_updates set; the rule fills values and masks.
  ModelDelta EmptyDelta() const;

  const std::string name_;  // "CoordinateMedian", for errors
  std::vector<TensorSpec> specs_;
  absl::flat_hash_map<std::string, int> index_;
  RobustRuleOptions options_;
  std::vector<Held> held_;

 private:
  // Structure (names, shapes, masks, weight) and finite values at held coordinates; fills
  // *order with each spec's index in update.tensors. `position` < 0 for a lone update.
  absl::Status Check(const Update& update, int position, std::vector<int>* order,
                     double* max_abs) const;
};

class CoordinateMedian final : public RobustAggregator {
 public:
  static absl::StatusOr<std::unique_ptr<CoordinateMedian>> Create(
      std::vector<TensorSpec> specs, RobustRuleOptions options = {});
  absl::StatusOr<ModelDelta> Report() && override;

 private:
  using RobustAggregator::RobustAggregator;
};

class TrimmedMean final : public RobustAggregator {
 public:
  static absl::StatusOr<std::unique_ptr<TrimmedMean>> Create(std::vector<TensorSpec> specs,
                                                             RobustRuleOptions options);
  absl::StatusOr<ModelDelta> Report() && override;

 private:
  using RobustAggregator::RobustAggregator;
};

class MultiKrum final : public RobustAggregator {
 public:
  static absl::StatusOr<std::unique_ptr<MultiKrum>> Create(std::vector<TensorSpec> specs,
                                                           RobustRuleOptions options);
  // kFailedPrecondition when n ≤ 2f + 2.
  absl::StatusOr<ModelDelta> Report() && override;
  // The clients of the updates the last Report averaged (for tests and logs).
  const std::vector<std::string>& selected() const { return selected_; }

 private:
  using RobustAggregator::RobustAggregator;
  std::vector<std::string> selected_;
};

// The rule `options.rule` over `specs`. Errors: kInvalidArgument for bad specs or options.
absl::StatusOr<std::unique_ptr<RobustAggregator>> CreateRobustAggregator(
    std::vector<TensorSpec> specs, const RobustRuleOptions& options);
// Restores what RobustAggregator::Serialize wrote, as the rule it was. Errors: kDataLoss
// for a truncated or corrupt state, kInvalidArgument for impossible values.
absl::StatusOr<std::unique_ptr<RobustAggregator>> DeserializeRobustAggregator(
    absl::string_view state);

// The median of `values` (the mean of the two middle values for an even count), reordering
// them: CoordinateMedian's value of a coordinate, and the direction check's reference
// (server/update_bound.h). REQUIRES: values not empty.
double Median(std::vector<float>& values);

// `inner` (FedAvg, FedAdam, ...) with its aggregator replaced by the robust rule: the server
// step, checks, figures and state are the inner strategy's.
std::unique_ptr<Strategy> WithRobustRule(std::unique_ptr<Strategy> inner,
                                         RobustRuleOptions options);

}  // namespace fedge::aggregation

#endif  // FEDGE_AGGREGATION_ROBUST_AGGREGATORS_H_

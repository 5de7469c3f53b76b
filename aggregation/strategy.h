// Server strategies, behind one interface: what the coordinator does with a round's
// aggregate (docs/architecture.md, "The round", step 9).
//
// A round, as the coordinator drives it:
//   auto agg = strategy.CreateAggregator(specs);       // WeightedMean unless overridden
//   for each surviving client: agg->Accumulate(update) // drop the client on error
//       (and keep the update when strategy.KeepsClientUpdates())
//   delta = std::move(*agg).Report();
//   strategy.Apply(delta, &model);                     // server optimizer step
//   strategy.ServerTrainingStep(kept_updates, &model); // e.g. FedCG's server distillation
//   checkpoint model + strategy.SerializeState()
//
// FedProx (Li et al., MLSys 2020) is FedAvg on the server: its proximal term μ/2‖w − w_t‖²
// is part of the clients' local objective, so μ travels in the task's training config and
// the server uses FedAvg unchanged.
//
// Sub-models: Apply changes only coordinates present in delta.tensors[*].held (all of them
// when `held` is absent); coordinates no client held keep their value, and optimizer state
// (moments) for them is left untouched. Tensors of the model that are not in the delta
// (e.g. FedCG's private per-client parts, never uploaded) are left untouched as well.
//
// Thread safety: none; the coordinator calls a strategy from one thread.
#ifndef FEDGE_AGGREGATION_STRATEGY_H_
#define FEDGE_AGGREGATION_STRATEGY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "aggregation/aggregator.h"
#include "aggregation/update.h"
#include "proto/job.pb.h"

namespace fedge::aggregation {

// What a round's devices reported of their own evaluation (ClientTrainMetrics.eval_*):
// accuracy × examples summed over the devices that evaluated, and their examples.
struct DeviceEvaluation {
  int32_t clients = 0;
  int64_t examples = 0;
  double correct = 0;
  int64_t model_round = 0;  // the round whose model they evaluated
};

class Strategy {
 public:
  virtual ~Strategy() = default;

  virtual absl::string_view name() const = 0;  // "fedavg", "fedadam", "fedyogi"

  // A fresh aggregator for one round over `specs`. Default: WeightedMean (FedAvg's
  // example-weighted, sub-model-aware mean). Robust rules override this: WithRobustRule
  // (aggregation/robust_aggregators.h) wraps a strategy with one.
  virtual absl::StatusOr<std::unique_ptr<Aggregator>> CreateAggregator(
      const std::vector<TensorSpec>& specs) const;
  // The default aggregator's sums are exact (WeightedMeanOptions::exact): order- and
  // grouping-independent.
  void set_exact_sums(bool exact) { exact_sums_ = exact; }
  bool exact_sums() const { return exact_sums_; }

  // Applies the round's aggregate to `model` in place. Errors (kInvalidArgument, model
  // unchanged): a delta tensor missing from the model or with another shape.
  virtual absl::Status Apply(const ModelDelta& delta, ModelWeights* model) = 0;

  // True when the strategy needs the round's individual (validated) updates after Apply;
  // the coordinator then keeps them for the round (O(clients) memory, by request only).
  virtual bool KeepsClientUpdates() const { return false; }

  // A server-side training step after Apply, given the averaged model and (when
  // KeepsClientUpdates()) the round's updates. FedCG distills the clients' classifier /
  // generator pairs into the global ones here. Default: nothing.
  virtual absl::Status ServerTrainingStep(absl::Span<const Update* const> client_updates,
                                          ModelWeights* model) {
    return absl::OkStatus();
  }

  // Strategy-specific checks of a client's update, beside the aggregator's (names, shapes,
  // finite values). CheckUpdateTensor runs on each tensor name an upload announces, before
  // a value is read; CheckUpdate on the decoded update against the round's broadcast model
  // (`broadcast`, the model the round's tasks carried). INVALID_ARGUMENT naming the tensor
  // drops that client. Default: nothing more to check.
  virtual absl::Status CheckUpdateTensor(absl::string_view client_id,
                                         absl::string_view name) const {
    return absl::OkStatus();
  }
  virtual absl::Status CheckUpdate(const Update& update, const ModelWeights& broadcast) const {
    return absl::OkStatus();
  }
  // The strategy's own figures of the round that just completed, added to `metrics`, with
  // what the round's devices reported of their own evaluation (`devices`). Default: none.
  virtual void ReportRound(const DeviceEvaluation& devices, v1::RoundMetrics* metrics) const {}

  // The optimizer state (moments, step count) for checkpoints; RestoreState accepts what
  // SerializeState wrote (kDataLoss for anything else).
  virtual absl::StatusOr<std::string> SerializeState() const = 0;
  virtual absl::Status RestoreState(absl::string_view state) = 0;

 private:
  bool exact_sums_ = false;
};

}  // namespace fedge::aggregation

#endif  // FEDGE_AGGREGATION_STRATEGY_H_

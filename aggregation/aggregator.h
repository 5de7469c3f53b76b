// The aggregation interface: a streaming reduction of client updates into one ModelDelta.
//
// Contract (after TFF's aggregation core):
//   - Accumulate folds one client update into the running state. A bad update (unknown,
//     missing or duplicate tensor, wrong shape, NaN/Inf, non-positive weight) is rejected
//     with kInvalidArgument naming the client and the tensor, and leaves the state exactly
//     as it was: the coordinator drops that client, never the round.
//   - AccumulateBatch folds several updates at once, optionally splitting the coordinates
//     over threads. It is all-or-nothing: on the first bad update nothing is accumulated and
//     the error names the update's position and client; the caller drops it and retries.
//   - MergeWith folds another aggregator's state (same type, same tensor specs) into this
//     one, e.g. partial aggregates from shards or threads; `other` is consumed.
//   - Report() && consumes the aggregator and returns the result.
//   - Serialize writes the running state (the coordinator checkpoints mid-round); each
//     implementation has a static Deserialize that restores it, after which accumulation
//     continues as if uninterrupted.
// Memory is O(model): the state never grows with the number of clients (WeightedMean). The
// robust rules (aggregation/robust_aggregators.h) are the exception: they hold the round's
// updates, up to a bound they are created with.
// Thread safety: none; one caller at a time. Ownership: updates are only read during the
// call and may be freed afterwards.
#ifndef FEDGE_AGGREGATION_AGGREGATOR_H_
#define FEDGE_AGGREGATION_AGGREGATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "aggregation/update.h"

namespace fedge::aggregation {

struct AccumulateOptions {
  // Threads that share the work by coordinate ranges (the calling thread is one of them;
  // threads - 1 std::threads are started for the call). 1 = no threads.
  int threads = 1;
};

class Aggregator {
 public:
  virtual ~Aggregator() = default;

  // Checks `update` as Accumulate would (same errors) without changing the state, and
  // bounds its magnitude: *max_abs (when not null) ≥ |value| at every coordinate the update
  // holds. A caller that holds updates to accumulate them in batches validates each on
  // arrival; with the bounds it can also rule out a float overflow of the sums in advance.
  virtual absl::Status Validate(const Update& update, double* max_abs = nullptr) const = 0;
  virtual absl::Status Accumulate(const Update& update) = 0;
  virtual absl::Status AccumulateBatch(absl::Span<const Update* const> updates,
                                       const AccumulateOptions& options = {}) = 0;
  // Errors: kInvalidArgument when `other` is another type or has other tensor specs (this
  // aggregator is then unchanged).
  virtual absl::Status MergeWith(Aggregator&& other) = 0;
  // Errors: kFailedPrecondition when nothing was accumulated.
  virtual absl::StatusOr<ModelDelta> Report() && = 0;
  virtual absl::StatusOr<std::string> Serialize() const = 0;

  virtual int64_t num_updates() const = 0;
  virtual const std::vector<TensorSpec>& specs() const = 0;
};

}  // namespace fedge::aggregation

#endif  // FEDGE_AGGREGATION_AGGREGATOR_H_

// WeightedMean: FedAvg's aggregate, sub-model aware (docs/architecture.md, Algorithms).
//
// For every coordinate i of every tensor:
//     mean[i] = Σ_k n_k · Δ_k[i] / Σ_k n_k      over the clients k whose update held i
// (all clients, for tensors sent without a CoordinateMask). A coordinate no client held
// reports 0 and is left out of the reported tensor's `held` mask, so a strategy leaves it
// unchanged. Weights enter the sums as float(n_k); sums are float, except the per-tensor
// total of unmasked weights, which is a double (per-coordinate float weight sums of masked
// updates are exact while Σ n_k < 2^24).
//
// Streaming, O(model) memory: per tensor a float sum, a float weight sum per coordinate (only
// once some update for that tensor carried a mask), and an undo copy of each (allocated by
// Create) that makes rejection exact: 2× the model's floats, 4× with masks.
//
// Accumulation is tiled over 8192-coordinate tiles of the running sum: save the tile to the
// undo copy, add the batch's updates (WeightedAccumulate, up to 16 per pass, so a batch reads
// each update once and the running sum once; the first batch into an empty aggregate only
// writes the sum (WeightedSum) and needs no undo copy: rejection zeroes it again), then
// check the tile of the sum for NaN/Inf
// while it is in cache. w·u is NaN/Inf for a NaN/Inf u (w > 0 finite) and nothing finite
// added to NaN/Inf is finite again, so a finite tile proves every value added was finite:
// the finite-value check costs no extra pass over the client data. On failure, every tile
// already changed is restored from the undo copy bit for bit, and the error names the first
// update (batch order) with a NaN/Inf at a coordinate it held; if there is none, the sum
// overflowed float and that is the error.
//
// Determinism: for each coordinate, updates are added in the order they were accumulated
// (batch order within a batch), whatever the thread count or batching, so the result does
// not depend on AccumulateOptions. MergeWith adds the other aggregator's sums to this one's.
//
// Exact sums (WeightedMeanOptions::exact): float sums depend on the order of the updates
// and on how they were grouped (a merge of partial sums differs from one running sum in
// the last bits). With exact sums each product n_k·Δ_k[i] (exact in double: 24-bit weight
// times 24-bit value) is truncated once to a fixed-point grid of 2^-64 and added to a
// 128-bit integer, and so are the weights (per coordinate for masked updates, per tensor
// for dense ones, and the total), so the mean is the same whatever the order, the
// batching or the merging of partial aggregates. It needs |n_k·Δ_k[i]| < 2^39 (Validate
// and Accumulate refuse a larger product like a NaN) and at most 2^23 updates (no
// overflow), costs 16 bytes a coordinate (32 with the undo copy; twice that for tensors
// with masked updates) and a scalar pass instead of a vectorized one
// (bench/fedavg_bench.cc gives the ratio). Products below 2^-64 count as 0.

#ifndef FEDGE_AGGREGATION_WEIGHTED_MEAN_H_
#define FEDGE_AGGREGATION_WEIGHTED_MEAN_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "aggregation/aggregator.h"
#include "aggregation/update.h"

namespace fedge::aggregation {

struct WeightedMeanOptions {
  // Order- and grouping-independent sums (see above).
  bool exact = false;
};

class WeightedMean final : public Aggregator {
 public:
  // Exact sums: the fixed-point grid, the largest |n·value| accepted, the most updates.
  static constexpr double kExactScale = 18446744073709551616.0;  // 2^64
  static constexpr double kExactMaxProduct = 549755813888.0;     // 2^39
  static constexpr int64_t kExactMaxUpdates = int64_t{1} << 23;

  // An empty aggregate over tensors `specs` (unique, non-empty names; non-negative dims).
  // Errors: kInvalidArgument naming the offending tensor.
  static absl::StatusOr<std::unique_ptr<WeightedMean>> Create(std::vector<TensorSpec> specs,
                                                              WeightedMeanOptions options = {});
  // Restores a state written by Serialize(). Errors: kDataLoss for a truncated or corrupt
  // state (checksum, magic, version, sizes), kInvalidArgument for impossible values.
  static absl::StatusOr<std::unique_ptr<WeightedMean>> Deserialize(absl::string_view state);

  // Checks names, shapes, mask sizes, weight and finite values (at held coordinates)
  // without accumulating, in one vectorized read of the values; *max_abs (when not null)
  // receives a bound on |value| over the held coordinates. Accumulate checks again (fused
  // with the sum: no extra memory pass).
  absl::Status Validate(const Update& update, double* max_abs = nullptr) const override;

  absl::Status Accumulate(const Update& update) override;
  absl::Status AccumulateBatch(absl::Span<const Update* const> updates,
                               const AccumulateOptions& options = {}) override;
  absl::Status MergeWith(Aggregator&& other) override;
  absl::StatusOr<ModelDelta> Report() && override;
  // Little-endian binary: "FEDGEWM1", version, counters, per tensor its spec, weights and
  // sums, then a CRC-32 of everything before it.
  absl::StatusOr<std::string> Serialize() const override;

  int64_t num_updates() const override { return num_updates_; }
  const std::vector<TensorSpec>& specs() const override { return specs_; }
  double total_weight() const { return total_weight_; }
  // A state from elsewhere (a relay's part) before it is merged: float sums, coverage and
  // weights finite, weights and coverage non-negative (exact sums are integers, bounded by
  // Deserialize). Returns the largest |sum| (0 for exact sums), for the merger's overflow
  // bound; INVALID_ARGUMENT naming the tensor otherwise.
  absl::StatusOr<double> CheckForeignState() const;
  bool exact() const { return exact_; }

 private:
  struct Slot {
    std::vector<float> sum;        // Σ float(n_k) · Δ_k[i]
    std::vector<float> cover;      // Σ float(n_k) over masked updates holding i; may be empty
    double dense_weight = 0.0;     // Σ float(n_k) over updates sent without a mask
    bool zero = true;              // nothing added yet: sum and cover are all 0
    std::vector<float> undo_sum;   // scratch for exact rejection (not part of the state)
    std::vector<float> undo_cover;
    // Exact sums instead of `sum`, `cover` and `dense_weight`: Σ trunc(2^64 · n_k · Δ_k[i]),
    // and the weights on the same grid (weights need not be integers: caps scale them).
    std::vector<__int128> fixed;
    std::vector<__int128> fixed_cover;  // may be empty, as `cover`
    __int128 fixed_dense = 0;
    std::vector<__int128> undo_fixed;
    std::vector<__int128> undo_fixed_cover;
  };

  WeightedMean(std::vector<TensorSpec> specs, bool exact);
  // Names, shapes, mask sizes and weight (not values). `position` < 0 for a lone update.
  // Fills (*order)[s] with the index in update.tensors of spec s.
  absl::Status CheckStructure(const Update& update, int position,
                              std::vector<int>* order) const;
  // Validate without the exact-sum range check: structure, finite values, *max_abs.
  absl::Status ValidateBound(const Update& update, double* max_abs) const;
  // The first NaN/Inf of an update, as an error naming it.
  absl::Status FindNonFinite(const Update& update, int position) const;

  std::vector<TensorSpec> specs_;
  absl::flat_hash_map<std::string, int> index_;  // name → position in specs_
  std::vector<Slot> slots_;
  int64_t num_updates_ = 0;
  double total_weight_ = 0.0;  // exact sums: fixed_total_ / 2^64
  __int128 fixed_total_ = 0;
  bool exact_ = false;
};

}  // namespace fedge::aggregation

#endif  // FEDGE_AGGREGATION_WEIGHTED_MEAN_H_

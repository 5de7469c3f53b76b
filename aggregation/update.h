// What clients send and what aggregation reports: named float tensors, a client weight, and
// for sub-model updates (docs/architecture.md, Algorithms) which coordinates the client held.
//
// Representation of a sub-model (our choice, used by every aggregator and strategy):
//   A client's tensor always arrives in the FULL model's shape (the SubModelSlicer's inverse
//   mapping expands a tier-r or random-subset update back to full shape), with an optional
//   CoordinateMask, one bit per coordinate in row-major order: bit set = the client's
//   sub-model held that coordinate. No mask = the client held the whole tensor. Values at
//   coordinates a client did not hold are ignored: never added, never validated.
//   A bitmask costs 1/32 of the values' bytes, covers HeteroFL prefix slices (Prefix) and
//   Federated Dropout subsets (FromIndices) alike, and is what the accumulate kernel reads
//   (kernels/accumulate.h).
#ifndef FEDGE_AGGREGATION_UPDATE_H_
#define FEDGE_AGGREGATION_UPDATE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace fedge::aggregation {

// Name and shape of one tensor the aggregation expects ("fc1.weight", {128, 784}).
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;

  int64_t size() const;  // product of shape (1 for a scalar, shape {})
  bool operator==(const TensorSpec& o) const { return name == o.name && shape == o.shape; }
};

// The set of coordinates of one tensor a client's sub-model held: a bitmask over the
// tensor's row-major coordinates. Value type; cheap to move.
class CoordinateMask {
 public:
  CoordinateMask() = default;
  // `size` coordinates, none held (or all held with `all_held`).
  explicit CoordinateMask(int64_t size, bool all_held = false);

  // HeteroFL prefix slice: coordinate (i0, i1, ...) of `shape` is held when i_d < held[d]
  // for every dimension d. Errors (kInvalidArgument) when ranks differ or held[d] is
  // outside [0, shape[d]].
  static absl::StatusOr<CoordinateMask> Prefix(absl::Span<const int64_t> shape,
                                               absl::Span<const int64_t> held);
  // Federated Dropout / any subset: the listed row-major coordinates are held. Errors
  // (kInvalidArgument) on an index outside [0, size). Duplicates are harmless.
  static absl::StatusOr<CoordinateMask> FromIndices(int64_t size,
                                                    absl::Span<const int64_t> indices);
  // From raw words (bit i % 64 of words[i / 64]); bits past `size` must be zero.
  static absl::StatusOr<CoordinateMask> FromWords(int64_t size, std::vector<uint64_t> words);

  int64_t size() const { return size_; }
  bool held(int64_t i) const { return (words_[i >> 6] >> (i & 63)) & 1u; }
  void Set(int64_t i) { words_[i >> 6] |= uint64_t{1} << (i & 63); }
  int64_t CountHeld() const;
  const std::vector<uint64_t>& words() const { return words_; }
  bool operator==(const CoordinateMask& o) const {
    return size_ == o.size_ && words_ == o.words_;
  }

 private:
  int64_t size_ = 0;
  std::vector<uint64_t> words_;  // ceil(size / 64) words; bits past size are zero
};

// A named dense tensor, row-major. `held` is the sub-model coverage described above: on a
// client update, the coordinates the client held; on a ModelDelta, the coordinates at least
// one client held (the others report 0 and stay unchanged). Absent = every coordinate.
struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
  std::optional<CoordinateMask> held;
};

// One client's contribution to a round: Δ_k = w_local − w_received per tensor, and its
// weight n_k (the number of local examples, for FedAvg).
struct Update {
  std::string client_id;  // for error messages and for strategies that keep updates
  double weight = 0.0;    // n_k > 0 and finite; used as float(n_k) in the sums
  std::vector<Tensor> tensors;
  // Set by a decoder that read every value: each value is finite and |value| ≤ max_abs.
  // Aggregator::Validate then skips its own read of the values (Accumulate still checks).
  std::optional<double> max_abs;
};

// The aggregate of a round: the weighted mean delta per tensor, in the aggregator's spec
// order. Coordinates no client held are 0 and absent from `held`.
struct ModelDelta {
  std::vector<Tensor> tensors;
  double total_weight = 0.0;  // Σ n_k over the accumulated updates
  int64_t num_updates = 0;
};

// The model the server keeps: named tensors (a strategy updates them in place).
using ModelWeights = std::vector<Tensor>;

// Specs of `tensors` (name and shape), in order.
std::vector<TensorSpec> SpecsOf(const std::vector<Tensor>& tensors);

// ‖Δ‖₂ of an update's values (every value, masks aside: an update arrives in its sub-model's
// shapes), summed in double.
double L2Norm(const Update& update);

// How aggregators' errors name things: a shape "[2,3]"; an update "update from client c"
// (position < 0) or "update 3 of the batch (client c)".
std::string ShapeString(const std::vector<int64_t>& shape);
std::string DescribeUpdate(const Update& update, int position);

}  // namespace fedge::aggregation

#endif  // FEDGE_AGGREGATION_UPDATE_H_

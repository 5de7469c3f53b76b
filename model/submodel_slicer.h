// Sub-models of a sequential network (docs/architecture.md, Algorithms) and their exact
// inverse mapping into the full model.
//
// A tier-r sub-model keeps ⌈r·c⌉ of the c units of every HIDDEN layer: the out_features of
// every Dense and the out_channels of every Conv2d, except the output layer (the last Dense
// or Conv2d of the network), which keeps its full size, as does the input. Two policies:
//   kLeading       HeteroFL (Diao et al. 2021) / FjORD: the first ⌈r·c⌉ units.
//   kRandomSubset  Federated Dropout (Caldas et al. 2018): ⌈r·c⌉ units drawn uniformly without
//                  replacement per hidden layer, from base::Rng(seed) in layer order; the
//                  caller derives the seed from (job seed, client, round).
// ⌈r·c⌉ is computed as ceil(r·c − 1e-9) (so r = 0.1, c = 30 gives 3, not 4) and is at least 1.
//
// The next layer's input follows the kept units:
//   Dense after Dense (through Relu)     input columns = the previous layer's kept units;
//   Conv2d after Conv2d (Relu, MaxPool)  in-channel slice = the previous kept channels;
//   Dense after Flatten of an NHWC [H, W, C] map with kept channels S:
//       input columns {(h·W + w)·C + c : h < H, w < W, c ∈ S} (Flatten keeps memory order);
//   Relu, Sigmoid, LeakyRelu, MaxPool2d, AvgPool2d and Flatten pass the kept subset of the
//   last dimension through (elementwise and per-channel layers);
//   Embedding keeps its full [num_embeddings, dim] table (it must see the full input).
// Biases follow their layer's kept units. In a sub-model the kept units keep their relative
// order, so sub-model unit j of a layer is full-model unit kept[j].
//
// Thread safety: a SubModelSlicer is immutable after Create; const methods are thread-safe.
#ifndef FEDGE_MODEL_SUBMODEL_SLICER_H_
#define FEDGE_MODEL_SUBMODEL_SLICER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "proto/model.pb.h"

namespace fedge::model {

enum class SubModelExtraction { kLeading, kRandomSubset };

// How one tensor of a sub-model sits inside the full model's tensor.
struct TensorSlice {
  std::string name;                        // "fc1.weight"
  std::vector<int64_t> full_shape;
  std::vector<std::vector<int64_t>> kept;  // per dimension: kept indices into the full dim, ascending
  std::vector<int64_t> sub_shape() const;  // kept[d].size() per d
  bool leading() const;                    // every kept[d] is 0..k-1 (a prefix)
  int64_t full_size() const;               // product of full_shape
  int64_t sub_size() const;                // product of sub_shape()
};

class SubModelSlicer final {
 public:
  // `full` must be a spec Sequential::Create accepts (the same shape rules are checked
  // here). width_ratio in (0, 1]; r = 1 gives the identity slicing (for either policy).
  // INVALID_ARGUMENT with the reason otherwise (r ≤ 0, r > 1, NaN; a spec that does not
  // chain; an Embedding after a sliced layer).
  static absl::StatusOr<SubModelSlicer> Create(const v1::ModelSpec& full, double width_ratio,
                                               SubModelExtraction extraction, uint64_t seed);

  // The full spec (layer names filled in as Sequential does: "layer<i>" when empty).
  const v1::ModelSpec& full_spec() const { return full_spec_; }
  // The sub-model's architecture (valid for Sequential::Create): same layers and names,
  // narrower Dense/Conv2d.
  const v1::ModelSpec& sub_spec() const { return sub_spec_; }
  // sub_spec() with HeteroFL's scaler (model.proto ScalerSpec, rate = width_ratio) after
  // every sliced hidden Dense/Conv2d, named "<layer>_scaler": a sub-model trained with it
  // feeds its next layer activations of the full model's magnitude. The same parameters as
  // sub_spec(); equal to sub_spec() when r = 1. (The full model has no scalers.)
  const v1::ModelSpec& scaled_sub_spec() const { return scaled_sub_spec_; }
  // One per parameter, in the model's parameter order (Sequential::parameters()).
  const std::vector<TensorSlice>& slices() const { return slices_; }
  double width_ratio() const { return width_ratio_; }

  // Full ModelProto (its parameters those of full_spec(): each name once, full shapes) →
  // the sub-model's ModelProto (spec = sub_spec(), parameters in slices() order).
  // INVALID_ARGUMENT naming the parameter when one is missing, repeated, unknown, or has the
  // wrong shape or value count.
  absl::StatusOr<v1::ModelProto> Slice(const v1::ModelProto& full) const;

  // Inverse: scatters a sub-model tensor's values (sub_shape, row-major) into a full-shape
  // buffer; coordinates the sub-model does not hold are left as they are in `full`.
  // INVALID_ARGUMENT when sub or full has the wrong number of values.
  absl::Status Unslice(const TensorSlice& slice, absl::Span<const float> sub,
                       absl::Span<float> full) const;

  // Row-major offsets into the full tensor of the coordinates the sub-model holds, in
  // ascending order; element i is where the sub-model's row-major element i lives.
  static std::vector<int64_t> HeldIndices(const TensorSlice& slice);

 private:
  SubModelSlicer() = default;

  v1::ModelSpec full_spec_;
  v1::ModelSpec sub_spec_;
  v1::ModelSpec scaled_sub_spec_;
  std::vector<TensorSlice> slices_;
  double width_ratio_ = 1.0;
};

// Training memory (bytes) of a model at a batch size, as fedge's trainer lays it out:
//   parameters  4·P·(3 + slots): values, gradients, the received copy kept for Δ, and the
//               optimizer's slots (SGD with momentum: 1; Adam: 2);
//   activations 4·batch·(input + Σ layer outputs + 2·largest layer output): every layer's
//               output kept for the backward pass and the two ping-pong gradient buffers;
//   scratch     per Conv2d (each owns its buffers): the im2col chunk, its gradient and the
//               output chunk, each bounded by max(64 Ki, OH·OW·⌈K²·Cin⌉₁₆) floats (Conv2d's
//               chunking), and dW over the padded K; per Dense/Conv2d the int8 copy of its
//               weights (1 byte each).
// An estimate (allocator overhead, the data set and the process are not counted), monotone
// in every layer's width. Returns -1 for a spec Sequential::Create would refuse, or
// batch_size < 1.
int64_t EstimateTrainingMemoryBytes(const v1::ModelSpec& spec, int batch_size, bool adam);

// Conv2d's own training scratch at a batch, in floats, as EstimateTrainingMemoryBytes counts
// it: the im2col chunk, its gradient and the output chunk at Conv2d's chunking bound, and dW
// over the padded K (K = kernel² · in_channels rounded up to 16).
int64_t Conv2dScratchFloats(int kernel_size, int in_channels, int out_channels, int out_height,
                            int out_width, int64_t batch);

// What one device round holds at its peak: EstimateTrainingMemoryBytes plus the round's
// three further copies of the parameters (the received model, the update Δ and its encoded
// payload). The coordinator picks tiers by it (SubModelConfig.ASSIGNMENT_LARGEST_FITTING)
// and the device checks its budget against it (client/memory_budget.h), so the two
// agree. -1 as EstimateTrainingMemoryBytes.
int64_t EstimateDeviceRoundMemoryBytes(const v1::ModelSpec& spec, int batch_size, bool adam);

// Memory of running `spec` as a distillation teacher at a batch size: 9 bytes per parameter
// (the received payload counted as float32, the fp32 weights, their int8 or int4 copy) and
// one batch of fp32 activations (input and every layer's output). -1 for a spec
// Sequential::Create would refuse, or batch_size < 1.
int64_t EstimateTeacherMemoryBytes(const v1::ModelSpec& spec, int batch_size);

}  // namespace fedge::model

#endif  // FEDGE_MODEL_SUBMODEL_SLICER_H_

// A sequential network built from a ModelSpec (proto/model.proto): layers, parameters,
// activation buffers, forward and backward passes, and conversion to and from ModelProto.
//
// Thread safety: none; one Sequential per training thread.
#ifndef FEDGE_MODEL_SEQUENTIAL_H_
#define FEDGE_MODEL_SEQUENTIAL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/layer.h"
#include "proto/model.pb.h"

namespace fedge::model {

// Limits on what a spec may ask for (specs arrive over the network).
inline constexpr int kMaxLayers = 256;
inline constexpr int64_t kMaxParameters = int64_t{1} << 28;      // 1 GiB of fp32
inline constexpr int64_t kMaxActivationsPerExample = int64_t{1} << 24;

// The parameters `layer` holds, from its spec alone (nothing is built or allocated):
// saturates at INT64_MAX for absurd sizes instead of overflowing. `channels` is the input's
// last dimension (batch norm's size); layers without parameters count 0.
int64_t LayerParameterCount(const v1::LayerSpec& layer, int64_t channels);
// Σ LayerParameterCount over `spec`'s layers (batch norm counted at its input's channels
// when they follow from the spec alone, else at the largest dimension allowed), saturating.
// What a validator checks before Sequential::Create allocates anything.
int64_t SpecParameterCount(const v1::ModelSpec& spec);

class Sequential {
 public:
  // Validates the spec (shapes chain, sizes bounded, names unique) and builds the layers.
  // Parameters start at zero: call InitParameters or SetParameters.
  static absl::StatusOr<std::unique_ptr<Sequential>> Create(const v1::ModelSpec& spec);
  // Create + SetParameters.
  static absl::StatusOr<std::unique_ptr<Sequential>> FromProto(const v1::ModelProto& proto);

  // PyTorch's default initialization: weights and biases ~ U(−1/√fan_in, 1/√fan_in);
  // embeddings ~ N(0, 1); batch norm γ = 1, β = 0, running mean 0, variance 1. A layer
  // whose spec sets init_std > 0 takes DCGAN's weights_init instead (conv weights
  // N(0, std²) and zero bias; batch norm γ ~ N(1, std²)). Deterministic for a seed.
  void InitParameters(uint64_t seed);

  // Copies parameter values from `proto`: every parameter of this model must be present
  // exactly once with the same shape and finite values; unknown names are errors.
  absl::Status SetParameters(const v1::ModelProto& proto);
  v1::ModelProto ToProto() const;

  // Runs the network on x [batch × input_size]. Returns the output [batch × output_size],
  // valid until the next Forward. With `training`, keeps what Backward needs; x must stay
  // alive and unchanged until then.
  const float* Forward(const float* x, int batch, ComputeMode mode, bool training);

  // Back-propagates dL/doutput [batch × output_size] of the last training Forward, adding
  // into every parameter's grad (call ZeroGrad first). When `dinput` is not null it receives
  // dL/dinput [batch × input_size] (e.g. to train a generator that feeds this network).
  void Backward(const float* doutput, float* dinput = nullptr);

  void ZeroGrad();
  std::vector<Parameter*> parameters();
  Parameter* FindParameter(const std::string& name);
  int64_t num_parameters() const;

  const v1::ModelSpec& spec() const { return spec_; }
  int input_size() const { return input_size_; }
  int output_size() const { return output_size_; }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  Layer& layer(int i) { return *layers_[i]; }

 private:
  Sequential() = default;
  void EnsureBuffers(int batch);

  v1::ModelSpec spec_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<Parameter*> params_;
  int input_size_ = 0;
  int output_size_ = 0;
  int max_activation_ = 0;
  int buffer_batch_ = 0;
  int last_batch_ = 0;
  const float* last_input_ = nullptr;
  std::vector<std::vector<float>> acts_;  // acts_[i] = output of layer i
  std::vector<float> grad_a_, grad_b_;    // ping-pong gradient buffers
};

}  // namespace fedge::model

#endif  // FEDGE_MODEL_SEQUENTIAL_H_

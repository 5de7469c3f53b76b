// A network conditioned on a class label: out = body([x ‖ embed[y]]), the label's learned
// embedding row concatenated after the input; or, for a body taking [H, W, C + embed_dim],
// after the C channels of each of x's H·W positions (x is [H, W, C], NHWC: the paper's
// convolutional D sees the embedding as extra feature maps). FedCG (Wu et al., IJCAI 2022) uses it twice:
// the conditional generator G(z, y) (noise → feature) and the discriminator D(f, y)
// (feature → real/fake logit).
//
// Parameters: "<name>.embed.weight" [num_classes, embed_dim], then the body's (named by the
// body spec's layer names, e.g. "G.fc1.weight").
//
// Thread safety: none; one ConditionalNet per training thread.
#ifndef FEDGE_MODEL_CONDITIONAL_NET_H_
#define FEDGE_MODEL_CONDITIONAL_NET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/layer.h"
#include "model/sequential.h"
#include "proto/model.pb.h"

namespace fedge::model {

class ConditionalNet {
 public:
  // `body` must take a 1-D input of input_size + embed_dim floats, or [H, W, C + embed_dim]
  // with H·W·C = input_size.
  // Errors (kInvalidArgument): non-positive sizes, an invalid body spec, a body whose input
  // is not [input_size + embed_dim].
  static absl::StatusOr<std::unique_ptr<ConditionalNet>> Create(const std::string& name,
                                                                int input_size, int num_classes,
                                                                int embed_dim,
                                                                const v1::ModelSpec& body);

  // Embedding ~ N(0, 1), the body as Sequential::InitParameters. Deterministic for a seed.
  void InitParameters(uint64_t seed);

  // out[batch × output_size] for x[batch × input_size] and labels in [0, num_classes).
  // Valid until the next Forward. With `training`, keeps what Backward needs (x may change
  // afterwards: the concatenated input is copied).
  // REQUIRES: labels in range (aborts otherwise).
  const float* Forward(const float* x, const int32_t* labels, int batch, bool training);

  // Adds dL/dθ for the body and the embedding rows used; writes dL/dx [batch × input_size]
  // when dx is not null. REQUIRES: the last Forward was a training one.
  void Backward(const float* doutput, float* dx = nullptr);

  void ZeroGrad();
  std::vector<Parameter*> parameters();

  int input_size() const { return input_size_; }
  int output_size() const { return body_->output_size(); }
  int num_classes() const { return num_classes_; }
  int embed_dim() const { return embed_dim_; }
  Sequential& body() { return *body_; }
  Parameter& embedding() { return embed_; }

 private:
  ConditionalNet() = default;

  int input_size_ = 0, num_classes_ = 0, embed_dim_ = 0;
  int positions_ = 1, in_channels_ = 0;  // x is [positions_, in_channels_]
  Parameter embed_;
  std::unique_ptr<Sequential> body_;
  int last_batch_ = 0;
  std::vector<float> concat_;      // [batch × (input_size + embed_dim)]
  std::vector<float> dconcat_;
  std::vector<int32_t> labels_;
};

}  // namespace fedge::model

#endif  // FEDGE_MODEL_CONDITIONAL_NET_H_

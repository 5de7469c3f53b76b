#include "model/conditional_net.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/rng.h"
#include "base/status_macros.h"

namespace fedge::model {

absl::StatusOr<std::unique_ptr<ConditionalNet>> ConditionalNet::Create(
    const std::string& name, int input_size, int num_classes, int embed_dim,
    const v1::ModelSpec& body) {
  if (input_size <= 0 || num_classes <= 0 || embed_dim <= 0 || input_size > (1 << 20) ||
      num_classes > (1 << 20) || embed_dim > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ConditionalNet '", name, "': input_size, num_classes and embed_dim must be in [1, 2^20]"));
  }
  std::unique_ptr<ConditionalNet> net(new ConditionalNet);
  FEDGE_ASSIGN_OR_RETURN(net->body_, Sequential::Create(body));
  // Body input [input_size + embed_dim] (one position), or [H, W, Cx + embed_dim] with
  // H·W·Cx = input_size (the embedding repeated at each of the H·W positions).
  const int dims = body.input_shape_size();
  int positions = 1;
  if (dims == 3) positions = body.input_shape(0) * body.input_shape(1);
  const int in_channels = positions > 0 ? input_size / positions : 0;
  const bool fits =
      (dims == 1 && body.input_shape(0) == input_size + embed_dim) ||
      (dims == 3 && positions > 0 && in_channels * positions == input_size &&
       body.input_shape(2) == in_channels + embed_dim);
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ConditionalNet '", name, "': body input must be [", input_size + embed_dim,
        "] (input ", input_size, " + embedding ", embed_dim,
        ") or [H, W, C + ", embed_dim, "] with H·W·C = ", input_size));
  }
  net->positions_ = positions;
  net->in_channels_ = in_channels;
  net->input_size_ = input_size;
  net->num_classes_ = num_classes;
  net->embed_dim_ = embed_dim;
  net->embed_.name = absl::StrCat(name, ".embed.weight");
  net->embed_.shape = {num_classes, embed_dim};
  net->embed_.value.assign(static_cast<size_t>(num_classes) * embed_dim, 0.0f);
  net->embed_.grad.assign(net->embed_.value.size(), 0.0f);
  return net;
}

void ConditionalNet::InitParameters(uint64_t seed) {
  base::Rng rng(seed, /*stream=*/1);
  for (float& v : embed_.value) v = static_cast<float>(rng.Normal());
  ++embed_.version;
  body_->InitParameters(seed);
}

const float* ConditionalNet::Forward(const float* x, const int32_t* labels, int batch,
                                     bool training) {
  const int cx = in_channels_, width = cx + embed_dim_;
  concat_.resize(static_cast<size_t>(batch) * positions_ * width);
  labels_.assign(labels, labels + batch);
  for (int b = 0; b < batch; ++b) {
    FEDGE_CHECK(labels[b] >= 0 && labels[b] < num_classes_);
    const float* e = embed_.value.data() + static_cast<size_t>(labels[b]) * embed_dim_;
    for (int p = 0; p < positions_; ++p) {
      const size_t at = static_cast<size_t>(b) * positions_ + p;
      float* row = concat_.data() + at * width;
      std::memcpy(row, x + at * cx, sizeof(float) * cx);
      std::memcpy(row + cx, e, sizeof(float) * embed_dim_);
    }
  }
  last_batch_ = batch;
  return body_->Forward(concat_.data(), batch, ComputeMode::kFp32, training);
}

void ConditionalNet::Backward(const float* doutput, float* dx) {
  const int cx = in_channels_, width = cx + embed_dim_;
  dconcat_.resize(static_cast<size_t>(last_batch_) * positions_ * width);
  body_->Backward(doutput, dconcat_.data());
  for (int b = 0; b < last_batch_; ++b) {
    float* g = embed_.grad.data() + static_cast<size_t>(labels_[b]) * embed_dim_;
    for (int p = 0; p < positions_; ++p) {
      const size_t at = static_cast<size_t>(b) * positions_ + p;
      const float* d = dconcat_.data() + at * width;
      if (dx != nullptr) std::memcpy(dx + at * cx, d, sizeof(float) * cx);
      for (int j = 0; j < embed_dim_; ++j) g[j] += d[cx + j];
    }
  }
}

void ConditionalNet::ZeroGrad() {
  std::fill(embed_.grad.begin(), embed_.grad.end(), 0.0f);
  body_->ZeroGrad();
}

std::vector<Parameter*> ConditionalNet::parameters() {
  std::vector<Parameter*> ps = {&embed_};
  for (Parameter* p : body_->parameters()) ps.push_back(p);
  return ps;
}

}  // namespace fedge::model

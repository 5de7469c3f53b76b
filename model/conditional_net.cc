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
  if (net->body_->input_size() != input_size + embed_dim ||
      body.input_shape_size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ConditionalNet '", name, "': body input must be [",
                     input_size + embed_dim, "] (input ", input_size, " + embedding ",
                     embed_dim, ")"));
  }
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
  const int width = input_size_ + embed_dim_;
  concat_.resize(static_cast<size_t>(batch) * width);
  labels_.assign(labels, labels + batch);
  for (int b = 0; b < batch; ++b) {
    FEDGE_CHECK(labels[b] >= 0 && labels[b] < num_classes_);
    float* row = concat_.data() + static_cast<size_t>(b) * width;
    std::memcpy(row, x + static_cast<size_t>(b) * input_size_, sizeof(float) * input_size_);
    std::memcpy(row + input_size_,
                embed_.value.data() + static_cast<size_t>(labels[b]) * embed_dim_,
                sizeof(float) * embed_dim_);
  }
  last_batch_ = batch;
  return body_->Forward(concat_.data(), batch, ComputeMode::kFp32, training);
}

void ConditionalNet::Backward(const float* doutput, float* dx) {
  const int width = input_size_ + embed_dim_;
  dconcat_.resize(static_cast<size_t>(last_batch_) * width);
  body_->Backward(doutput, dconcat_.data());
  for (int b = 0; b < last_batch_; ++b) {
    const float* d = dconcat_.data() + static_cast<size_t>(b) * width;
    if (dx != nullptr) {
      std::memcpy(dx + static_cast<size_t>(b) * input_size_, d, sizeof(float) * input_size_);
    }
    float* g = embed_.grad.data() + static_cast<size_t>(labels_[b]) * embed_dim_;
    for (int j = 0; j < embed_dim_; ++j) g[j] += d[input_size_ + j];
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

// Embedding: a lookup table from integer ids to vectors.
#include "model/layers.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "base/status_macros.h"

namespace fedge::model {

Embedding::Embedding(std::string name, int count, int num_embeddings, int dim)
    : Layer(name, {count}, {count, dim}),
      count_(count),
      num_(num_embeddings),
      dim_(dim),
      weight_(MakeParameter(name + ".weight", {num_embeddings, dim})) {}

void Embedding::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  for (int i = 0; i < batch * count_; ++i) {
    const int id = static_cast<int>(x[i]);
    FEDGE_CHECK(id >= 0 && id < num_);
    std::memcpy(y + static_cast<size_t>(i) * dim_,
                weight_.value.data() + static_cast<size_t>(id) * dim_, sizeof(float) * dim_);
  }
}

void Embedding::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  for (int i = 0; i < batch * count_; ++i) {
    const int id = static_cast<int>(x[i]);
    float* g = weight_.grad.data() + static_cast<size_t>(id) * dim_;
    const float* d = dy + static_cast<size_t>(i) * dim_;
    for (int j = 0; j < dim_; ++j) g[j] += d[j];
  }
  if (dx != nullptr) std::fill(dx, dx + static_cast<size_t>(batch) * count_, 0.0f);
}

}  // namespace fedge::model

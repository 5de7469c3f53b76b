#include "data/batcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/rng.h"
#include "base/status_macros.h"

namespace fedge::data {

Batcher::Batcher(const Dataset& data, std::vector<int> indices, int batch_size, bool shuffle,
                 uint64_t seed, bool drop_last)
    : data_(&data),
      indices_(std::move(indices)),
      batch_size_(batch_size),
      shuffle_(shuffle),
      seed_(seed),
      drop_last_(drop_last),
      feature_size_(data.feature_size()) {
  FEDGE_CHECK(batch_size_ > 0);
  for (int i : indices_) FEDGE_CHECK(i >= 0 && i < data.num_examples);
  StartEpoch(0);
}

absl::StatusOr<std::unique_ptr<Batcher>> Batcher::Create(const Dataset& data,
                                                         std::vector<int> indices, int batch_size,
                                                         bool shuffle, uint64_t seed,
                                                         bool drop_last) {
  if (batch_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("Batcher: batch_size is ", batch_size));
  }
  FEDGE_RETURN_IF_ERROR(ValidateDataset(data));
  for (size_t k = 0; k < indices.size(); ++k) {
    if (indices[k] < 0 || indices[k] >= data.num_examples) {
      return absl::InvalidArgumentError(absl::StrCat("Batcher: index ", k, " is ", indices[k],
                                                     ", outside [0, ", data.num_examples, ")"));
    }
  }
  return std::make_unique<Batcher>(data, std::move(indices), batch_size, shuffle, seed, drop_last);
}

void Batcher::StartEpoch(int64_t epoch) {
  FEDGE_CHECK(epoch >= 0);
  epoch_ = epoch;
  cursor_ = 0;
  order_ = indices_;
  if (shuffle_) {
    base::Rng rng(seed_, static_cast<uint64_t>(epoch));
    rng.Shuffle(order_);
  }
}

int Batcher::num_batches() const {
  const size_t n = indices_.size(), b = static_cast<size_t>(batch_size_);
  return static_cast<int>(drop_last_ ? n / b : (n + b - 1) / b);
}

bool Batcher::Next(Batch* out) {
  const size_t remaining = order_.size() - cursor_;
  if (remaining == 0) return false;
  const size_t size = std::min(remaining, static_cast<size_t>(batch_size_));
  if (drop_last_ && size < static_cast<size_t>(batch_size_)) {
    cursor_ = order_.size();
    return false;
  }
  out->size = static_cast<int>(size);
  out->features.resize(size * feature_size_);
  out->labels.resize(size);
  out->indices.assign(order_.begin() + cursor_, order_.begin() + cursor_ + size);
  for (size_t k = 0; k < size; ++k) {
    const int i = out->indices[k];
    data_->CopyExample(i, out->features.data() + k * feature_size_);  // float or 8-bit storage
    out->labels[k] = data_->label(i);
  }
  cursor_ += size;
  return true;
}

}  // namespace fedge::data

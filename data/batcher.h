// Mini-batches over a Dataset (or over a subset of its examples), for local training.
//
//   Batcher batcher(train, parts[client], /*batch_size=*/32, /*shuffle=*/true, seed);
//   Batch batch;
//   for (int e = 0; e < epochs; ++e, batcher.NextEpoch()) {
//     while (batcher.Next(&batch)) {
//       // batch.features: batch.size × batcher.feature_size() floats, row-major
//       // batch.labels:   batch.size labels
//     }
//   }
//
// Epoch e visits the given indices in the order of a Fisher-Yates shuffle by
// base::Rng(seed, e) (or in the given order without shuffle), so an epoch's order depends
// only on (indices, seed, e): reproducible on every platform and across restarts
// (StartEpoch(e)). Each epoch visits every listed index exactly once (an index listed twice
// is visited twice). The last, partial batch is returned unless drop_last.
//
// Not thread-safe; the Batcher holds a pointer to `data`, which must outlive it.
#ifndef FEDGE_DATA_BATCHER_H_
#define FEDGE_DATA_BATCHER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"

namespace fedge::data {

// One mini-batch. Next() resizes the vectors, so a Batch reused across calls keeps its
// capacity and stops allocating after the first full batch.
struct Batch {
  int size = 0;                 // examples in this batch
  std::vector<float> features;  // size × feature_size, example-major, each row-major
  std::vector<int32_t> labels;  // size labels
  std::vector<int> indices;     // the dataset index of each example
};

class Batcher {
 public:
  // REQUIRES: batch_size > 0 and every index in [0, data.num_examples) (aborts otherwise;
  // use Create() for unchecked inputs). Starts at epoch 0.
  Batcher(const Dataset& data, std::vector<int> indices, int batch_size, bool shuffle,
          uint64_t seed, bool drop_last = false);

  // As the constructor, with kInvalidArgument ("Batcher: ...") instead of aborting.
  static absl::StatusOr<std::unique_ptr<Batcher>> Create(const Dataset& data,
                                                         std::vector<int> indices, int batch_size,
                                                         bool shuffle, uint64_t seed,
                                                         bool drop_last = false);

  // Fills *out with the next batch of the current epoch and returns true; returns false
  // (leaving *out untouched) when the epoch is exhausted.
  bool Next(Batch* out);

  // Starts the next epoch (reshuffled with Rng(seed, epoch + 1)).
  void NextEpoch() { StartEpoch(epoch_ + 1); }
  // Starts epoch `epoch` from its first batch. REQUIRES: epoch >= 0.
  void StartEpoch(int64_t epoch);

  int64_t epoch() const { return epoch_; }
  // Batches per epoch: ceil(n / batch_size), or floor(n / batch_size) with drop_last.
  int num_batches() const;
  int num_examples() const { return static_cast<int>(indices_.size()); }
  int batch_size() const { return batch_size_; }
  size_t feature_size() const { return feature_size_; }
  // The current epoch's visiting order.
  const std::vector<int>& order() const { return order_; }

 private:
  const Dataset* data_;
  std::vector<int> indices_;  // as given
  std::vector<int> order_;    // this epoch's order
  int batch_size_;
  bool shuffle_;
  uint64_t seed_;
  bool drop_last_;
  size_t feature_size_;
  int64_t epoch_ = 0;
  size_t cursor_ = 0;  // next position in order_
};

}  // namespace fedge::data

#endif  // FEDGE_DATA_BATCHER_H_

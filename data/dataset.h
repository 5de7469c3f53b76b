// An in-memory labelled dataset: every example is a dense float tensor of the same shape.
//
//   Dataset d = ...;                      // e.g. from LoadIdxDataset() or ReadShard()
//   const float* x = d.example(3);        // d.feature_size() floats, row-major in d.shape
//   int32_t y = d.label(3);               // in [0, d.num_classes)
//   Dataset part = Subset(d, {3, 1, 4});  // copies examples 3, 1, 4 in that order
//
// Datasets are plain values (copyable, movable); they own their storage.
#ifndef FEDGE_DATA_DATASET_H_
#define FEDGE_DATA_DATASET_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace fedge::data {

struct Dataset {
  int num_examples = 0;
  // Per-example shape, e.g. {1, 28, 28} (channels, rows, cols) for a grey image.
  std::vector<int> shape;
  // num_examples × feature_size() floats, example-major, each example row-major in `shape`.
  std::vector<float> features;
  // num_examples labels in [0, num_classes).
  std::vector<int32_t> labels;
  int num_classes = 0;

  // Floats per example: the product of `shape` (1 for an empty shape).
  size_t feature_size() const {
    size_t n = 1;
    for (int d : shape) n *= static_cast<size_t>(d);
    return n;
  }
  // REQUIRES: 0 <= i < num_examples.
  const float* example(int i) const {
    return features.data() + static_cast<size_t>(i) * feature_size();
  }
  float* mutable_example(int i) {
    return features.data() + static_cast<size_t>(i) * feature_size();
  }
  int32_t label(int i) const { return labels[static_cast<size_t>(i)]; }
};

// OK if the fields agree with each other: num_examples >= 0, every dimension > 0,
// features.size() == num_examples × feature_size(), labels.size() == num_examples,
// num_classes > 0 and every label in [0, num_classes). Otherwise kInvalidArgument
// ("Dataset: ...").
absl::Status ValidateDataset(const Dataset& data);

// A dataset holding copies of data's examples `indices`, in that order (repeats allowed).
// shape and num_classes are copied.
// REQUIRES: every index in [0, data.num_examples) (aborts otherwise: a caller bug).
Dataset Subset(const Dataset& data, const std::vector<int>& indices);

// Every label y becomes num_classes − 1 − y: the data of a label-flipping hostile device
// (sim/attacks.h, partition_fmnist --label-flip), for measuring the defences against it.
void FlipLabels(Dataset& data);

// {0, 1, ..., data.num_examples - 1}: the index list covering the whole dataset.
std::vector<int> AllIndices(const Dataset& data);

// features ← (features − mean) / stddev, in place. REQUIRES: stddev > 0.
void Standardize(Dataset& data, float mean, float stddev);

}  // namespace fedge::data

#endif  // FEDGE_DATA_DATASET_H_

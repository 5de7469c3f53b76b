// An in-memory labelled dataset: every example is a dense float tensor of the same shape.
//
//   Dataset d = ...;                      // e.g. from LoadIdxDataset() or ReadShard()
//   const float* x = d.example(3);        // d.feature_size() floats, row-major in d.shape
//   int32_t y = d.label(3);               // in [0, d.num_classes)
//   Dataset part = Subset(d, {3, 1, 4});  // copies examples 3, 1, 4 in that order
//
// Datasets are plain values (copyable, movable); they own their storage.
//
// 8-bit storage: a dataset of 8-bit images in [0, 1] (IDX bytes / 255, shards of them) may
// hold one byte per value instead of a float (features_u8, with `features` empty): a quarter
// of the memory. CompactToU8 makes one when every value is exactly c · (1/255) in float (as
// LoadIdxDataset makes them); ReadShard
// reads one directly when asked (data/shard.h). Such a dataset's values are read with
// CopyExample (the Batcher and Evaluate do), or ToFloat converts it; example() and
// mutable_example() need float storage (they abort otherwise).
#ifndef FEDGE_DATA_DATASET_H_
#define FEDGE_DATA_DATASET_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "base/status_macros.h"

namespace fedge::data {

struct Dataset {
  int num_examples = 0;
  // Per-example shape, e.g. {1, 28, 28} (channels, rows, cols) for a grey image.
  std::vector<int> shape;
  // num_examples × feature_size() floats, example-major, each example row-major in `shape`.
  std::vector<float> features;
  // Or, with `features` empty: num_examples × feature_size() codes c, each standing for the
  // float U8Value(c) = c · (1/255).
  std::vector<uint8_t> features_u8;
  // num_examples labels in [0, num_classes).
  std::vector<int32_t> labels;
  int num_classes = 0;

  // Floats per example: the product of `shape` (1 for an empty shape).
  size_t feature_size() const {
    size_t n = 1;
    for (int d : shape) n *= static_cast<size_t>(d);
    return n;
  }
  bool is_u8() const { return !features_u8.empty(); }
  // REQUIRES: 0 <= i < num_examples, float storage.
  const float* example(int i) const {
    FEDGE_CHECK(!is_u8());
    return features.data() + static_cast<size_t>(i) * feature_size();
  }
  float* mutable_example(int i) {
    FEDGE_CHECK(!is_u8());
    return features.data() + static_cast<size_t>(i) * feature_size();
  }
  // Example i's feature_size() values as floats into `out`, from either storage.
  void CopyExample(int i, float* out) const;
  int32_t label(int i) const { return labels[static_cast<size_t>(i)]; }
};

// OK if the fields agree with each other: num_examples >= 0, every dimension > 0,
// features.size() == num_examples × feature_size(), labels.size() == num_examples,
// num_classes > 0 and every label in [0, num_classes). Otherwise kInvalidArgument
// ("Dataset: ...").
absl::Status ValidateDataset(const Dataset& data);

// c · (1.0f / 255.0f) in float: the value of 8-bit code c (LoadIdxDataset's pixel values).
float U8Value(uint8_t c);
// True, with the code, when v is exactly U8Value(code) (bit for bit: not -0, not NaN).
bool U8Code(float v, uint8_t* code);
// Moves float features to 8-bit storage when every value is exactly a code; false (and
// nothing changed) otherwise, or when the dataset is empty or already 8-bit.
bool CompactToU8(Dataset& data);
// Moves 8-bit storage back to floats (nothing to do for float storage).
void ToFloat(Dataset& data);

// A dataset holding copies of data's examples `indices`, in that order (repeats allowed).
// shape, num_classes and the storage kind are kept.
// REQUIRES: every index in [0, data.num_examples) (aborts otherwise: a caller bug).
Dataset Subset(const Dataset& data, const std::vector<int>& indices);

// Every label y becomes num_classes − 1 − y: the data of a label-flipping hostile device
// (sim/attacks.h, partition_fmnist --label-flip), for measuring the defences against it.
void FlipLabels(Dataset& data);

// {0, 1, ..., data.num_examples - 1}: the index list covering the whole dataset.
std::vector<int> AllIndices(const Dataset& data);

// features ← (features − mean) / stddev, in place (8-bit storage becomes float). REQUIRES:
// stddev > 0.
void Standardize(Dataset& data, float mean, float stddev);

}  // namespace fedge::data

#endif  // FEDGE_DATA_DATASET_H_

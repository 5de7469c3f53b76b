// Small generated data for coordinator and client tests (docs/architecture.md, Data: unit
// tests use small generated data): a separable problem where class c lifts the features j
// with j % classes == c, plus N(0, 0.7²) noise; and band images for FedCG. Deterministic
// for a seed.
#ifndef FEDGE_TESTS_SYNTHETIC_DATA_H_
#define FEDGE_TESTS_SYNTHETIC_DATA_H_

#include <cstdint>

#include "base/rng.h"
#include "data/dataset.h"

namespace fedge::testing {

inline data::Dataset SeparableData(int n, int features, int classes, uint64_t seed) {
  base::Rng rng(seed);
  data::Dataset d;
  d.num_examples = n;
  d.shape = {features};
  d.num_classes = classes;
  d.features.resize(static_cast<size_t>(n) * features);
  d.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    d.labels[i] = static_cast<int32_t>(rng.UniformInt(static_cast<uint64_t>(classes)));
    for (int j = 0; j < features; ++j) {
      d.features[static_cast<size_t>(i) * features + j] =
          static_cast<float>(rng.Normal() * 0.7 + (j % classes == d.labels[i] ? 1.0 : 0.0));
    }
  }
  return d;
}

// Grey 28×28 images [1, 28, 28] with pixels in [0, 1], as shards hold them (FedCG tests):
// class c brightens the band of rows [9c, 9c + 9) (classes ≤ 3), on U[0, 0.2] noise.
inline data::Dataset BandImages(int n, int classes, uint64_t seed) {
  base::Rng rng(seed);
  data::Dataset d;
  d.num_examples = n;
  d.shape = {1, 28, 28};
  d.num_classes = classes;
  d.features.resize(static_cast<size_t>(n) * 28 * 28);
  d.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    const int c = i % classes;
    d.labels[i] = c;
    for (int y = 0; y < 28; ++y) {
      for (int x = 0; x < 28; ++x) {
        const double band = y >= 9 * c && y < 9 * c + 9 ? 0.7 : 0.0;
        d.features[static_cast<size_t>(i) * 784 + y * 28 + x] =
            static_cast<float>(band + 0.2 * rng.Uniform());
      }
    }
  }
  return d;
}

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_SYNTHETIC_DATA_H_

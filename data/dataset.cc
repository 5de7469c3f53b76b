#include "data/dataset.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace fedge::data {

absl::Status ValidateDataset(const Dataset& data) {
  if (data.num_examples < 0) {
    return absl::InvalidArgumentError(absl::StrCat("Dataset: num_examples is ", data.num_examples));
  }
  for (size_t i = 0; i < data.shape.size(); ++i) {
    if (data.shape[i] <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Dataset: shape dimension ", i, " is ", data.shape[i]));
    }
  }
  const size_t expected = static_cast<size_t>(data.num_examples) * data.feature_size();
  if (data.features.size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("Dataset: ", data.features.size(), " feature values, expected ", expected));
  }
  if (data.labels.size() != static_cast<size_t>(data.num_examples)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Dataset: ", data.labels.size(), " labels, expected ", data.num_examples));
  }
  if (data.num_classes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("Dataset: num_classes is ", data.num_classes));
  }
  for (size_t i = 0; i < data.labels.size(); ++i) {
    if (data.labels[i] < 0 || data.labels[i] >= data.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat("Dataset: label of example ", i, " is ",
                                                     data.labels[i], ", outside [0, ",
                                                     data.num_classes, ")"));
    }
  }
  return absl::OkStatus();
}

void FlipLabels(Dataset& data) {
  for (int32_t& y : data.labels) y = data.num_classes - 1 - y;
}

Dataset Subset(const Dataset& data, const std::vector<int>& indices) {
  Dataset out;
  out.num_examples = static_cast<int>(indices.size());
  out.shape = data.shape;
  out.num_classes = data.num_classes;
  const size_t fs = data.feature_size();
  out.features.resize(indices.size() * fs);
  out.labels.resize(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    const int i = indices[k];
    FEDGE_CHECK(i >= 0 && i < data.num_examples);
    std::copy_n(data.example(i), fs, out.features.data() + k * fs);
    out.labels[k] = data.label(i);
  }
  return out;
}

std::vector<int> AllIndices(const Dataset& data) {
  std::vector<int> v(static_cast<size_t>(std::max(data.num_examples, 0)));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

void Standardize(Dataset& data, float mean, float stddev) {
  FEDGE_CHECK(stddev > 0.0f);
  const float inv = 1.0f / stddev;
  for (float& v : data.features) v = (v - mean) * inv;
}

}  // namespace fedge::data

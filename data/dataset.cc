#include "data/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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
  if (data.is_u8() && !data.features.empty()) {
    return absl::InvalidArgumentError("Dataset: both float and 8-bit features");
  }
  const size_t held = data.is_u8() ? data.features_u8.size() : data.features.size();
  if (held != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("Dataset: ", held, " feature values, expected ", expected));
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

namespace {

struct U8Table {
  float v[256];
  U8Table() {
    for (int c = 0; c < 256; ++c) v[c] = static_cast<float>(c) * (1.0f / 255.0f);  // as LoadIdxDataset
  }
};
const U8Table& Table() {
  static const U8Table table;
  return table;
}

}  // namespace

float U8Value(uint8_t c) { return Table().v[c]; }

bool U8Code(float v, uint8_t* code) {
  if (!(v >= 0.0f && v <= 1.0f)) return false;
  const long c = std::lrint(v * 255.0f);
  const float back = Table().v[c];
  if (std::memcmp(&back, &v, sizeof(float)) != 0) return false;  // also tells -0 from +0
  *code = static_cast<uint8_t>(c);
  return true;
}

void Dataset::CopyExample(int i, float* out) const {
  const size_t fs = feature_size(), at = static_cast<size_t>(i) * fs;
  if (!is_u8()) {
    std::copy_n(features.data() + at, fs, out);
    return;
  }
  const float* table = Table().v;
  const uint8_t* c = features_u8.data() + at;
  for (size_t j = 0; j < fs; ++j) out[j] = table[c[j]];
}

bool CompactToU8(Dataset& data) {
  if (data.is_u8() || data.features.empty()) return false;
  std::vector<uint8_t> codes(data.features.size());
  for (size_t i = 0; i < codes.size(); ++i) {
    if (!U8Code(data.features[i], &codes[i])) return false;
  }
  data.features_u8 = std::move(codes);
  std::vector<float>().swap(data.features);
  return true;
}

void ToFloat(Dataset& data) {
  if (!data.is_u8()) return;
  const float* table = Table().v;
  data.features.resize(data.features_u8.size());
  for (size_t i = 0; i < data.features_u8.size(); ++i) data.features[i] = table[data.features_u8[i]];
  std::vector<uint8_t>().swap(data.features_u8);
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
  if (data.is_u8()) {
    out.features_u8.resize(indices.size() * fs);
  } else {
    out.features.resize(indices.size() * fs);
  }
  out.labels.resize(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    const int i = indices[k];
    FEDGE_CHECK(i >= 0 && i < data.num_examples);
    if (data.is_u8()) {
      std::copy_n(data.features_u8.data() + static_cast<size_t>(i) * fs, fs,
                  out.features_u8.data() + k * fs);
    } else {
      std::copy_n(data.example(i), fs, out.features.data() + k * fs);
    }
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
  ToFloat(data);
  const float inv = 1.0f / stddev;
  for (float& v : data.features) v = (v - mean) * inv;
}

}  // namespace fedge::data

#include "data/image_transform.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedge::data {

absl::StatusOr<Dataset> ResizeImages(const Dataset& in, int size) {
  if (in.shape.size() != 3 || size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ResizeImages: expected images [channels, rows, cols] and a size >= 1, got [",
                     absl::StrJoin(in.shape, ", "), "] and ", size));
  }
  const int c = in.shape[0], h = in.shape[1], w = in.shape[2];
  Dataset out;
  out.num_examples = in.num_examples;
  out.shape = {c, size, size};
  out.num_classes = in.num_classes;
  out.labels = in.labels;
  out.features.resize(static_cast<size_t>(in.num_examples) * c * size * size);
  const float sy = static_cast<float>(h) / size, sx = static_cast<float>(w) / size;
  for (int e = 0; e < in.num_examples; ++e) {
    for (int ch = 0; ch < c; ++ch) {
      const float* src = in.example(e) + static_cast<size_t>(ch) * h * w;
      float* dst = out.mutable_example(e) + static_cast<size_t>(ch) * size * size;
      for (int oy = 0; oy < size; ++oy) {
        const float fy = std::clamp((oy + 0.5f) * sy - 0.5f, 0.0f, static_cast<float>(h - 1));
        const int y0 = static_cast<int>(fy), y1 = std::min(y0 + 1, h - 1);
        const float wy = fy - y0;
        for (int ox = 0; ox < size; ++ox) {
          const float fx = std::clamp((ox + 0.5f) * sx - 0.5f, 0.0f, static_cast<float>(w - 1));
          const int x0 = static_cast<int>(fx), x1 = std::min(x0 + 1, w - 1);
          const float wx = fx - x0;
          dst[oy * size + ox] =
              (1 - wy) * ((1 - wx) * src[y0 * w + x0] + wx * src[y0 * w + x1]) +
              wy * ((1 - wx) * src[y1 * w + x0] + wx * src[y1 * w + x1]);
        }
      }
    }
  }
  return out;
}

void ScaleToSymmetricRange(Dataset& data) {
  for (float& x : data.features) x = (x - 0.5f) / 0.5f;
}

absl::Status ToChannelsLast(Dataset& data) {
  if (data.shape.size() != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ToChannelsLast: expected images [channels, rows, cols], got [",
        absl::StrJoin(data.shape, ", "), "]"));
  }
  const int c = data.shape[0], h = data.shape[1], w = data.shape[2];
  data.shape = {h, w, c};
  if (c == 1) return absl::OkStatus();
  const size_t n = data.feature_size();
  std::vector<float> tmp(n);
  for (int e = 0; e < data.num_examples; ++e) {
    float* x = data.mutable_example(e);
    for (int ch = 0; ch < c; ++ch) {
      for (int i = 0; i < h * w; ++i) tmp[static_cast<size_t>(i) * c + ch] = x[static_cast<size_t>(ch) * h * w + i];
    }
    std::copy(tmp.begin(), tmp.end(), x);
  }
  return absl::OkStatus();
}

}  // namespace fedge::data

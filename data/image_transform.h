// Image transforms on datasets of images stored [channels, rows, cols] per example (the
// layout of IDX data and shards): bilinear resizing as torchvision's Resize does it, and
// the [0, 1] → [−1, 1] normalization of Normalize(0.5, 0.5). FedCG brings
// Fashion-MNIST's 28×28 images to 32×32 with these, on devices, in fedge-sim and in
// examples/fedcg_inprocess alike.
#ifndef FEDGE_DATA_IMAGE_TRANSFORM_H_
#define FEDGE_DATA_IMAGE_TRANSFORM_H_

#include "absl/status/statusor.h"
#include "data/dataset.h"

namespace fedge::data {

// `in`'s images resized to size × size: bilinear interpolation with half-pixel centres and
// edge clamping (torchvision's Resize on tensors without antialiasing; for upscaling, as
// 28 → 32, the same as PIL's bilinear). Channels and labels are kept.
// Errors: kInvalidArgument when in.shape is not [channels, rows, cols] or size < 1.
absl::StatusOr<Dataset> ResizeImages(const Dataset& in, int size);

// x ← (x − 0.5) / 0.5: pixels in [0, 1] to [−1, 1], in place.
void ScaleToSymmetricRange(Dataset& data);

// [channels, rows, cols] → [rows, cols, channels] (the NHWC order of model/ convolutions);
// nothing to move for one channel. Errors: kInvalidArgument for a shape not of rank 3.
absl::Status ToChannelsLast(Dataset& data);

}  // namespace fedge::data

#endif  // FEDGE_DATA_IMAGE_TRANSFORM_H_

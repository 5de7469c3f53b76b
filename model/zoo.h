// Named architectures.
//   mlp: 784-200-200-10 with ReLU (input [784]).
//   cnn: NIID-Bench's SimpleCNNMNIST: conv 6@5×5, ReLU, max-pool 2, conv 16@5×5, ReLU,
//        max-pool 2, fc 120, ReLU, fc 84, ReLU, fc 10 (input [28, 28, 1], NHWC).
#ifndef FEDGE_MODEL_ZOO_H_
#define FEDGE_MODEL_ZOO_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/model.pb.h"

namespace fedge::model {

// A ReLU MLP with the given widths, widths[0] inputs and widths.back() outputs.
v1::ModelSpec MlpSpec(const std::vector<int>& widths, const std::string& name = "mlp");

// The SimpleCNN family on [height, width, channels] images: two 5×5 convolutions with
// `conv1` and `conv2` channels (each followed by ReLU and 2×2 max-pooling), then ReLU dense
// layers of widths `fc`, then `classes` outputs.
v1::ModelSpec SimpleCnnSpec(int height, int width, int channels, int conv1, int conv2,
                            const std::vector<int>& fc, int classes,
                            const std::string& name = "cnn");

// "mlp" or "cnn" for 28×28×1 images and 10 classes.
absl::StatusOr<v1::ModelSpec> ArchitectureByName(const std::string& name);

}  // namespace fedge::model

#endif  // FEDGE_MODEL_ZOO_H_

#include "model/zoo.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fedge::model {
namespace {

void AddDense(v1::ModelSpec& spec, const std::string& name, int in, int out) {
  v1::LayerSpec* l = spec.add_layers();
  l->set_name(name);
  l->mutable_dense()->set_in_features(in);
  l->mutable_dense()->set_out_features(out);
}

void AddRelu(v1::ModelSpec& spec, const std::string& name) {
  v1::LayerSpec* l = spec.add_layers();
  l->set_name(name);
  l->mutable_relu();
}

}  // namespace

v1::ModelSpec MlpSpec(const std::vector<int>& widths, const std::string& name) {
  v1::ModelSpec spec;
  spec.set_name(name);
  spec.add_input_shape(widths.front());
  for (size_t i = 1; i < widths.size(); ++i) {
    AddDense(spec, absl::StrCat("fc", i), widths[i - 1], widths[i]);
    if (i + 1 < widths.size()) AddRelu(spec, absl::StrCat("relu", i));
  }
  return spec;
}

v1::ModelSpec SimpleCnnSpec(int height, int width, int channels, int conv1, int conv2,
                            const std::vector<int>& fc, int classes, const std::string& name) {
  v1::ModelSpec spec;
  spec.set_name(name);
  spec.add_input_shape(height);
  spec.add_input_shape(width);
  spec.add_input_shape(channels);
  int h = height, w = width, c = channels;
  int index = 1;
  for (int out : {conv1, conv2}) {
    v1::LayerSpec* l = spec.add_layers();
    l->set_name(absl::StrCat("conv", index));
    auto* conv = l->mutable_conv2d();
    conv->set_in_channels(c);
    conv->set_out_channels(out);
    conv->set_kernel_size(5);
    AddRelu(spec, absl::StrCat("relu_conv", index));
    v1::LayerSpec* pool = spec.add_layers();
    pool->set_name(absl::StrCat("pool", index));
    pool->mutable_max_pool2d()->set_kernel_size(2);
    h = (h - 4) / 2;
    w = (w - 4) / 2;
    c = out;
    ++index;
  }
  spec.add_layers()->set_name("flatten");
  spec.mutable_layers(spec.layers_size() - 1)->mutable_flatten();
  int in = h * w * c;
  for (size_t i = 0; i < fc.size(); ++i) {
    AddDense(spec, absl::StrCat("fc", i + 1), in, fc[i]);
    AddRelu(spec, absl::StrCat("relu_fc", i + 1));
    in = fc[i];
  }
  AddDense(spec, absl::StrCat("fc", fc.size() + 1), in, classes);
  return spec;
}

absl::StatusOr<v1::ModelSpec> ArchitectureByName(const std::string& name) {
  if (name == "mlp") return MlpSpec({784, 200, 200, 10});
  if (name == "cnn") return SimpleCnnSpec(28, 28, 1, 6, 16, {120, 84}, 10);
  return absl::InvalidArgumentError(
      absl::StrCat("ArchitectureByName: unknown model '", name, "' (expected mlp or cnn)"));
}

}  // namespace fedge::model

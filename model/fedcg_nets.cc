#include "model/fedcg_nets.h"

#include <string>

namespace fedge::model {
namespace {

v1::LayerSpec* Add(v1::ModelSpec& spec, const std::string& name) {
  v1::LayerSpec* l = spec.add_layers();
  l->set_name(name);
  return l;
}

void AddDense(v1::ModelSpec& spec, const std::string& name, int in, int out) {
  auto* d = Add(spec, name)->mutable_dense();
  d->set_in_features(in);
  d->set_out_features(out);
}

void AddLeakyRelu(v1::ModelSpec& spec, const std::string& name) {
  Add(spec, name)->mutable_leaky_relu()->set_negative_slope(0.2f);
}

}  // namespace

FedCgShape FedCgShapeFromParams(const v1::FedCgParams& p) {
  FedCgShape shape;
  if (p.has_image_size()) shape.image_size = p.image_size();
  if (p.has_channels()) shape.channels = p.channels();
  if (p.has_num_classes()) shape.num_classes = p.num_classes();
  if (p.has_noise_dim()) shape.noise_dim = p.noise_dim();
  if (p.has_embed_dim()) shape.embed_dim = p.embed_dim();
  if (p.has_discriminator_spectral_norm()) {
    shape.discriminator_spectral_norm = p.discriminator_spectral_norm();
  }
  return shape;
}

int FedCgShape::feature_size() const {
  const int s = ((image_size - 4) / 2 - 4) / 2;
  return 16 * s * s;
}

v1::ModelSpec FedCgExtractorSpec(const FedCgShape& shape) {
  v1::ModelSpec spec;
  spec.set_name("fedcg_extractor");
  spec.add_input_shape(shape.image_size);
  spec.add_input_shape(shape.image_size);
  spec.add_input_shape(shape.channels);
  auto* c1 = Add(spec, "E.conv1")->mutable_conv2d();
  c1->set_in_channels(shape.channels);
  c1->set_out_channels(6);
  c1->set_kernel_size(5);
  Add(spec, "E.pool1")->mutable_avg_pool2d()->set_kernel_size(2);
  Add(spec, "E.sig1")->mutable_sigmoid();
  auto* c2 = Add(spec, "E.conv2")->mutable_conv2d();
  c2->set_in_channels(6);
  c2->set_out_channels(16);
  c2->set_kernel_size(5);
  Add(spec, "E.pool2")->mutable_avg_pool2d()->set_kernel_size(2);
  Add(spec, "E.sig2")->mutable_sigmoid();
  Add(spec, "E.flatten")->mutable_flatten();
  return spec;
}

v1::ModelSpec FedCgClassifierSpec(const FedCgShape& shape) {
  v1::ModelSpec spec;
  spec.set_name("fedcg_classifier");
  spec.add_input_shape(shape.feature_size());
  AddDense(spec, "C.fc1", shape.feature_size(), 120);
  Add(spec, "C.sig1")->mutable_sigmoid();
  AddDense(spec, "C.fc2", 120, 84);
  Add(spec, "C.sig2")->mutable_sigmoid();
  AddDense(spec, "C.fc3", 84, shape.num_classes);
  return spec;
}

v1::ModelSpec FedCgGeneratorBodySpec(const FedCgShape& shape) {
  v1::ModelSpec spec;
  spec.set_name("fedcg_generator");
  spec.add_input_shape(shape.noise_dim + shape.embed_dim);
  AddDense(spec, "G.fc1", shape.noise_dim + shape.embed_dim, 256);
  AddLeakyRelu(spec, "G.act1");
  AddDense(spec, "G.fc2", 256, shape.feature_size());
  Add(spec, "G.sig")->mutable_sigmoid();
  return spec;
}

v1::ModelSpec FedCgDiscriminatorBodySpec(const FedCgShape& shape) {
  v1::ModelSpec spec;
  spec.set_name("fedcg_discriminator");
  spec.add_input_shape(shape.feature_size() + shape.embed_dim);
  AddDense(spec, "D.fc1", shape.feature_size() + shape.embed_dim, 256);
  AddLeakyRelu(spec, "D.act1");
  AddDense(spec, "D.fc2", 256, 1);
  if (shape.discriminator_spectral_norm) {
    for (v1::LayerSpec& l : *spec.mutable_layers()) {
      if (l.has_dense()) l.mutable_dense()->set_spectral_norm(true);
    }
  }
  return spec;
}

absl::StatusOr<std::unique_ptr<Sequential>> CreateFedCgExtractor(const FedCgShape& shape) {
  return Sequential::Create(FedCgExtractorSpec(shape));
}

absl::StatusOr<std::unique_ptr<Sequential>> CreateFedCgClassifier(const FedCgShape& shape) {
  return Sequential::Create(FedCgClassifierSpec(shape));
}

absl::StatusOr<std::unique_ptr<ConditionalNet>> CreateFedCgGenerator(const FedCgShape& shape) {
  return ConditionalNet::Create("G", shape.noise_dim, shape.num_classes, shape.embed_dim,
                                FedCgGeneratorBodySpec(shape));
}

absl::StatusOr<std::unique_ptr<ConditionalNet>> CreateFedCgDiscriminator(
    const FedCgShape& shape) {
  return ConditionalNet::Create("D", shape.feature_size(), shape.num_classes, shape.embed_dim,
                                FedCgDiscriminatorBodySpec(shape));
}

}  // namespace fedge::model

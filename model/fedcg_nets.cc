#include "model/fedcg_nets.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

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

// The paper's code's G and D (fedcg_nets.h): 2×2 kernels, stride 1, DCGAN's init.
constexpr float kDcganInitStd = 0.02f;

// Both spec messages have the same fields; one template fills either.
template <typename ConvSpec>
void SetDcganConv2x2(ConvSpec* c, int in, int out) {
  c->set_in_channels(in);
  c->set_out_channels(out);
  c->set_kernel_size(2);
  c->set_no_bias(true);
  c->set_init_std(kDcganInitStd);
}

void AddConvT(v1::ModelSpec& spec, const std::string& name, int in, int out) {
  SetDcganConv2x2(Add(spec, name)->mutable_conv_transpose2d(), in, out);
}

void AddConv2x2(v1::ModelSpec& spec, const std::string& name, int in, int out) {
  SetDcganConv2x2(Add(spec, name)->mutable_conv2d(), in, out);
}

void AddBnLeakyRelu(v1::ModelSpec& spec, const std::string& prefix, int i) {
  Add(spec, absl::StrCat(prefix, ".bn", i))->mutable_batch_norm2d()->set_init_std(kDcganInitStd);
  AddLeakyRelu(spec, absl::StrCat(prefix, ".act", i));
}

int FeatureSide(const FedCgShape& shape) { return ((shape.image_size - 4) / 2 - 4) / 2; }

}  // namespace

absl::Status CheckFedCgGanShape(const FedCgShape& shape) {
  if (shape.gan == FedCgGanArchitecture::kConvBatchNorm && FeatureSide(shape) != 5) {
    return absl::InvalidArgumentError(absl::StrCat(
        "FedCG: the convolutional G and D (gan_architecture CONV_BATCHNORM) need a 5 x 5 "
        "feature map (image_size 32); image_size ", shape.image_size, " gives ",
        FeatureSide(shape), " x ", FeatureSide(shape)));
  }
  return absl::OkStatus();
}

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
  if (p.gan_architecture() == v1::FEDCG_GAN_CONV_BATCHNORM) {
    shape.gan = FedCgGanArchitecture::kConvBatchNorm;
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
  if (shape.gan == FedCgGanArchitecture::kConvBatchNorm) {
    spec.add_input_shape(1);
    spec.add_input_shape(1);
    spec.add_input_shape(shape.noise_dim + shape.embed_dim);
    AddConvT(spec, "G.deconv1", shape.noise_dim + shape.embed_dim, 512);  // 2 × 2
    AddBnLeakyRelu(spec, "G", 1);
    AddConvT(spec, "G.deconv2", 512, 256);  // 3 × 3
    AddBnLeakyRelu(spec, "G", 2);
    AddConvT(spec, "G.deconv3", 256, 128);  // 4 × 4
    AddBnLeakyRelu(spec, "G", 3);
    AddConvT(spec, "G.deconv4", 128, 16);  // 5 × 5 × 16, E's feature map
    Add(spec, "G.sig")->mutable_sigmoid();
    Add(spec, "G.flatten")->mutable_flatten();
    return spec;
  }
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
  if (shape.gan == FedCgGanArchitecture::kConvBatchNorm) {
    const int side = FeatureSide(shape);
    spec.add_input_shape(side);
    spec.add_input_shape(side);
    spec.add_input_shape(16 + shape.embed_dim);
    AddConv2x2(spec, "D.conv1", 16 + shape.embed_dim, 128);  // 4 × 4
    AddBnLeakyRelu(spec, "D", 1);
    AddConv2x2(spec, "D.conv2", 128, 256);  // 3 × 3
    AddBnLeakyRelu(spec, "D", 2);
    AddConv2x2(spec, "D.conv3", 256, 512);  // 2 × 2
    AddBnLeakyRelu(spec, "D", 3);
    AddConv2x2(spec, "D.conv4", 512, 1);  // 1 × 1: the logit
    Add(spec, "D.flatten")->mutable_flatten();
    return spec;
  }
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
  FEDGE_RETURN_IF_ERROR(CheckFedCgGanShape(shape));
  return ConditionalNet::Create("G", shape.noise_dim, shape.num_classes, shape.embed_dim,
                                FedCgGeneratorBodySpec(shape));
}

absl::StatusOr<std::unique_ptr<ConditionalNet>> CreateFedCgDiscriminator(
    const FedCgShape& shape) {
  FEDGE_RETURN_IF_ERROR(CheckFedCgGanShape(shape));
  return ConditionalNet::Create("D", shape.feature_size(), shape.num_classes, shape.embed_dim,
                                FedCgDiscriminatorBodySpec(shape));
}

}  // namespace fedge::model

// ConditionalNet: gradient check (input, embedding and body parameters) against central
// finite differences, and FedCG's network shapes.
#include "model/conditional_net.h"

#include <cmath>
#include <string>
#include <vector>

#include "base/rng.h"
#include "gtest/gtest.h"
#include "model/fedcg_nets.h"

namespace fedge::model {
namespace {

v1::ModelSpec SmallBody(int in) {
  v1::ModelSpec spec;
  spec.add_input_shape(in);
  auto* l1 = spec.add_layers();
  l1->set_name("fc1");
  l1->mutable_dense()->set_in_features(in);
  l1->mutable_dense()->set_out_features(6);
  // Smooth (no LeakyReLU kink that a finite difference could straddle; LeakyRelu has its
  // own check in layers_test.cc).
  auto* a = spec.add_layers();
  a->set_name("act");
  a->mutable_sigmoid();
  auto* l2 = spec.add_layers();
  l2->set_name("fc2");
  l2->mutable_dense()->set_in_features(6);
  l2->mutable_dense()->set_out_features(3);
  auto* s = spec.add_layers();
  s->set_name("sig");
  s->mutable_sigmoid();
  return spec;
}

double Dot(const float* a, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < r.size(); ++i) s += static_cast<double>(a[i]) * r[i];
  return s;
}

// dx against central differences of `loss_at` around x.
template <typename LossAt>
void ExpectInputGradient(LossAt& loss_at, const std::vector<float>& x,
                         const std::vector<float>& dx, float eps) {
  for (size_t i = 0; i < x.size(); ++i) {
    std::vector<float> xp = x, xm = x;
    xp[i] += eps;
    xm[i] -= eps;
    const double numeric = (loss_at(xp) - loss_at(xm)) / (2 * eps);
    EXPECT_NEAR(dx[i], numeric, 2e-3 + 2e-2 * std::fabs(numeric)) << "dx[" << i << "]";
  }
}

TEST(ConditionalNetTest, GradientsMatchFiniteDifferences) {
  auto net_or = ConditionalNet::Create("G", 4, 5, 3, SmallBody(7));
  ASSERT_TRUE(net_or.ok()) << net_or.status();
  ConditionalNet& net = **net_or;
  net.InitParameters(3);
  base::Rng rng(4);
  const int batch = 3;
  std::vector<float> x(batch * 4);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  const std::vector<int32_t> y = {2, 4, 2};  // a repeated label: its row's grads add up
  std::vector<float> r(batch * 3);
  for (float& v : r) v = static_cast<float>(rng.Normal());

  net.ZeroGrad();
  net.Forward(x.data(), y.data(), batch, /*training=*/true);
  std::vector<float> dx(x.size());
  net.Backward(r.data(), dx.data());

  auto loss_at = [&](const std::vector<float>& xin) {
    return Dot(net.Forward(xin.data(), y.data(), batch, false), r);
  };
  const float eps = 1e-2f;
  ExpectInputGradient(loss_at, x, dx, eps);
  int checked_embedding = 0;
  for (Parameter* p : net.parameters()) {
    for (size_t i = 0; i < p->value.size(); ++i) {
      const float saved = p->value[i];
      p->value[i] = saved + eps;
      const double lp = loss_at(x);
      p->value[i] = saved - eps;
      const double lm = loss_at(x);
      p->value[i] = saved;
      const double numeric = (lp - lm) / (2 * eps);
      EXPECT_NEAR(p->grad[i], numeric, 2e-3 + 2e-2 * std::fabs(numeric))
          << p->name << "[" << i << "]";
      if (p->name == "G.embed.weight" && std::fabs(p->grad[i]) > 1e-4) ++checked_embedding;
    }
  }
  // Rows 2 and 4 of the embedding were used: 2 × 3 entries with a non-zero gradient.
  EXPECT_EQ(checked_embedding, 6);
}

// A body over [H, W, C + embed]: the embedding is repeated at every position (the paper's
// convolutional D); its gradient sums over the positions, the input's passes through.
TEST(ConditionalNetTest, SpatialBodyRepeatsTheEmbeddingAndMatchesFiniteDifferences) {
  v1::ModelSpec body;
  body.add_input_shape(3);
  body.add_input_shape(3);
  body.add_input_shape(2 + 3);
  auto* c = body.add_layers();
  c->set_name("conv");
  c->mutable_conv2d()->set_in_channels(5);
  c->mutable_conv2d()->set_out_channels(2);
  c->mutable_conv2d()->set_kernel_size(2);
  body.add_layers()->mutable_sigmoid();
  body.mutable_layers(1)->set_name("sig");
  body.add_layers()->mutable_flatten();
  body.mutable_layers(2)->set_name("flat");
  auto net_or = ConditionalNet::Create("D", 3 * 3 * 2, 4, 3, body);
  ASSERT_TRUE(net_or.ok()) << net_or.status();
  ConditionalNet& net = **net_or;
  net.InitParameters(5);
  base::Rng rng(6);
  const int batch = 2;
  std::vector<float> x(batch * 18);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  const std::vector<int32_t> y = {3, 1};
  std::vector<float> r(batch * net.output_size());
  for (float& v : r) v = static_cast<float>(rng.Normal());
  net.ZeroGrad();
  net.Forward(x.data(), y.data(), batch, true);
  std::vector<float> dx(x.size());
  net.Backward(r.data(), dx.data());
  auto loss_at = [&](const std::vector<float>& xin) {
    return Dot(net.Forward(xin.data(), y.data(), batch, false), r);
  };
  const float eps = 1e-2f;
  ExpectInputGradient(loss_at, x, dx, eps);
  Parameter& e = net.embedding();
  for (size_t i = 0; i < e.value.size(); ++i) {
    const float saved = e.value[i];
    e.value[i] = saved + eps;
    const double lp = loss_at(x);
    e.value[i] = saved - eps;
    const double lm = loss_at(x);
    e.value[i] = saved;
    const double numeric = (lp - lm) / (2 * eps);
    EXPECT_NEAR(e.grad[i], numeric, 2e-3 + 2e-2 * std::fabs(numeric)) << "embed[" << i << "]";
    // Rows 0 and 2 were not used.
    if (i / 3 == 0 || i / 3 == 2) {
      EXPECT_EQ(e.grad[i], 0.0f);
    }
  }
  // The layout: a body that only flattens returns the concatenated input, each position's
  // 2 channels of x followed by its label's 3 embedding values.
  v1::ModelSpec flat;
  flat.add_input_shape(3);
  flat.add_input_shape(3);
  flat.add_input_shape(5);
  flat.add_layers()->mutable_flatten();
  flat.mutable_layers(0)->set_name("flat");
  auto id = std::move(ConditionalNet::Create("D", 18, 4, 3, flat)).value();
  id->InitParameters(9);
  const float* out = id->Forward(x.data(), y.data(), batch, false);
  for (int b = 0; b < batch; ++b) {
    for (int p = 0; p < 9; ++p) {
      const float* row = out + (b * 9 + p) * 5;
      EXPECT_EQ(row[0], x[(b * 9 + p) * 2]);
      EXPECT_EQ(row[1], x[(b * 9 + p) * 2 + 1]);
      for (int j = 0; j < 3; ++j) EXPECT_EQ(row[2 + j], id->embedding().value[y[b] * 3 + j]);
    }
  }
  // A body whose channels do not split the input is refused.
  body.set_input_shape(2, 6);
  EXPECT_EQ(ConditionalNet::Create("D", 18, 4, 3, body).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ConditionalNetTest, RejectsBodyOfTheWrongWidth) {
  auto net = ConditionalNet::Create("G", 4, 5, 3, SmallBody(8));
  EXPECT_EQ(net.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FedCgNetsTest, ShapesChainAndNamesCarryThePart) {
  FedCgShape shape;
  EXPECT_EQ(shape.feature_size(), 400);
  auto e = CreateFedCgExtractor(shape);
  auto c = CreateFedCgClassifier(shape);
  auto g = CreateFedCgGenerator(shape);
  auto d = CreateFedCgDiscriminator(shape);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*e)->input_size(), 32 * 32);
  EXPECT_EQ((*e)->output_size(), 400);
  EXPECT_EQ((*c)->input_size(), 400);
  EXPECT_EQ((*c)->output_size(), 10);
  EXPECT_EQ((*g)->input_size(), 100);
  EXPECT_EQ((*g)->output_size(), 400);
  EXPECT_EQ((*d)->input_size(), 400);
  EXPECT_EQ((*d)->output_size(), 1);
  for (Parameter* p : (*e)->parameters()) EXPECT_EQ(p->name.rfind("E.", 0), 0u) << p->name;
  for (Parameter* p : (*c)->parameters()) EXPECT_EQ(p->name.rfind("C.", 0), 0u) << p->name;
  for (Parameter* p : (*g)->parameters()) EXPECT_EQ(p->name.rfind("G.", 0), 0u) << p->name;
  for (Parameter* p : (*d)->parameters()) EXPECT_EQ(p->name.rfind("D.", 0), 0u) << p->name;
  // The generator ends in a sigmoid, like the extractor: features in (0, 1).
  (*g)->InitParameters(1);
  std::vector<float> z(2 * 100, 0.5f);
  const std::vector<int32_t> y = {0, 9};
  const float* f = (*g)->Forward(z.data(), y.data(), 2, false);
  for (int i = 0; i < 800; ++i) {
    ASSERT_GT(f[i], 0.0f);
    ASSERT_LT(f[i], 1.0f);
  }
}

// discriminator_spectral_norm: D's dense layers are spectrally normalized, so D is
// 1-Lipschitz in its feature input (LeakyReLU's slope is ≤ 1) and blind to the scale of its
// dense weights; the parameter names stay those of the plain D (a device's saved D loads).
TEST(FedCgNetsTest, SpectralNormDiscriminatorIsOneLipschitzAndScaleFree) {
  ASSERT_TRUE(FedCgShapeFromParams(v1::FedCgParams{}).discriminator_spectral_norm);
  v1::FedCgParams params;
  params.set_discriminator_spectral_norm(false);
  ASSERT_FALSE(FedCgShapeFromParams(params).discriminator_spectral_norm);
  const FedCgShape shape;
  const v1::ModelSpec body = FedCgDiscriminatorBodySpec(shape);
  for (const v1::LayerSpec& l : body.layers()) {
    if (l.has_dense()) {
      EXPECT_TRUE(l.dense().spectral_norm()) << l.name();
    }
  }
  auto d = CreateFedCgDiscriminator(shape);
  FedCgShape plain_shape;
  plain_shape.discriminator_spectral_norm = false;
  auto plain = CreateFedCgDiscriminator(plain_shape);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(plain.ok()) << plain.status();
  (*d)->InitParameters(5);
  ASSERT_EQ((*d)->parameters().size(), (*plain)->parameters().size());
  for (size_t i = 0; i < (*d)->parameters().size(); ++i) {
    EXPECT_EQ((*d)->parameters()[i]->name, (*plain)->parameters()[i]->name);
  }
  base::Rng rng(6);
  const int batch = 16, n = shape.feature_size();
  std::vector<float> f(batch * n);
  std::vector<int32_t> y(batch);
  for (int b = 0; b < batch; ++b) y[b] = b % shape.num_classes;
  for (float& v : f) v = static_cast<float>(rng.Uniform());
  for (int step = 0; step < 30; ++step) (*d)->Forward(f.data(), y.data(), batch, true);
  const float* of = (*d)->Forward(f.data(), y.data(), batch, false);
  const std::vector<float> out(of, of + batch);
  // Pairs of features with the same label: |D(f) − D(f')| ≤ ‖f − f'‖.
  std::vector<float> g = f;
  for (float& v : g) v += static_cast<float>(rng.Normal() * 0.2);
  const float* og = (*d)->Forward(g.data(), y.data(), batch, false);
  for (int b = 0; b < batch; ++b) {
    double dist = 0;
    for (int i = 0; i < n; ++i) {
      const double e = g[b * n + i] - f[b * n + i];
      dist += e * e;
    }
    EXPECT_LE(std::fabs(og[b] - out[b]), 1.01 * std::sqrt(dist)) << b;
  }
  // Dense weights ×10: the same outputs.
  for (Parameter* p : (*d)->parameters()) {
    if (p->name.find(".fc") == std::string::npos || p->name.find(".weight") == std::string::npos) {
      continue;
    }
    for (float& v : p->value) v *= 10.0f;
    ++p->version;
  }
  const float* scaled = (*d)->Forward(f.data(), y.data(), batch, false);
  for (int b = 0; b < batch; ++b) EXPECT_NEAR(scaled[b], out[b], 1e-4f * (1 + std::fabs(out[b])));
}

// gan = kConvBatchNorm: the paper's code's G and D. Same inputs and outputs as the dense
// ones, batch norm's running statistics are G's tensors (not trained), conv weights start
// as DCGAN's N(0, 0.02²); a feature map other than 5 × 5 is refused.
TEST(FedCgNetsTest, ConvBatchNormNetworksHaveThePapersShape) {
  v1::FedCgParams params;
  params.set_gan_architecture(v1::FEDCG_GAN_CONV_BATCHNORM);
  const FedCgShape shape = FedCgShapeFromParams(params);
  ASSERT_EQ(shape.gan, FedCgGanArchitecture::kConvBatchNorm);
  auto g = CreateFedCgGenerator(shape);
  auto d = CreateFedCgDiscriminator(shape);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*g)->input_size(), 100);
  EXPECT_EQ((*g)->output_size(), 400);
  EXPECT_EQ((*d)->input_size(), 400);
  EXPECT_EQ((*d)->output_size(), 1);
  int64_t g_params = 0, running = 0;
  (*g)->InitParameters(7);
  for (Parameter* p : (*g)->parameters()) {
    EXPECT_EQ(p->name.rfind("G.", 0), 0u) << p->name;
    g_params += p->size();
    if (p->name.find("running_") != std::string::npos) {
      EXPECT_FALSE(p->trainable) << p->name;
      running += p->size();
    }
    if (p->name == "G.deconv2.weight") {
      EXPECT_EQ(p->shape, (std::vector<int>{512, 2, 2, 256}));
      double sq = 0;
      for (float v : p->value) sq += static_cast<double>(v) * v;
      EXPECT_NEAR(std::sqrt(sq / p->size()), 0.02, 0.001);
    }
  }
  // embed 100 + convT 110·512·4 + 512·256·4 + 256·128·4 + 128·16·4 + BN 4·(512 + 256 + 128)
  EXPECT_EQ(g_params, 100 + 225280 + 524288 + 131072 + 8192 + 4 * 896);
  EXPECT_EQ(running, 2 * 896);
  for (Parameter* p : (*d)->parameters()) EXPECT_EQ(p->name.rfind("D.", 0), 0u) << p->name;
  // Features in (0, 1) in training (batch statistics) and inference (running ones).
  std::vector<float> z(4 * 100);
  base::Rng rng(8);
  for (float& v : z) v = static_cast<float>(rng.Normal());
  const std::vector<int32_t> y = {0, 9, 3, 3};
  for (bool training : {true, false}) {
    const float* f = (*g)->Forward(z.data(), y.data(), 4, training);
    for (int i = 0; i < 1600; ++i) {
      ASSERT_GT(f[i], 0.0f);
      ASSERT_LT(f[i], 1.0f);
    }
  }
  FedCgShape small = shape;
  small.image_size = 28;
  EXPECT_EQ(CreateFedCgGenerator(small).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateFedCgDiscriminator(small).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedge::model

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
  for (size_t i = 0; i < x.size(); ++i) {
    std::vector<float> xp = x, xm = x;
    xp[i] += eps;
    xm[i] -= eps;
    const double numeric = (loss_at(xp) - loss_at(xm)) / (2 * eps);
    EXPECT_NEAR(dx[i], numeric, 2e-3 + 2e-2 * std::fabs(numeric)) << "dx[" << i << "]";
  }
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

}  // namespace
}  // namespace fedge::model

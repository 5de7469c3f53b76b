// Gradient checks: every layer's backward pass against central finite differences of
// L = Σ r ⊙ f(x) for a fixed random r, in double-precision sums.
#include "model/layers.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "Eigen/Dense"
#include "base/rng.h"
#include "kernels/conv.h"
#include "kernels/q4.h"
#include "kernels/quantize.h"
#include "gtest/gtest.h"

namespace fedge::model {
namespace {

double Dot(const float* a, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < r.size(); ++i) s += static_cast<double>(a[i]) * r[i];
  return s;
}

// Fills with values of magnitude ≥ `gap` so that ReLU kinks and max-pool ties are farther
// than the finite-difference step from any input.
void FillAwayFromZero(std::vector<float>& v, base::Rng& rng, float gap) {
  for (float& x : v) {
    const float mag = gap + static_cast<float>(rng.Uniform());
    x = rng.Uniform() < 0.5 ? -mag : mag;
  }
}

struct GradCheckOptions {
  float eps = 1e-2f;
  double atol = 2e-3;
  double rtol = 2e-2;
  bool check_input = true;
  // Finite differences of training forwards (batch norm: the batch statistics are part of
  // the function being differentiated); otherwise of inference forwards.
  bool numeric_training = false;
};

void CheckGradients(Layer& layer, int batch, std::vector<float> x, base::Rng& rng,
                    const GradCheckOptions& opt = {}) {
  const size_t out_n = static_cast<size_t>(batch) * layer.output_size();
  std::vector<float> y(out_n), r(out_n), dx(x.size());
  for (float& v : r) v = static_cast<float>(rng.Normal());
  for (Parameter* p : layer.parameters()) std::fill(p->grad.begin(), p->grad.end(), 0.0f);
  layer.Forward(x.data(), batch, y.data(), ComputeMode::kFp32, /*training=*/true);
  layer.Backward(x.data(), y.data(), r.data(), batch, opt.check_input ? dx.data() : nullptr);

  auto loss_at = [&](const std::vector<float>& xin) {
    std::vector<float> yy(out_n);
    layer.Forward(xin.data(), batch, yy.data(), ComputeMode::kFp32, opt.numeric_training);
    return Dot(yy.data(), r);
  };
  auto expect_close = [&](double analytic, double numeric, const std::string& what) {
    EXPECT_NEAR(analytic, numeric, opt.atol + opt.rtol * std::fabs(numeric)) << what;
  };
  if (opt.check_input) {
    for (size_t i = 0; i < x.size(); ++i) {
      std::vector<float> xp = x, xm = x;
      xp[i] += opt.eps;
      xm[i] -= opt.eps;
      const double numeric = (loss_at(xp) - loss_at(xm)) / (2.0 * opt.eps);
      expect_close(dx[i], numeric, layer.name() + " dx[" + std::to_string(i) + "]");
    }
  }
  for (Parameter* p : layer.parameters()) {
    if (!p->trainable) {  // running statistics: no gradient, ever
      for (float g : p->grad) EXPECT_EQ(g, 0.0f) << p->name;
      continue;
    }
    const std::vector<float> grad = p->grad;
    for (size_t i = 0; i < p->value.size(); ++i) {
      const float saved = p->value[i];
      p->value[i] = saved + opt.eps;
      const double lp = loss_at(x);
      p->value[i] = saved - opt.eps;
      const double lm = loss_at(x);
      p->value[i] = saved;
      expect_close(grad[i], (lp - lm) / (2.0 * opt.eps), p->name + "[" + std::to_string(i) + "]");
    }
  }
}

void RandomizeParameters(Layer& layer, base::Rng& rng) {
  for (Parameter* p : layer.parameters()) {
    for (float& v : p->value) v = static_cast<float>(rng.Normal() * 0.5);
    ++p->version;
  }
}

TEST(LayerGradientTest, Dense) {
  base::Rng rng(1);
  for (bool bias : {true, false}) {
    Dense layer("fc", 7, 5, bias);
    RandomizeParameters(layer, rng);
    std::vector<float> x(3 * 7);
    for (float& v : x) v = static_cast<float>(rng.Normal());
    CheckGradients(layer, 3, x, rng);
  }
}

// Spectral norm: the gradient of W (through W̄ = W / uᵀWv with u, v held) against finite
// differences of inference forwards, which reuse the u, v of the training forward.
TEST(LayerGradientTest, DenseWithSpectralNorm) {
  base::Rng rng(11);
  for (bool bias : {true, false}) {
    Dense layer("sn", 7, 5, bias, /*spectral_norm=*/true);
    RandomizeParameters(layer, rng);
    std::vector<float> x(3 * 7);
    for (float& v : x) v = static_cast<float>(rng.Normal());
    GradCheckOptions opt;
    opt.eps = 2e-3f;
    CheckGradients(layer, 3, x, rng, opt);
  }
}

// σ from the power iteration matches the largest singular value of W (from Eigen's SVD),
// and the product then has spectral norm 1: ‖W̄ x‖ ≤ ‖x‖ with equality near v.
TEST(LayerTest, SpectralNormFindsTheLargestSingularValue) {
  base::Rng rng(12);
  const int in = 40, out = 24;
  Dense layer("sn", in, out, /*has_bias=*/false, /*spectral_norm=*/true);
  RandomizeParameters(layer, rng);
  Parameter& w = *layer.parameters()[0];
  Eigen::MatrixXd m(out, in);
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) m(o, i) = w.value[static_cast<size_t>(o) * in + i];
  }
  const double s_max = Eigen::JacobiSVD<Eigen::MatrixXd>(m).singularValues()(0);
  std::vector<float> x(in), y(out);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  for (int step = 0; step < 30; ++step) {
    layer.Forward(x.data(), 1, y.data(), ComputeMode::kFp32, /*training=*/true);
  }
  EXPECT_NEAR(layer.sigma(), s_max, 1e-3 * s_max);
  // Random inputs: ‖W̄ x‖ / ‖x‖ never exceeds 1 (up to the estimate's error).
  double worst = 0;
  for (int trial = 0; trial < 50; ++trial) {
    for (float& v : x) v = static_cast<float>(rng.Normal());
    layer.Forward(x.data(), 1, y.data(), ComputeMode::kFp32, /*training=*/false);
    double nx = 0, ny = 0;
    for (float v : x) nx += static_cast<double>(v) * v;
    for (float v : y) ny += static_cast<double>(v) * v;
    worst = std::max(worst, std::sqrt(ny / nx));
  }
  EXPECT_LE(worst, 1.0 + 1e-3);
  EXPECT_GT(worst, 0.3);
  // The plain layer with the same W is σ times larger.
  Dense plain("plain", in, out, /*has_bias=*/false);
  plain.parameters()[0]->value = w.value;
  std::vector<float> yp(out);
  plain.Forward(x.data(), 1, yp.data(), ComputeMode::kFp32, /*training=*/false);
  layer.Forward(x.data(), 1, y.data(), ComputeMode::kFp32, /*training=*/false);
  for (int o = 0; o < out; ++o) EXPECT_NEAR(y[o] * layer.sigma(), yp[o], 1e-4f) << o;
}

// Conv2d over (height, width, in, out, kernel, stride, padding) cases: plain, strided with
// padding (windows that cross the border), and one input channel with a 5×5 kernel.
TEST(LayerGradientTest, Conv2d) {
  const int cases[][7] = {{6, 5, 2, 3, 3, 1, 0}, {7, 6, 3, 4, 3, 2, 1}, {9, 9, 1, 2, 5, 1, 0}};
  base::Rng rng(2);
  for (const auto& c : cases) {
    Conv2d layer("conv", c[0], c[1], c[2], c[3], c[4], c[5], c[6]);
    RandomizeParameters(layer, rng);
    std::vector<float> x(2 * layer.input_size());
    for (float& v : x) v = static_cast<float>(rng.Normal());
    SCOPED_TRACE(::testing::Message() << "conv " << c[0] << "x" << c[1] << "x" << c[2] << " -> "
                                      << c[3] << " k" << c[4] << " s" << c[5] << " p" << c[6]);
    CheckGradients(layer, 2, x, rng);
  }
}

TEST(LayerGradientTest, Conv2dWithoutBias) {
  base::Rng rng(21);
  for (int cout : {4, 33}) {  // below and above the 32 channels where the forward GEMM turns
    Conv2d layer("conv", 4, 4, 3, cout, 2, 1, 0, /*has_bias=*/false);
    ASSERT_EQ(layer.parameters().size(), 1u);
    RandomizeParameters(layer, rng);
    std::vector<float> x(2 * layer.input_size());
    for (float& v : x) v = static_cast<float>(rng.Normal());
    CheckGradients(layer, 2, x, rng);
  }
}

// ConvTranspose2d over (height, width, in, out, kernel, stride, padding, bias) cases: the
// paper's generator step (2×2, stride 1, from a 1×1 map), a strided one with cropping, and a
// rectangular input.
TEST(LayerGradientTest, ConvTranspose2d) {
  const int cases[][8] = {{1, 1, 6, 4, 2, 1, 0, 0},
                          {2, 2, 5, 3, 2, 1, 0, 1},
                          {3, 2, 2, 4, 3, 2, 1, 1},
                          {2, 3, 3, 2, 4, 2, 1, 0}};
  base::Rng rng(22);
  for (const auto& c : cases) {
    ConvTranspose2d layer("deconv", c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7] != 0);
    RandomizeParameters(layer, rng);
    std::vector<float> x(2 * layer.input_size());
    for (float& v : x) v = static_cast<float>(rng.Normal());
    SCOPED_TRACE(::testing::Message() << "deconv " << c[0] << "x" << c[1] << "x" << c[2]
                                      << " -> " << c[3] << " k" << c[4] << " s" << c[5]
                                      << " p" << c[6] << " bias " << c[7]);
    CheckGradients(layer, 2, x, rng);
  }
}

// Against the definition, summed directly: y[oh, ow, o] = b[o] + Σ x[ih, iw, i] ·
// W[i, kh, kw, o] over oh = ih·s − p + kh, ow = iw·s − p + kw; and the output size
// (H − 1)·s − 2p + K.
TEST(LayerValueTest, ConvTranspose2dMatchesTheDirectSum) {
  const int h = 3, w = 4, cin = 3, cout = 5, k = 3, s = 2, p = 1, batch = 2;
  ConvTranspose2d layer("deconv", h, w, cin, cout, k, s, p, true);
  const int oh = (h - 1) * s - 2 * p + k, ow = (w - 1) * s - 2 * p + k;
  ASSERT_EQ(layer.output_shape(), (std::vector<int>{oh, ow, cout}));
  base::Rng rng(23);
  RandomizeParameters(layer, rng);
  const std::vector<float>& wt = layer.parameters()[0]->value;
  const std::vector<float>& bias = layer.parameters()[1]->value;
  std::vector<float> x(batch * layer.input_size()), y(batch * layer.output_size());
  for (float& v : x) v = static_cast<float>(rng.Normal());
  layer.Forward(x.data(), batch, y.data(), ComputeMode::kFp32, false);
  std::vector<double> ref(y.size());
  for (int b = 0; b < batch; ++b) {
    for (int i = 0; i < oh * ow; ++i) {
      for (int o = 0; o < cout; ++o) ref[(b * oh * ow + i) * cout + o] = bias[o];
    }
    for (int ih = 0; ih < h; ++ih) {
      for (int iw = 0; iw < w; ++iw) {
        for (int kh = 0; kh < k; ++kh) {
          for (int kw = 0; kw < k; ++kw) {
            const int y0 = ih * s - p + kh, x0 = iw * s - p + kw;
            if (y0 < 0 || y0 >= oh || x0 < 0 || x0 >= ow) continue;
            for (int i = 0; i < cin; ++i) {
              for (int o = 0; o < cout; ++o) {
                ref[((b * oh + y0) * ow + x0) * cout + o] +=
                    static_cast<double>(x[((b * h + ih) * w + iw) * cin + i]) *
                    wt[((i * k + kh) * k + kw) * cout + o];
              }
            }
          }
        }
      }
    }
  }
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-4) << "y[" << i << "]";
}

// Batch norm in training: the gradient of the batch-normalized output (through the batch's
// mean and variance) for NHWC maps and for plain vectors; no gradient reaches the running
// statistics.
TEST(LayerGradientTest, BatchNorm2d) {
  base::Rng rng(24);
  const std::vector<std::vector<int>> shapes = {{3, 2, 4}, {5}, {1, 1, 3}};
  for (const std::vector<int>& shape : shapes) {
    BatchNorm2d layer("bn", shape, 0.1f, 1e-5f);
    for (int i = 0; i < 2; ++i) {
      for (float& v : layer.parameters()[i]->value) v = static_cast<float>(rng.Normal());
    }
    const int batch = 4;
    std::vector<float> x(batch * layer.input_size());
    for (float& v : x) v = static_cast<float>(2.0 * rng.Normal() + 1.0);
    GradCheckOptions opt;
    opt.numeric_training = true;
    opt.eps = 3e-3f;
    SCOPED_TRACE(::testing::Message() << "shape size " << layer.input_size());
    CheckGradients(layer, batch, x, rng, opt);
  }
}

// A training forward normalizes each channel over the batch and every position (mean β,
// variance γ²·σ²/(σ² + ε)) and moves the running estimates by the momentum (towards the
// unbiased variance); an inference forward then uses those estimates.
TEST(LayerValueTest, BatchNorm2dNormalizesAndTracksRunningStatistics) {
  const int h = 2, w = 3, c = 2, batch = 5, m = batch * h * w;
  BatchNorm2d layer("bn", {h, w, c}, 0.1f, 1e-5f);
  std::vector<Parameter*> ps = layer.parameters();
  ASSERT_EQ(ps.size(), 4u);
  EXPECT_EQ(ps[2]->name, "bn.running_mean");
  EXPECT_FALSE(ps[2]->trainable);
  EXPECT_FALSE(ps[3]->trainable);
  ps[0]->value = {2.0f, 0.5f};   // γ
  ps[1]->value = {1.0f, -3.0f};  // β
  base::Rng rng(25);
  std::vector<float> x(batch * h * w * c), y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<float>((i % 2 == 0 ? 3.0 : 0.2) * rng.Normal() + (i % 2 == 0 ? 5 : -1));
  }
  layer.Forward(x.data(), batch, y.data(), ComputeMode::kFp32, true);
  for (int j = 0; j < c; ++j) {
    double mean = 0, var = 0, ymean = 0, yvar = 0;
    for (int r = 0; r < m; ++r) mean += x[r * c + j];
    mean /= m;
    for (int r = 0; r < m; ++r) var += (x[r * c + j] - mean) * (x[r * c + j] - mean);
    for (int r = 0; r < m; ++r) ymean += y[r * c + j];
    ymean /= m;
    for (int r = 0; r < m; ++r) yvar += (y[r * c + j] - ymean) * (y[r * c + j] - ymean);
    const double g = ps[0]->value[j];
    EXPECT_NEAR(ymean, ps[1]->value[j], 1e-5);
    EXPECT_NEAR(yvar / m, g * g * (var / m) / (var / m + 1e-5), 1e-4);
    EXPECT_NEAR(ps[2]->value[j], 0.1 * mean, 1e-5);
    EXPECT_NEAR(ps[3]->value[j], 0.9 + 0.1 * var / (m - 1), 1e-4);
  }
  std::vector<float> ye(y.size());
  layer.Forward(x.data(), batch, ye.data(), ComputeMode::kFp32, false);
  for (int r = 0; r < m; ++r) {
    for (int j = 0; j < c; ++j) {
      const double want = ps[0]->value[j] * (x[r * c + j] - ps[2]->value[j]) /
                              std::sqrt(ps[3]->value[j] + 1e-5) +
                          ps[1]->value[j];
      EXPECT_NEAR(ye[r * c + j], want, 1e-4);
    }
  }
}

TEST(LayerGradientTest, MaxPool2d) {
  base::Rng rng(5);
  MaxPool2d layer("pool", 6, 4, 3, 2, 2);
  // Distinct values on a coarse grid: ties and near-ties are farther apart than eps.
  std::vector<float> x(2 * 6 * 4 * 3);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.1f * static_cast<float>(i);
  rng.Shuffle(x);
  CheckGradients(layer, 2, x, rng);
}

TEST(LayerGradientTest, MaxPool2dOverlappingWindows) {
  base::Rng rng(6);
  MaxPool2d layer("pool", 5, 5, 2, 3, 1);
  std::vector<float> x(1 * 5 * 5 * 2);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.1f * static_cast<float>(i);
  rng.Shuffle(x);
  CheckGradients(layer, 1, x, rng);
}

TEST(LayerGradientTest, MaxPool2dWindowsThatDoNotCoverTheInput) {
  base::Rng rng(13);
  MaxPool2d layer("pool", 5, 7, 2, 2, 2);  // the last row and column belong to no window
  std::vector<float> x(2 * 5 * 7 * 2);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.1f * static_cast<float>(i);
  rng.Shuffle(x);
  CheckGradients(layer, 2, x, rng);
}

TEST(LayerGradientTest, Relu) {
  base::Rng rng(7);
  Relu layer("relu", {4, 3});
  std::vector<float> x(3 * 12);
  FillAwayFromZero(x, rng, 0.05f);
  CheckGradients(layer, 3, x, rng);
}

TEST(LayerGradientTest, Flatten) {
  base::Rng rng(8);
  Flatten layer("flat", {2, 3, 2});
  std::vector<float> x(2 * 12);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  CheckGradients(layer, 2, x, rng);
}

TEST(LayerGradientTest, EmbeddingParameterGradient) {
  base::Rng rng(9);
  Embedding layer("emb", 3, 5, 4);
  RandomizeParameters(layer, rng);
  std::vector<float> ids = {0, 4, 4, 2, 1, 0};  // 2 examples × 3 ids, with repeats
  GradCheckOptions opt;
  opt.check_input = false;
  CheckGradients(layer, 2, ids, rng, opt);
}

TEST(LayerGradientTest, AvgPool2d) {
  base::Rng rng(21);
  AvgPool2d layer("avg", 6, 4, 3, 2, 2);
  std::vector<float> x(2 * layer.input_size());
  for (float& v : x) v = static_cast<float>(rng.Normal());
  CheckGradients(layer, 2, x, rng);
}

TEST(LayerGradientTest, AvgPool2dOverlappingAndUncoveredWindows) {
  base::Rng rng(22);
  for (const auto& c : {std::vector<int>{5, 5, 2, 3, 1}, std::vector<int>{5, 7, 2, 2, 2}}) {
    AvgPool2d layer("avg", c[0], c[1], c[2], c[3], c[4]);
    std::vector<float> x(2 * layer.input_size());
    for (float& v : x) v = static_cast<float>(rng.Normal());
    CheckGradients(layer, 2, x, rng);
  }
}

TEST(LayerValueTest, AvgPool2dAveragesEachWindowPerChannel) {
  AvgPool2d layer("avg", 2, 2, 2, 2, 2);  // one window, two channels
  const std::vector<float> x = {1, 10, 2, 20, 3, 30, 6, 60};
  std::vector<float> y(2);
  layer.Forward(x.data(), 1, y.data(), ComputeMode::kFp32, false);
  EXPECT_FLOAT_EQ(y[0], 3.0f);
  EXPECT_FLOAT_EQ(y[1], 30.0f);
  EXPECT_EQ(layer.output_shape(), (std::vector<int>{1, 1, 2}));
}

TEST(LayerGradientTest, Sigmoid) {
  base::Rng rng(23);
  Sigmoid layer("sig", {3, 4});
  std::vector<float> x(2 * 12);
  for (float& v : x) v = static_cast<float>(2.0 * rng.Normal());
  CheckGradients(layer, 2, x, rng);
  std::vector<float> y(1);
  Sigmoid one("s", {1});
  const float zero = 0.0f;
  one.Forward(&zero, 1, y.data(), ComputeMode::kFp32, false);
  EXPECT_FLOAT_EQ(y[0], 0.5f);
}

// The scaler divides by its rate (in training and inference alike).
TEST(LayerGradientTest, Scaler) {
  base::Rng rng(25);
  Scaler layer("scale", {2, 3}, 0.25f);
  std::vector<float> x(2 * 6), y(2 * 6), infer(2 * 6), dy(2 * 6), dx(2 * 6);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  for (float& v : dy) v = static_cast<float>(rng.Normal());
  layer.Forward(x.data(), 2, infer.data(), ComputeMode::kFp32, /*training=*/false);
  layer.Forward(x.data(), 2, y.data(), ComputeMode::kFp32, /*training=*/true);
  layer.Backward(x.data(), y.data(), dy.data(), 2, dx.data());
  const float eps = 1e-2f;
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_FLOAT_EQ(infer[i], x[i] * 4.0f);
    EXPECT_FLOAT_EQ(y[i], x[i] * 4.0f);
    std::vector<float> xp = x, xm = x, yp(x.size()), ym(x.size());
    xp[i] += eps;
    xm[i] -= eps;
    layer.Forward(xp.data(), 2, yp.data(), ComputeMode::kFp32, true);
    layer.Forward(xm.data(), 2, ym.data(), ComputeMode::kFp32, true);
    const double numeric = (Dot(yp.data(), dy) - Dot(ym.data(), dy)) / (2.0 * eps);
    EXPECT_NEAR(dx[i], numeric, 1e-3 + 1e-3 * std::fabs(numeric)) << i;
  }
}

TEST(LayerGradientTest, LeakyRelu) {
  base::Rng rng(24);
  LeakyRelu layer("lrelu", {4, 3}, 0.2f);
  std::vector<float> x(3 * 12);
  FillAwayFromZero(x, rng, 0.05f);
  CheckGradients(layer, 3, x, rng);
  const float in[2] = {-2.0f, 3.0f};
  float out[2];
  LeakyRelu pair("p", {2}, 0.2f);
  pair.Forward(in, 1, out, ComputeMode::kFp32, false);
  EXPECT_FLOAT_EQ(out[0], -0.4f);
  EXPECT_FLOAT_EQ(out[1], 3.0f);
}

TEST(LayerShapeTest, ConvAndPoolOutputShapes) {
  Conv2d conv("c", 28, 28, 1, 6, 5, 1, 0);
  EXPECT_EQ(conv.output_shape(), (std::vector<int>{24, 24, 6}));
  Conv2d padded("c", 28, 28, 1, 6, 3, 2, 1);
  EXPECT_EQ(padded.output_shape(), (std::vector<int>{14, 14, 6}));
  MaxPool2d pool("p", 24, 24, 6, 2, 2);
  EXPECT_EQ(pool.output_shape(), (std::vector<int>{12, 12, 6}));
}

// Quantized forward passes approximate fp32 closely.
TEST(QuantizedLayerTest, DenseInt8AndInt4CloseToFp32) {
  base::Rng rng(10);
  Dense layer("fc", 256, 64, true);
  RandomizeParameters(layer, rng);
  const int batch = 8;
  std::vector<float> x(batch * 256), y32(batch * 64), y8(batch * 64), y4(batch * 64);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  layer.Forward(x.data(), batch, y32.data(), ComputeMode::kFp32, false);
  layer.Forward(x.data(), batch, y8.data(), ComputeMode::kInt8, false);
  layer.Forward(x.data(), batch, y4.data(), ComputeMode::kInt4, false);
  double err8 = 0, err4 = 0, norm = 0;
  for (size_t i = 0; i < y32.size(); ++i) {
    norm += y32[i] * y32[i];
    err8 += (y8[i] - y32[i]) * (y8[i] - y32[i]);
    err4 += (y4[i] - y32[i]) * (y4[i] - y32[i]);
  }
  EXPECT_LT(std::sqrt(err8 / norm), 0.02);  // int8: ~1% relative error
  EXPECT_LT(std::sqrt(err4 / norm), 0.15);  // int4: ~10%
  EXPECT_GT(std::sqrt(err4 / norm), std::sqrt(err8 / norm));
}

TEST(QuantizedLayerTest, Conv2dInt8CloseToFp32) {
  base::Rng rng(11);
  Conv2d layer("conv", 12, 12, 3, 8, 5, 1, 2);
  RandomizeParameters(layer, rng);
  const int batch = 2;
  std::vector<float> x(batch * layer.input_size()), y32(batch * layer.output_size()),
      y8(y32.size());
  for (float& v : x) v = static_cast<float>(rng.Normal());
  layer.Forward(x.data(), batch, y32.data(), ComputeMode::kFp32, false);
  layer.Forward(x.data(), batch, y8.data(), ComputeMode::kInt8, false);
  double err = 0, norm = 0;
  for (size_t i = 0; i < y32.size(); ++i) {
    norm += y32[i] * y32[i];
    err += (y8[i] - y32[i]) * (y8[i] - y32[i]);
  }
  EXPECT_LT(std::sqrt(err / norm), 0.02);
}

// int4 convolution runs its im2col chunk by chunk (its scratch bounded by the chunk, not the
// batch) and gives the bits of the whole-batch computation: im2col of every example,
// per-tensor quantization, one int4 GEMM. A batch of 40 28×28 examples spans several chunks.
TEST(QuantizedLayerTest, Conv2dInt4InChunksEqualsTheWholeBatchProduct) {
  base::Rng rng(12);
  Conv2d layer("conv", 28, 28, 1, 6, 5, 1, 2);
  RandomizeParameters(layer, rng);
  const int batch = 40;
  std::vector<float> x(static_cast<size_t>(batch) * layer.input_size());
  for (float& v : x) v = static_cast<float>(rng.Normal());
  std::vector<float> y(static_cast<size_t>(batch) * layer.output_size());
  layer.Forward(x.data(), batch, y.data(), ComputeMode::kInt4, false);

  kernels::ConvGeometry g;
  g.height = 28;
  g.width = 28;
  g.channels = 1;
  g.kernel = 5;
  g.padding = 2;
  g.out_height = 28;
  g.out_width = 28;
  const int k = g.k();
  std::vector<float> cols(static_cast<size_t>(batch) * g.rows() * k);
  kernels::Im2Col_ref(g, x.data(), batch, g.input_size(), cols.data(), k);
  kernels::QuantizedActivations qa;
  kernels::QuantizeActivations(cols.data(), batch * static_cast<int>(g.rows()), k, k, &qa);
  Parameter* w = layer.parameters()[0];
  Parameter* b = layer.parameters()[1];
  kernels::PackedWeightsQ4 w4;
  kernels::QuantizeWeightsQ4(w->value.data(), 6, k, k, &w4);
  std::vector<float> want(y.size());
  kernels::QGemmQ4_ref(qa, w4, kernels::Epilogue{b->value.data(), false}, want.data(), 6);
  ASSERT_EQ(y.size(), want.size());
  for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], want[i]) << i;
}

// Straight-through estimator: the int8 backward's input gradient and bias gradient equal
// the fp32 backward's evaluated at the fake-quantized weights and inputs; its weight
// gradient is that product with dy rounded to 8 bits too (per tensor, over dyᵀ), run on the
// int8 GEMM.
TEST(QuantizedLayerTest, Int8BackwardIsStraightThroughAtFakeQuantizedOperands) {
  base::Rng rng(12);
  const int in = 40, out = 24, batch = 5;
  Dense q("fc", in, out, true), ref("fc", in, out, true);
  RandomizeParameters(q, rng);
  std::vector<float> x(batch * in), dy(batch * out), y(batch * out);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  for (float& v : dy) v = static_cast<float>(rng.Normal());

  // Fake-quantize by hand with the kernels' quantizers.
  kernels::PackedWeightsS8 w8;
  kernels::QuantizeWeightsS8(q.parameters()[0]->value.data(), out, in, in, &w8);
  kernels::DequantizeWeightsS8(w8, ref.parameters()[0]->value.data(), in);
  ref.parameters()[1]->value = q.parameters()[1]->value;
  kernels::QuantizedActivations qa;
  kernels::QuantizeActivations(x.data(), batch, in, in, &qa);
  std::vector<float> x_fq(x.size());
  kernels::DequantizeActivations(qa, x_fq.data(), in);

  std::vector<float> dx_q(x.size()), dx_ref(x.size());
  q.Forward(x.data(), batch, y.data(), ComputeMode::kInt8, true);
  q.Backward(x.data(), y.data(), dy.data(), batch, dx_q.data());
  ref.Forward(x_fq.data(), batch, y.data(), ComputeMode::kFp32, true);
  ref.Backward(x_fq.data(), y.data(), dy.data(), batch, dx_ref.data());
  for (size_t i = 0; i < dx_q.size(); ++i) EXPECT_NEAR(dx_q[i], dx_ref[i], 1e-5);
  const auto& bq = q.parameters()[1]->grad;
  const auto& br = ref.parameters()[1]->grad;
  for (size_t i = 0; i < bq.size(); ++i) EXPECT_NEAR(bq[i], br[i], 1e-5);
  // dW = dq(dyᵀ) · x_fq, with dyᵀ quantized per tensor by the kernels' quantizer.
  std::vector<float> dy_t(dy.size());
  for (int r = 0; r < batch; ++r) {
    for (int o = 0; o < out; ++o) dy_t[o * batch + r] = dy[r * out + o];
  }
  kernels::QuantizedActivations qd;
  kernels::QuantizeActivations(dy_t.data(), out, batch, batch, &qd);
  const auto& gq = q.parameters()[0]->grad;
  const auto& gr = ref.parameters()[0]->grad;
  double worst_vs_fp32 = 0;
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) {
      double want = 0, terms = 0, bound = 0;
      for (int r = 0; r < batch; ++r) {
        const double d = static_cast<double>(qd.row(o)[r]) * qd.scale;
        want += d * x_fq[r * in + i];
        terms += std::fabs(d * x_fq[r * in + i]);
        bound += 0.5 * qd.scale * std::fabs(x_fq[r * in + i]);  // dy's rounding error
      }
      EXPECT_NEAR(gq[o * in + i], want, 1e-5 * (terms + 1)) << o << "," << i;
      // ... and so within dy's rounding of the fp32 straight-through gradient.
      EXPECT_NEAR(gq[o * in + i], gr[o * in + i], bound + 1e-5);
      worst_vs_fp32 = std::max(worst_vs_fp32, std::fabs(double{gq[o * in + i]} - gr[o * in + i]));
    }
  }
  EXPECT_GT(worst_vs_fp32, 0.0);  // the int8 product really ran
}

// The same for Conv2d, whose int8 path quantizes the whole input once and im2cols int8
// values chunk by chunk (batch large enough for several chunks).
TEST(QuantizedLayerTest, Conv2dInt8BackwardIsStraightThroughAtFakeQuantizedOperands) {
  base::Rng rng(14);
  const int batch = 9;
  Conv2d q("conv", 10, 10, 3, 5, 3, 1, 1), ref("conv", 10, 10, 3, 5, 3, 1, 1);
  RandomizeParameters(q, rng);
  const int in = q.input_size(), out = q.output_size();
  std::vector<float> x(batch * in), dy(batch * out), y(batch * out), y_ref(batch * out);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  for (float& v : dy) v = static_cast<float>(rng.Normal());

  kernels::PackedWeightsS8 w8;
  const int kdim = 3 * 3 * 3;
  kernels::QuantizeWeightsS8(q.parameters()[0]->value.data(), 5, kdim, kdim, &w8);
  kernels::DequantizeWeightsS8(w8, ref.parameters()[0]->value.data(), kdim);
  ref.parameters()[1]->value = q.parameters()[1]->value;
  kernels::QuantizedActivations qa;
  kernels::QuantizeActivations(x.data(), batch, in, in, &qa);
  std::vector<float> x_fq(x.size());
  kernels::DequantizeActivations(qa, x_fq.data(), in);

  std::vector<float> dx_q(x.size()), dx_ref(x.size());
  q.Forward(x.data(), batch, y.data(), ComputeMode::kInt8, true);
  q.Backward(x.data(), y.data(), dy.data(), batch, dx_q.data());
  ref.Forward(x_fq.data(), batch, y_ref.data(), ComputeMode::kFp32, true);
  ref.Backward(x_fq.data(), y_ref.data(), dy.data(), batch, dx_ref.data());
  // The int8 forward equals the fp32 forward of the fake-quantized operands up to fp32
  // rounding (the int8 GEMM sums exactly).
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], y_ref[i], 1e-4 * (1 + std::fabs(y_ref[i])));
  for (size_t i = 0; i < dx_q.size(); ++i) EXPECT_NEAR(dx_q[i], dx_ref[i], 1e-4);
  for (int p = 0; p < 2; ++p) {
    const auto& gq = q.parameters()[p]->grad;
    const auto& gr = ref.parameters()[p]->grad;
    for (size_t i = 0; i < gq.size(); ++i) EXPECT_NEAR(gq[i], gr[i], 1e-3 * (1 + std::fabs(gr[i])));
  }
}

}  // namespace
}  // namespace fedge::model

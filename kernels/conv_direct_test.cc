#include "kernels/conv_direct.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "base/rng.h"
#include "gtest/gtest.h"
#include "kernels/conv.h"
#include "kernels/cpu.h"

namespace fedge::kernels {
namespace {

ConvGeometry Geometry(int h, int w, int c, int k, int pad) {
  ConvGeometry g;
  g.height = h;
  g.width = w;
  g.channels = c;
  g.kernel = k;
  g.stride = 1;
  g.padding = pad;
  g.out_height = ConvOutputSize(h, k, 1, pad);
  g.out_width = ConvOutputSize(w, k, 1, pad);
  return g;
}

struct Case {
  ConvGeometry g;
  int cout = 1;
  int batch = 1;
  std::string Describe() const {
    return "h=" + std::to_string(g.height) + " w=" + std::to_string(g.width) +
           " cin=" + std::to_string(g.channels) + " cout=" + std::to_string(cout) +
           " k=" + std::to_string(g.kernel) + " pad=" + std::to_string(g.padding) +
           " batch=" + std::to_string(batch);
  }
};

// The zoo's convolutions and their adjoints, channel counts around the vector widths (8 and
// 16), output rows shorter and longer than the 8-column block, padding up to kernel − 1.
std::vector<Case> Cases() {
  std::vector<Case> out = {
      {Geometry(28, 28, 1, 5, 0), 6, 3},  {Geometry(12, 12, 6, 5, 0), 16, 2},
      {Geometry(28, 28, 1, 5, 2), 6, 1},  {Geometry(8, 8, 16, 3, 1), 16, 2},
      {Geometry(5, 5, 8, 1, 0), 9, 1},    {Geometry(1, 1, 1, 1, 0), 1, 1},
      {Geometry(1, 1, 3, 3, 2), 5, 2},    {Geometry(9, 17, 33, 3, 1), 33, 1},
      {Geometry(6, 7, 64, 2, 1), 64, 1},  {Geometry(4, 4, 2, 4, 3), 8, 2},
  };
  base::Rng rng(7);
  const int kChannels[] = {1, 2, 3, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64};
  constexpr int kNumChannels = sizeof(kChannels) / sizeof(kChannels[0]);
  while (out.size() < 80) {
    const int k = 1 + static_cast<int>(rng.UniformInt(5));
    const int pad = static_cast<int>(rng.UniformInt(k));
    const int h = 1 + static_cast<int>(rng.UniformInt(12));
    const int w = 1 + static_cast<int>(rng.UniformInt(20));
    if (h + 2 * pad < k || w + 2 * pad < k) continue;
    const int cin = kChannels[rng.UniformInt(kNumChannels)];
    const int cout = kChannels[rng.UniformInt(kNumChannels)];
    out.push_back({Geometry(h, w, cin, k, pad), cout, 1 + static_cast<int>(rng.UniformInt(3))});
  }
  return out;
}

std::vector<float> Random(int64_t n, base::Rng& rng) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = static_cast<float>(rng.Normal());
  return v;
}

std::vector<Isa> Variants() {
  std::vector<Isa> out = {Isa::kPortable};
  if (CpuSupports(Isa::kAvx2)) out.push_back(Isa::kAvx2);
  if (CpuSupports(Isa::kAvx512Vnni)) out.push_back(Isa::kAvx512Vnni);
  return out;
}

// The textbook products in double through im2col (conv.h's reference), with Σ|terms| per
// result for the tolerance: y = cols · Wᵀ + bias, dx = col2im(dy · W), dW = dyᵀ · cols.
struct Expected {
  std::vector<double> y, y_abs, dx, dx_abs, dw, dw_abs;
};

Expected Textbook(const Case& c, const std::vector<float>& x, const std::vector<float>& w,
                  const std::vector<float>& bias, const std::vector<float>& dy) {
  const ConvGeometry& g = c.g;
  const int64_t kk = g.k(), rows = g.rows() * c.batch;
  std::vector<float> cols(static_cast<size_t>(rows * kk));
  Im2Col_ref(g, x.data(), c.batch, g.input_size(), cols.data(), kk);
  Expected e;
  e.y.assign(static_cast<size_t>(rows * c.cout), 0.0);
  e.y_abs = e.y;
  e.dw.assign(static_cast<size_t>(c.cout * kk), 0.0);
  e.dw_abs = e.dw;
  std::vector<double> dcols(static_cast<size_t>(rows * kk), 0.0), dcols_abs = dcols;
  for (int64_t r = 0; r < rows; ++r) {
    for (int co = 0; co < c.cout; ++co) {
      double s = bias[co], a = std::fabs(bias[co]);
      const double d = dy[r * c.cout + co];
      for (int64_t t = 0; t < kk; ++t) {
        const double p = static_cast<double>(cols[r * kk + t]) * w[co * kk + t];
        s += p;
        a += std::fabs(p);
        e.dw[co * kk + t] += d * cols[r * kk + t];
        e.dw_abs[co * kk + t] += std::fabs(d * cols[r * kk + t]);
        dcols[r * kk + t] += d * w[co * kk + t];
        dcols_abs[r * kk + t] += std::fabs(d * w[co * kk + t]);
      }
      e.y[r * c.cout + co] = s;
      e.y_abs[r * c.cout + co] = a;
    }
  }
  // col2im in double: every column goes back onto the input element it was copied from.
  e.dx.assign(static_cast<size_t>(g.input_size() * c.batch), 0.0);
  e.dx_abs = e.dx;
  for (int b = 0; b < c.batch; ++b) {
    for (int oh = 0; oh < g.out_height; ++oh) {
      for (int ow = 0; ow < g.out_width; ++ow) {
        const int64_t r = (static_cast<int64_t>(b) * g.out_height + oh) * g.out_width + ow;
        for (int kh = 0; kh < g.kernel; ++kh) {
          for (int kw = 0; kw < g.kernel; ++kw) {
            const int ih = oh - g.padding + kh, iw = ow - g.padding + kw;
            if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) continue;
            for (int ci = 0; ci < g.channels; ++ci) {
              const int64_t t = (static_cast<int64_t>(kh) * g.kernel + kw) * g.channels + ci;
              const int64_t at =
                  b * g.input_size() + (static_cast<int64_t>(ih) * g.width + iw) * g.channels + ci;
              e.dx[at] += dcols[r * kk + t];
              e.dx_abs[at] += dcols_abs[r * kk + t];
            }
          }
        }
      }
    }
  }
  return e;
}

// |got − want| ≤ 1e-5 · Σ|terms| (+ a denormal floor), for every element.
void ExpectClose(const std::vector<float>& got, const std::vector<double>& want,
                 const std::vector<double>& abs, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 1e-5 * abs[i] + 1e-30) << what << " at " << i;
  }
}

constexpr float kSentinel = 12345.0f;

TEST(ConvDirectTest, ForwardMatchesTheTextbookProductInEveryVariant) {
  base::Rng rng(1);
  for (const Case& c : Cases()) {
    const ConvGeometry& g = c.g;
    ASSERT_TRUE(DirectConvSupported(g, c.cout)) << c.Describe();
    const auto x = Random(g.input_size() * c.batch, rng);
    const auto w = Random(c.cout * g.k(), rng);
    const auto bias = Random(c.cout, rng);
    const auto dy = Random(g.rows() * c.batch * c.cout, rng);
    const Expected e = Textbook(c, x, w, bias, dy);
    std::vector<float> wp(static_cast<size_t>(g.k() * DirectConvPadded(c.cout)));
    PackConvWeights(g, c.cout, w.data(), wp.data());
    std::vector<float> scratch(static_cast<size_t>(DirectConvScratch(g)) + 1);
    const size_t n = static_cast<size_t>(g.rows() * c.batch * c.cout);
    for (Isa isa : std::vector<Isa>{Isa::kRef, Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni}) {
      if (isa != Isa::kRef && !CpuSupports(isa)) continue;
      // A sentinel after the output: no variant writes past it.
      std::vector<float> y(n + 16, kSentinel);
      ConvDirect(g, c.cout, x.data(), c.batch, wp.data(), bias.data(), y.data(),
                 scratch.data(), isa);
      for (size_t i = n; i < y.size(); ++i) ASSERT_EQ(y[i], kSentinel) << c.Describe();
      y.resize(n);
      ExpectClose(y, e.y, e.y_abs, c.Describe() + " forward " + IsaName(isa));
    }
  }
}

TEST(ConvDirectTest, WeightAndBiasGradientsMatchTheTextbookSumsAndAccumulate) {
  base::Rng rng(3);
  for (const Case& c : Cases()) {
    const ConvGeometry& g = c.g;
    const auto x = Random(g.input_size() * c.batch, rng);
    const auto w = Random(c.cout * g.k(), rng);
    const std::vector<float> bias(static_cast<size_t>(c.cout), 0.0f);
    const auto dy = Random(g.rows() * c.batch * c.cout, rng);
    Expected e = Textbook(c, x, w, bias, dy);
    const auto start = Random(c.cout * g.k(), rng);  // dw accumulates onto what it holds
    for (size_t i = 0; i < start.size(); ++i) {
      e.dw[i] += start[i];
      e.dw_abs[i] += std::fabs(start[i]);
    }
    std::vector<float> scratch(static_cast<size_t>(DirectConvGradScratch(g, c.cout)));
    // db = what it held + Σ dy per channel.
    const auto bias_start = Random(c.cout, rng);
    std::vector<double> want_db(bias_start.begin(), bias_start.end()), want_db_abs(c.cout);
    for (int co = 0; co < c.cout; ++co) {
      want_db_abs[co] = std::fabs(bias_start[co]);
      for (int64_t p = 0; p < g.rows() * c.batch; ++p) {
        want_db[co] += dy[p * c.cout + co];
        want_db_abs[co] += std::fabs(dy[p * c.cout + co]);
      }
    }
    for (Isa isa : std::vector<Isa>{Isa::kRef, Isa::kPortable, Isa::kAvx2, Isa::kAvx512Vnni}) {
      if (isa != Isa::kRef && !CpuSupports(isa)) continue;
      std::vector<float> dw = start;
      std::vector<float> db(bias_start);
      ConvDirectWeightGrad(g, c.cout, x.data(), dy.data(), c.batch, dw.data(), db.data(),
                           scratch.data(), isa);
      ExpectClose(dw, e.dw, e.dw_abs, c.Describe() + " weight gradient " + IsaName(isa));
      ExpectClose(db, want_db, want_db_abs, c.Describe() + " bias gradient " + IsaName(isa));
      // Without db, dw alone.
      std::vector<float> dw_only = start;
      ConvDirectWeightGrad(g, c.cout, x.data(), dy.data(), c.batch, dw_only.data(), nullptr,
                           scratch.data(), isa);
      ExpectClose(dw_only, e.dw, e.dw_abs, c.Describe() + " weight gradient alone");
    }
  }
}

TEST(ConvDirectTest, SupportsOnlyStrideOneSmallChannelsAndPaddingBelowTheKernel) {
  EXPECT_TRUE(DirectConvSupported(Geometry(28, 28, 1, 5, 0), 6));
  EXPECT_TRUE(DirectConvSupported(Geometry(8, 8, 64, 3, 2), 64));
  EXPECT_FALSE(DirectConvSupported(Geometry(8, 8, 65, 3, 1), 16));
  EXPECT_FALSE(DirectConvSupported(Geometry(8, 8, 16, 3, 1), 65));
  EXPECT_FALSE(DirectConvSupported(Geometry(8, 8, 16, 3, 3), 16));
  ConvGeometry strided = Geometry(8, 8, 16, 3, 1);
  strided.stride = 2;
  strided.out_height = strided.out_width = ConvOutputSize(8, 3, 2, 1);
  EXPECT_FALSE(DirectConvSupported(strided, 16));
  EXPECT_EQ(DirectConvPadded(6), 8);
  EXPECT_EQ(DirectConvPadded(9), 16);
  EXPECT_EQ(DirectConvPadded(33), 48);
}

}  // namespace
}  // namespace fedge::kernels

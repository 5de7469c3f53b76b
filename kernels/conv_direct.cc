// The direct convolution (conv_direct.h): packing, scratch sizes, the scalar references, the
// portable variant (conv_direct_simd.inc for the baseline ISA) and the run-time dispatchers.
// conv_direct_avx2.cc and conv_direct_avx512.cc compile the same source for their ISA.
#include "kernels/conv_direct.h"

#include <cassert>
#include <cstddef>
#include <cstdint>

#define FEDGE_KERNEL_VARIANT(name) name##_portable
#define FEDGE_KERNEL_TARGET
#include "kernels/conv_direct_simd.inc"
#undef FEDGE_KERNEL_VARIANT
#undef FEDGE_KERNEL_TARGET

namespace fedge::kernels {

bool DirectConvSupported(const ConvGeometry& g, int cout) {
  return g.stride == 1 && g.padding >= 0 && g.padding < g.kernel && g.kernel >= 1 &&
         g.channels >= 1 && g.channels <= 64 && cout >= 1 && cout <= 64 && g.out_height >= 1 &&
         g.out_width >= 1;
}

int DirectConvLanes(int cout) { return cout <= 8 ? 8 : 16; }

int DirectConvPadded(int cout) {
  const int lanes = DirectConvLanes(cout);
  return (cout + lanes - 1) / lanes * lanes;
}

void PackConvWeights(const ConvGeometry& g, int cout, const float* w, float* wp) {
  const int cpad = DirectConvPadded(cout);
  const int64_t taps = static_cast<int64_t>(g.kernel) * g.kernel * g.channels;
  for (int64_t t = 0; t < taps; ++t) {
    for (int co = 0; co < cpad; ++co) wp[t * cpad + co] = co < cout ? w[co * taps + t] : 0.0f;
  }
}

int64_t DirectConvScratch(const ConvGeometry& g) {
  if (g.channels == 1) {  // one channel: every example is copied, with a margin per row
    return static_cast<int64_t>(g.height + 2 * g.padding) * SingleRowStride(g);
  }
  if (g.padding == 0) return 0;
  return static_cast<int64_t>(g.height + 2 * g.padding) * (g.width + 2 * g.padding) *
         g.channels;
}

int64_t DirectConvGradScratch(const ConvGeometry& g, int cout) {
  const int64_t taps = static_cast<int64_t>(g.kernel) * g.kernel * g.channels;
  if (g.channels == 1) {
    const int64_t ow_r = (g.out_width + 31) / 32 * 32;
    return cout * taps * 16 + cout * g.out_height * ow_r + DirectConvScratch(g);
  }
  const int64_t cpad = DirectConvPadded(cout);
  return taps * cpad + static_cast<int64_t>(g.out_height) * g.out_width * cpad +
         DirectConvScratch(g);
}

void ConvDirect_ref(const ConvGeometry& g, int cout, const float* x, int batch,
                    const float* wp, const float* bias, float* y, float* scratch) {
  (void)scratch;
  const int k = g.kernel, cin = g.channels, cpad = DirectConvPadded(cout);
  for (int b = 0; b < batch; ++b) {
    for (int oh = 0; oh < g.out_height; ++oh) {
      for (int ow = 0; ow < g.out_width; ++ow) {
        float* yo = y + ((static_cast<int64_t>(b) * g.out_height + oh) * g.out_width + ow) * cout;
        for (int co = 0; co < cout; ++co) {
          float s = bias != nullptr ? bias[co] : 0.0f;
          for (int kh = 0; kh < k; ++kh) {
            const int ih = oh - g.padding + kh;
            if (ih < 0 || ih >= g.height) continue;
            for (int kw = 0; kw < k; ++kw) {
              const int iw = ow - g.padding + kw;
              if (iw < 0 || iw >= g.width) continue;
              for (int ci = 0; ci < cin; ++ci) {
                const int64_t t = (static_cast<int64_t>(kh) * k + kw) * cin + ci;
                s += x[b * g.input_size() + (static_cast<int64_t>(ih) * g.width + iw) * cin + ci] *
                     wp[t * cpad + co];
              }
            }
          }
          yo[co] = s;
        }
      }
    }
  }
}

void ConvDirectWeightGrad_ref(const ConvGeometry& g, int cout, const float* x,
                              const float* dy, int batch, float* dw, float* db, float* scratch) {
  (void)scratch;
  const int k = g.kernel, cin = g.channels;
  if (db != nullptr) {
    const int64_t positions = static_cast<int64_t>(batch) * g.out_height * g.out_width;
    for (int co = 0; co < cout; ++co) {
      float s = 0.0f;
      for (int64_t p = 0; p < positions; ++p) s += dy[p * cout + co];
      db[co] += s;
    }
  }
  for (int co = 0; co < cout; ++co) {
    for (int kh = 0; kh < k; ++kh) {
      for (int kw = 0; kw < k; ++kw) {
        for (int ci = 0; ci < cin; ++ci) {
          float s = 0.0f;
          for (int b = 0; b < batch; ++b) {
            for (int oh = 0; oh < g.out_height; ++oh) {
              const int ih = oh - g.padding + kh;
              if (ih < 0 || ih >= g.height) continue;
              for (int ow = 0; ow < g.out_width; ++ow) {
                const int iw = ow - g.padding + kw;
                if (iw < 0 || iw >= g.width) continue;
                const int64_t pos = (static_cast<int64_t>(b) * g.out_height + oh) * g.out_width + ow;
                s += dy[pos * cout + co] *
                     x[b * g.input_size() + (static_cast<int64_t>(ih) * g.width + iw) * cin + ci];
              }
            }
          }
          dw[((static_cast<int64_t>(co) * k + kh) * k + kw) * cin + ci] += s;
        }
      }
    }
  }
}

void ConvDirect(const ConvGeometry& g, int cout, const float* x, int batch, const float* wp,
                const float* bias, float* y, float* scratch, Isa isa) {
  assert(DirectConvSupported(g, cout));
  FEDGE_KERNEL_DISPATCH(ConvDirect, g, cout, x, batch, wp, bias, y, scratch)
}

void ConvDirectWeightGrad(const ConvGeometry& g, int cout, const float* x, const float* dy,
                          int batch, float* dw, float* db, float* scratch, Isa isa) {
  assert(DirectConvSupported(g, cout));
  FEDGE_KERNEL_DISPATCH(ConvDirectWeightGrad, g, cout, x, dy, batch, dw, db, scratch)
}

}  // namespace fedge::kernels

// im2col / col2im: the scalar references, the portable variant (conv_simd.inc for the
// baseline ISA) and the run-time dispatchers. conv_avx2.cc and conv_avx512.cc compile the
// same source for their ISA (a target attribute on each function).
#include "kernels/conv.h"

#include <cassert>
#include <cstddef>
#include <cstdint>

#define FEDGE_KERNEL_VARIANT(name) name##_portable
#define FEDGE_KERNEL_TARGET
#include "kernels/conv_simd.inc"
#undef FEDGE_KERNEL_VARIANT
#undef FEDGE_KERNEL_TARGET

namespace fedge::kernels {
namespace {

template <typename T>
void Im2ColRef(const ConvGeometry& g, const T* x, int batch, int64_t ldx, T* cols,
               int64_t ldc) {
  const int k = g.kernel;
  for (int b = 0; b < batch; ++b) {
    for (int oh = 0; oh < g.out_height; ++oh) {
      for (int ow = 0; ow < g.out_width; ++ow) {
        const int64_t r = (static_cast<int64_t>(b) * g.out_height + oh) * g.out_width + ow;
        for (int kh = 0; kh < k; ++kh) {
          for (int kw = 0; kw < k; ++kw) {
            const int ih = oh * g.stride - g.padding + kh;
            const int iw = ow * g.stride - g.padding + kw;
            const bool inside = ih >= 0 && ih < g.height && iw >= 0 && iw < g.width;
            for (int c = 0; c < g.channels; ++c) {
              const int64_t col = (kh * k + kw) * g.channels + c;
              const int64_t at = (static_cast<int64_t>(ih) * g.width + iw) * g.channels + c;
              cols[r * ldc + col] = inside ? x[b * ldx + at] : T(0);
            }
          }
        }
      }
    }
  }
}

template <typename T>
void DispatchIm2Col(const ConvGeometry& g, const T* x, int batch, int64_t ldx, T* cols,
                    int64_t ldc, Isa isa) {
  assert(ldc >= g.k() && ldx >= g.input_size() && ldc <= INT32_MAX && ldx <= INT32_MAX);
  FEDGE_KERNEL_DISPATCH(Im2Col, g, x, batch, ldx, cols, ldc)
}

}  // namespace

void Im2Col_ref(const ConvGeometry& g, const float* x, int batch, int64_t ldx, float* cols,
                int64_t ldc) {
  Im2ColRef(g, x, batch, ldx, cols, ldc);
}

void Im2Col_ref(const ConvGeometry& g, const int8_t* x, int batch, int64_t ldx, int8_t* cols,
                int64_t ldc) {
  Im2ColRef(g, x, batch, ldx, cols, ldc);
}

void Col2Im_ref(const ConvGeometry& g, const float* cols, int batch, int64_t ldc, float* dx) {
  const int k = g.kernel;
  for (int64_t i = 0; i < batch * g.input_size(); ++i) dx[i] = 0.0f;
  for (int b = 0; b < batch; ++b) {
    for (int oh = 0; oh < g.out_height; ++oh) {
      for (int ow = 0; ow < g.out_width; ++ow) {
        const int64_t r = (static_cast<int64_t>(b) * g.out_height + oh) * g.out_width + ow;
        for (int kh = 0; kh < k; ++kh) {
          for (int kw = 0; kw < k; ++kw) {
            const int ih = oh * g.stride - g.padding + kh;
            const int iw = ow * g.stride - g.padding + kw;
            if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) continue;
            for (int c = 0; c < g.channels; ++c) {
              const int64_t col = (kh * k + kw) * g.channels + c;
              const int64_t at = (static_cast<int64_t>(ih) * g.width + iw) * g.channels + c;
              dx[b * g.input_size() + at] += cols[r * ldc + col];
            }
          }
        }
      }
    }
  }
}

void Im2Col(const ConvGeometry& g, const float* x, int batch, int64_t ldx, float* cols,
            int64_t ldc, Isa isa) {
  DispatchIm2Col(g, x, batch, ldx, cols, ldc, isa);
}

void Im2Col(const ConvGeometry& g, const int8_t* x, int batch, int64_t ldx, int8_t* cols,
            int64_t ldc, Isa isa) {
  DispatchIm2Col(g, x, batch, ldx, cols, ldc, isa);
}

void Col2Im(const ConvGeometry& g, const float* cols, int batch, int64_t ldc, float* dx,
            Isa isa) {
  assert(ldc >= g.k() && ldc <= INT32_MAX);
  FEDGE_KERNEL_DISPATCH(Col2Im, g, cols, batch, ldc, dx)
}

}  // namespace fedge::kernels

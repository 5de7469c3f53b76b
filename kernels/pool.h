// NHWC 2-D pooling, forward and backward: max pooling and average pooling over square
// kernel × kernel windows moved by `stride`, without padding. An example's input is
// [height, width, channels], its output [out_height, out_width, channels] with
// out = (size − kernel) / stride + 1; rows and columns that no window reaches get zero
// gradient.
//
// Max pooling: y is the window's maximum, the first one in row-major window order when
// several are equal (as a chain of std::max). Its backward routes each dy to the window's
// first position holding y (found again from x and y, so no arg-max is stored).
// Average pooling: y = (Σ over the window, row-major) · (1/kernel²); its backward adds
// dy · (1/kernel²) to each position of the window.
//
// Exactness: the optimized variants are bit-exact with the *_ref functions, except that an
// element of dx that receives no gradient may be −0 instead of +0 in MaxPoolBackward (the
// 2×2 path multiplies dy by 0/1 masks); the values compare equal. NaN inputs are not
// covered by that promise.
//
// Variants: `*_ref` (scalar, always built), `*_portable` (plain C++ for the auto-vectorizer,
// any CPU), `*_avx2` and `*_avx512` (the portable source compiled with that ISA's flags,
// x86-64 only). The unsuffixed functions pick one at run time (cpu.h).
#ifndef FEDGE_KERNELS_POOL_H_
#define FEDGE_KERNELS_POOL_H_

#include <cstdint>

#include "kernels/cpu.h"

namespace fedge::kernels {

struct PoolGeometry {
  int height = 0, width = 0, channels = 0;  // one example's input, NHWC
  int kernel = 0, stride = 1;
  int out_height = 0, out_width = 0;  // (size − kernel) / stride + 1
  int64_t input_size() const { return static_cast<int64_t>(height) * width * channels; }
  int64_t output_size() const {
    return static_cast<int64_t>(out_height) * out_width * channels;
  }
};

// (size − kernel) / stride + 1.
inline int PoolOutputSize(int size, int kernel, int stride) {
  return (size - kernel) / stride + 1;
}

// The geometry of `kernel` × `kernel` windows at `stride` over height × width × channels.
inline PoolGeometry MakePoolGeometry(int height, int width, int channels, int kernel,
                                     int stride) {
  return {height, width, channels, kernel, stride, PoolOutputSize(height, kernel, stride),
          PoolOutputSize(width, kernel, stride)};
}

// x [batch, input], y [batch, output], dense. REQUIRES: no array overlaps another.
void MaxPoolForward(const PoolGeometry& g, const float* x, int batch, float* y,
                    Isa isa = BestIsa());
// dx = ∂L/∂x from the forward's x and y and dy = ∂L/∂y; every element of dx is written.
void MaxPoolBackward(const PoolGeometry& g, const float* x, const float* y, const float* dy,
                     int batch, float* dx, Isa isa = BestIsa());
void AvgPoolForward(const PoolGeometry& g, const float* x, int batch, float* y,
                    Isa isa = BestIsa());
// dx = ∂L/∂x from dy; every element of dx is written.
void AvgPoolBackward(const PoolGeometry& g, const float* dy, int batch, float* dx,
                     Isa isa = BestIsa());

// The variants, for tests and benchmarks. Call only those the CPU supports.
void MaxPoolForward_ref(const PoolGeometry& g, const float* x, int batch, float* y);
void MaxPoolBackward_ref(const PoolGeometry& g, const float* x, const float* y,
                         const float* dy, int batch, float* dx);
void AvgPoolForward_ref(const PoolGeometry& g, const float* x, int batch, float* y);
void AvgPoolBackward_ref(const PoolGeometry& g, const float* dy, int batch, float* dx);
void MaxPoolForward_portable(const PoolGeometry& g, const float* x, int batch, float* y);
void MaxPoolBackward_portable(const PoolGeometry& g, const float* x, const float* y,
                              const float* dy, int batch, float* dx);
void AvgPoolForward_portable(const PoolGeometry& g, const float* x, int batch, float* y);
void AvgPoolBackward_portable(const PoolGeometry& g, const float* dy, int batch, float* dx);
void MaxPoolForward_avx2(const PoolGeometry& g, const float* x, int batch, float* y);
void MaxPoolBackward_avx2(const PoolGeometry& g, const float* x, const float* y,
                          const float* dy, int batch, float* dx);
void AvgPoolForward_avx2(const PoolGeometry& g, const float* x, int batch, float* y);
void AvgPoolBackward_avx2(const PoolGeometry& g, const float* dy, int batch, float* dx);
void MaxPoolForward_avx512(const PoolGeometry& g, const float* x, int batch, float* y);
void MaxPoolBackward_avx512(const PoolGeometry& g, const float* x, const float* y,
                            const float* dy, int batch, float* dx);
void AvgPoolForward_avx512(const PoolGeometry& g, const float* x, int batch, float* y);
void AvgPoolBackward_avx512(const PoolGeometry& g, const float* dy, int batch, float* dx);

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_POOL_H_

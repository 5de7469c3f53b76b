// The data movement of an NHWC convolution run as GEMM: im2col, which lays each output
// position's receptive field out as one row, and col2im, its adjoint, which adds the rows
// back onto the input positions they came from.
//
// Geometry: an example's input is [height, width, channels] (NHWC, channels innermost); a
// square kernel × kernel window moves by `stride` over the input zero-padded by `padding` on
// every side, giving out_height × out_width positions. Row (b, oh, ow) of the im2col matrix
// is the window at (oh·stride − padding, ow·stride − padding), laid out [kernel, kernel,
// channels] (kernel rows, then kernel columns, then channels), K = kernel²·channels columns;
// positions outside the input are zero.
//
// A transposed convolution is the adjoint of a convolution: its forward pass is col2im and
// its backward pass im2col, with the geometry of the convolution it transposes (input =
// the transposed convolution's output).
//
// Exactness: im2col only copies; col2im adds the contributions to each input element in row
// order (b, oh, ow, then kh, kw), in every variant. All variants are bit-exact with the
// *_ref functions.
//
// Variants: `*_ref` (scalar, always built), `*_portable` (plain C++ for the auto-vectorizer,
// any CPU), `*_avx2` and `*_avx512` (the portable source compiled with that ISA's flags,
// x86-64 only). The unsuffixed functions pick one at run time (cpu.h).
#ifndef FEDGE_KERNELS_CONV_H_
#define FEDGE_KERNELS_CONV_H_

#include <cstdint>

#include "kernels/cpu.h"

namespace fedge::kernels {

struct ConvGeometry {
  int height = 0, width = 0, channels = 0;  // one example's input, NHWC
  int kernel = 0, stride = 1, padding = 0;
  int out_height = 0, out_width = 0;  // (size + 2·padding − kernel) / stride + 1
  int k() const { return kernel * kernel * channels; }  // im2col columns
  int64_t input_size() const { return static_cast<int64_t>(height) * width * channels; }
  int64_t rows() const { return static_cast<int64_t>(out_height) * out_width; }  // per example
};

// (size + 2·padding − kernel) / stride + 1.
inline int ConvOutputSize(int size, int kernel, int stride, int padding) {
  return (size + 2 * padding - kernel) / stride + 1;
}

// Writes the im2col rows of `batch` examples, example b's input at x + b·ldx, into cols
// (row r at cols + r·ldc, b·rows() + oh·out_width + ow). Columns [0, K) of every row are
// written. The optimized variants may also write columns [K, ldc) of a row (with copies of
// input values): a caller keeps no data there, and must not let those columns reach a result
// (zero weights, or outputs it drops).
// REQUIRES: ldc ≥ K; ldx ≥ input_size(); both below 2³¹; cols does not overlap x.
void Im2Col(const ConvGeometry& g, const float* x, int batch, int64_t ldx, float* cols,
            int64_t ldc, Isa isa = BestIsa());
// The same for int8 values (the int8 convolution im2cols its quantized input).
void Im2Col(const ConvGeometry& g, const int8_t* x, int batch, int64_t ldx, int8_t* cols,
            int64_t ldc, Isa isa = BestIsa());

// dx = col2im(cols): zeroes dx [batch, height, width, channels] (example stride
// input_size()), then adds columns [0, K) of every row onto the input element it was copied
// from by Im2Col (padding positions are dropped).
// REQUIRES: K ≤ ldc < 2³¹; dx does not overlap cols.
void Col2Im(const ConvGeometry& g, const float* cols, int batch, int64_t ldc, float* dx,
            Isa isa = BestIsa());

// The variants, for tests and benchmarks. Call only those the CPU supports.
void Im2Col_ref(const ConvGeometry& g, const float* x, int batch, int64_t ldx, float* cols,
                int64_t ldc);
void Im2Col_ref(const ConvGeometry& g, const int8_t* x, int batch, int64_t ldx, int8_t* cols,
                int64_t ldc);
void Col2Im_ref(const ConvGeometry& g, const float* cols, int batch, int64_t ldc, float* dx);
void Im2Col_portable(const ConvGeometry& g, const float* x, int batch, int64_t ldx,
                     float* cols, int64_t ldc);
void Im2Col_portable(const ConvGeometry& g, const int8_t* x, int batch, int64_t ldx,
                     int8_t* cols, int64_t ldc);
void Col2Im_portable(const ConvGeometry& g, const float* cols, int batch, int64_t ldc,
                     float* dx);
void Im2Col_avx2(const ConvGeometry& g, const float* x, int batch, int64_t ldx, float* cols,
                 int64_t ldc);
void Im2Col_avx2(const ConvGeometry& g, const int8_t* x, int batch, int64_t ldx, int8_t* cols,
                 int64_t ldc);
void Col2Im_avx2(const ConvGeometry& g, const float* cols, int batch, int64_t ldc, float* dx);
void Im2Col_avx512(const ConvGeometry& g, const float* x, int batch, int64_t ldx, float* cols,
                   int64_t ldc);
void Im2Col_avx512(const ConvGeometry& g, const int8_t* x, int batch, int64_t ldx,
                   int8_t* cols, int64_t ldc);
void Col2Im_avx512(const ConvGeometry& g, const float* cols, int batch, int64_t ldc,
                   float* dx);

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_CONV_H_

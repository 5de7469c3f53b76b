// Pooling: the scalar references, the portable variant (pool_simd.inc compiled for the
// baseline ISA) and the run-time dispatchers. pool_avx2.cc and pool_avx512.cc compile the
// same source for their ISA (a target attribute on each function).
#include "kernels/pool.h"

#include <cassert>

#define FEDGE_KERNEL_VARIANT(name) name##_portable
#define FEDGE_KERNEL_TARGET
#include "kernels/pool_simd.inc"
#undef FEDGE_KERNEL_VARIANT
#undef FEDGE_KERNEL_TARGET

namespace fedge::kernels {
namespace {

// Offset of element (h, w, c) of example b's input / output.
int64_t In(const PoolGeometry& g, int b, int h, int w, int c) {
  return b * g.input_size() + (static_cast<int64_t>(h) * g.width + w) * g.channels + c;
}
int64_t Out(const PoolGeometry& g, int b, int oh, int ow, int c) {
  return b * g.output_size() + (static_cast<int64_t>(oh) * g.out_width + ow) * g.channels + c;
}

}  // namespace

void MaxPoolForward_ref(const PoolGeometry& g, const float* x, int batch, float* y) {
  for (int b = 0; b < batch; ++b) {
    for (int oh = 0; oh < g.out_height; ++oh) {
      for (int ow = 0; ow < g.out_width; ++ow) {
        for (int c = 0; c < g.channels; ++c) {
          const int h0 = oh * g.stride, w0 = ow * g.stride;
          float m = x[In(g, b, h0, w0, c)];
          for (int kh = 0; kh < g.kernel; ++kh) {
            for (int kw = 0; kw < g.kernel; ++kw) {
              const float v = x[In(g, b, h0 + kh, w0 + kw, c)];
              if (m < v) m = v;
            }
          }
          y[Out(g, b, oh, ow, c)] = m;
        }
      }
    }
  }
}

void MaxPoolBackward_ref(const PoolGeometry& g, const float* x, const float* y,
                         const float* dy, int batch, float* dx) {
  for (int64_t i = 0; i < batch * g.input_size(); ++i) dx[i] = 0.0f;
  for (int b = 0; b < batch; ++b) {
    for (int oh = 0; oh < g.out_height; ++oh) {
      for (int ow = 0; ow < g.out_width; ++ow) {
        for (int c = 0; c < g.channels; ++c) {
          const int h0 = oh * g.stride, w0 = ow * g.stride;
          const float m = y[Out(g, b, oh, ow, c)];
          bool found = false;
          for (int kh = 0; kh < g.kernel && !found; ++kh) {
            for (int kw = 0; kw < g.kernel && !found; ++kw) {
              if (x[In(g, b, h0 + kh, w0 + kw, c)] == m) {
                dx[In(g, b, h0 + kh, w0 + kw, c)] += dy[Out(g, b, oh, ow, c)];
                found = true;
              }
            }
          }
        }
      }
    }
  }
}

void AvgPoolForward_ref(const PoolGeometry& g, const float* x, int batch, float* y) {
  const float inv = 1.0f / static_cast<float>(g.kernel * g.kernel);
  for (int b = 0; b < batch; ++b) {
    for (int oh = 0; oh < g.out_height; ++oh) {
      for (int ow = 0; ow < g.out_width; ++ow) {
        for (int c = 0; c < g.channels; ++c) {
          float sum = 0.0f;
          for (int kh = 0; kh < g.kernel; ++kh) {
            for (int kw = 0; kw < g.kernel; ++kw) {
              sum += x[In(g, b, oh * g.stride + kh, ow * g.stride + kw, c)];
            }
          }
          y[Out(g, b, oh, ow, c)] = sum * inv;
        }
      }
    }
  }
}

void AvgPoolBackward_ref(const PoolGeometry& g, const float* dy, int batch, float* dx) {
  const float inv = 1.0f / static_cast<float>(g.kernel * g.kernel);
  for (int64_t i = 0; i < batch * g.input_size(); ++i) dx[i] = 0.0f;
  for (int b = 0; b < batch; ++b) {
    for (int oh = 0; oh < g.out_height; ++oh) {
      for (int ow = 0; ow < g.out_width; ++ow) {
        for (int c = 0; c < g.channels; ++c) {
          const float share = dy[Out(g, b, oh, ow, c)] * inv;
          for (int kh = 0; kh < g.kernel; ++kh) {
            for (int kw = 0; kw < g.kernel; ++kw) {
              dx[In(g, b, oh * g.stride + kh, ow * g.stride + kw, c)] += share;
            }
          }
        }
      }
    }
  }
}

void MaxPoolForward(const PoolGeometry& g, const float* x, int batch, float* y, Isa isa) {
  FEDGE_KERNEL_DISPATCH(MaxPoolForward, g, x, batch, y)
}

void MaxPoolBackward(const PoolGeometry& g, const float* x, const float* y, const float* dy,
                     int batch, float* dx, Isa isa) {
  FEDGE_KERNEL_DISPATCH(MaxPoolBackward, g, x, y, dy, batch, dx)
}

void AvgPoolForward(const PoolGeometry& g, const float* x, int batch, float* y, Isa isa) {
  FEDGE_KERNEL_DISPATCH(AvgPoolForward, g, x, batch, y)
}

void AvgPoolBackward(const PoolGeometry& g, const float* dy, int batch, float* dx, Isa isa) {
  FEDGE_KERNEL_DISPATCH(AvgPoolBackward, g, dy, batch, dx)
}

}  // namespace fedge::kernels

// Pooling layers: MaxPool2d and AvgPool2d (loops in kernels/pool.h).
#include "model/layers.h"

#include <utility>

#include "kernels/pool.h"

namespace fedge::model {

// ---------------------------------------------------------------------------------------
// MaxPool2d

MaxPool2d::MaxPool2d(std::string name, int height, int width, int channels, int kernel,
                     int stride)
    : Layer(std::move(name), {height, width, channels},
            {(height - kernel) / stride + 1, (width - kernel) / stride + 1, channels}),
      h_(height),
      w_(width),
      c_(channels),
      k_(kernel),
      stride_(stride),
      oh_((height - kernel) / stride + 1),
      ow_((width - kernel) / stride + 1) {}

void MaxPool2d::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  kernels::MaxPoolForward(Geometry(), x, batch, y);
}

void MaxPool2d::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  if (dx == nullptr) return;
  kernels::MaxPoolBackward(Geometry(), x, y, dy, batch, dx);
}

// ---------------------------------------------------------------------------------------
// AvgPool2d

AvgPool2d::AvgPool2d(std::string name, int height, int width, int channels, int kernel,
                     int stride)
    : Layer(std::move(name), {height, width, channels},
            {(height - kernel) / stride + 1, (width - kernel) / stride + 1, channels}),
      h_(height),
      w_(width),
      c_(channels),
      k_(kernel),
      stride_(stride),
      oh_((height - kernel) / stride + 1),
      ow_((width - kernel) / stride + 1) {}

void AvgPool2d::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  kernels::AvgPoolForward(Geometry(), x, batch, y);
}

void AvgPool2d::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  if (dx == nullptr) return;
  kernels::AvgPoolBackward(Geometry(), dy, batch, dx);
}

}  // namespace fedge::model

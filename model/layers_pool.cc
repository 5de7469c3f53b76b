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
            {kernels::PoolOutputSize(height, kernel, stride),
             kernels::PoolOutputSize(width, kernel, stride), channels}),
      geometry_(kernels::MakePoolGeometry(height, width, channels, kernel, stride)) {}

void MaxPool2d::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  kernels::MaxPoolForward(geometry_, x, batch, y);
}

void MaxPool2d::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  if (dx == nullptr) return;
  kernels::MaxPoolBackward(geometry_, x, y, dy, batch, dx);
}

// ---------------------------------------------------------------------------------------
// AvgPool2d

AvgPool2d::AvgPool2d(std::string name, int height, int width, int channels, int kernel,
                     int stride)
    : Layer(std::move(name), {height, width, channels},
            {kernels::PoolOutputSize(height, kernel, stride),
             kernels::PoolOutputSize(width, kernel, stride), channels}),
      geometry_(kernels::MakePoolGeometry(height, width, channels, kernel, stride)) {}

void AvgPool2d::Forward(const float* x, int batch, float* y, ComputeMode mode, bool training) {
  kernels::AvgPoolForward(geometry_, x, batch, y);
}

void AvgPool2d::Backward(const float* x, const float* y, const float* dy, int batch,
                         float* dx) {
  if (dx == nullptr) return;
  kernels::AvgPoolBackward(geometry_, dy, batch, dx);
}

}  // namespace fedge::model

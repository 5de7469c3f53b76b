#include "data/numpy_random.h"

#include <cmath>

namespace fedge::data {

double NumpyRandomState::RandomSample() {
  const int32_t a = static_cast<int32_t>(NextU32() >> 5);
  const int32_t b = static_cast<int32_t>(NextU32() >> 6);
  return (a * 67108864.0 + b) / 9007199254740992.0;
}

uint64_t NumpyRandomState::RandomInterval(uint64_t max) {
  if (max == 0) return 0;
  uint64_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  mask |= mask >> 32;
  uint64_t value;
  if (max <= 0xffffffffULL) {
    while ((value = (NextU32() & mask)) > max) {
    }
  } else {
    do {
      const uint64_t hi = NextU32();
      value = ((hi << 32) | NextU32()) & mask;
    } while (value > max);
  }
  return value;
}

double NumpyRandomState::Gauss() {
  if (has_gauss_) {
    has_gauss_ = false;
    return gauss_;
  }
  double x1, x2, r2;
  do {
    x1 = 2.0 * RandomSample() - 1.0;
    x2 = 2.0 * RandomSample() - 1.0;
    r2 = x1 * x1 + x2 * x2;
  } while (r2 >= 1.0 || r2 == 0.0);
  const double f = std::sqrt(-2.0 * std::log(r2) / r2);
  gauss_ = f * x1;
  has_gauss_ = true;
  return f * x2;
}

double NumpyRandomState::StandardExponential() { return -std::log(1.0 - RandomSample()); }

double NumpyRandomState::StandardGamma(double shape) {
  if (shape == 1.0) return StandardExponential();
  if (shape == 0.0) return 0.0;
  if (shape < 1.0) {
    for (;;) {
      const double u = RandomSample();
      const double v = StandardExponential();
      if (u <= 1.0 - shape) {
        const double x = std::pow(u, 1.0 / shape);
        if (x <= v) return x;
      } else {
        const double y = -std::log((1.0 - u) / shape);
        const double x = std::pow(1.0 - shape + shape * y, 1.0 / shape);
        if (x <= v + y) return x;
      }
    }
  }
  const double b = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * b);
  for (;;) {
    double x, v;
    do {
      x = Gauss();
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = RandomSample();
    if (u < 1.0 - 0.0331 * (x * x) * (x * x)) return b * v;
    if (std::log(u) < 0.5 * x * x + b * (1.0 - v + std::log(v))) return b * v;
  }
}

std::vector<double> NumpyRandomState::Dirichlet(double alpha, int k) {
  std::vector<double> p(k);
  double acc = 0.0;
  for (int j = 0; j < k; ++j) {
    p[j] = StandardGamma(alpha);
    acc = acc + p[j];
  }
  const double inv = 1.0 / acc;
  for (double& x : p) x = x * inv;
  return p;
}

}  // namespace fedge::data

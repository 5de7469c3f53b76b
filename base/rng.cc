#include "base/rng.h"

#include <cmath>

namespace fedge::base {
namespace {

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Rng::Rng(uint64_t seed) : Rng(seed, 0) {}

Rng::Rng(uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ull);
  // Mix the stream in twice so nearby (seed, stream) pairs give unrelated states.
  x = SplitMix64(x) ^ stream;
  for (uint64_t& s : s_) s = SplitMix64(x);
}

uint64_t Rng::NextU64() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

double Rng::Uniform() { return static_cast<double>(NextU64() >> 11) * 0x1.0p-53; }

float Rng::UniformFloat() { return static_cast<float>(NextU64() >> 40) * 0x1.0p-24f; }

uint64_t Rng::UniformInt(uint64_t n) {
  // Lemire's method would be faster; rejection on the top bits keeps it obviously unbiased.
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % n);
  uint64_t r;
  do {
    r = NextU64();
  } while (r >= limit);
  return r % n;
}

double Rng::Normal() {
  if (has_cached_normal_) {
    has_cached_normal_ = false;
    return cached_normal_;
  }
  double u, v, s;
  do {
    u = 2.0 * Uniform() - 1.0;
    v = 2.0 * Uniform() - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  const double m = std::sqrt(-2.0 * std::log(s) / s);
  cached_normal_ = v * m;
  has_cached_normal_ = true;
  return u * m;
}

double Rng::Gamma(double shape) {
  if (shape < 1.0) {
    // Gamma(a) = Gamma(a + 1) * U^(1/a).
    const double u = Uniform();
    return Gamma(shape + 1.0) * std::pow(u > 0 ? u : 0x1.0p-53, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x, v;
    do {
      x = Normal();
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = Uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

std::vector<double> Rng::Dirichlet(double alpha, int k) {
  std::vector<double> p(k);
  double sum = 0.0;
  for (int i = 0; i < k; ++i) sum += (p[i] = Gamma(alpha));
  if (sum <= 0.0) {  // every draw underflowed (tiny alpha): put all mass on one component
    p.assign(k, 0.0);
    p[UniformInt(k)] = 1.0;
    return p;
  }
  for (double& x : p) x /= sum;
  return p;
}

}  // namespace fedge::base

// A seeded random generator whose every output is defined here, bit for bit, so that runs
// reproduce across compilers and standard libraries (std::normal_distribution and friends
// are implementation-defined). Engine: xoshiro256** seeded through SplitMix64.
#ifndef FEDGE_BASE_RNG_H_
#define FEDGE_BASE_RNG_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace fedge::base {

// FNV-1a (64-bit) of a string: a hash that is the same on every build and platform, for
// deriving seeds from names (e.g. a client id: Rng(seed ^ Fnv1a(id), round)).
inline uint64_t Fnv1a(absl::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

class Rng {
 public:
  explicit Rng(uint64_t seed);
  // A generator for stream `stream` of `seed`: independent of Rng(seed) and of other streams.
  Rng(uint64_t seed, uint64_t stream);

  uint64_t NextU64();
  // Uniform in [0, 1) with 53 random bits.
  double Uniform();
  // Uniform float in [0, 1) with 24 random bits.
  float UniformFloat();
  // Uniform integer in [0, n); n > 0. Unbiased (rejection).
  uint64_t UniformInt(uint64_t n);
  // Standard normal (Marsaglia polar method, one value cached).
  double Normal();
  // Gamma(shape, 1), shape > 0 (Marsaglia & Tsang 2000).
  double Gamma(double shape);
  // A draw from Dirichlet(alpha, ..., alpha) with k components.
  std::vector<double> Dirichlet(double alpha, int k);

  // Fisher-Yates shuffle.
  template <typename T>
  void Shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) {
      size_t j = static_cast<size_t>(UniformInt(i));
      std::swap(v[i - 1], v[j]);
    }
  }

 private:
  uint64_t s_[4];
  bool has_cached_normal_ = false;
  double cached_normal_ = 0.0;
};

}  // namespace fedge::base

#endif  // FEDGE_BASE_RNG_H_

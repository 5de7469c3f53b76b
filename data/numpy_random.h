// A random generator whose draws equal numpy's legacy global generator, numpy.random.seed(s)
// followed by numpy.random.shuffle / dirichlet / ... (numpy.random.RandomState: MT19937 and
// the legacy samplers of numpy/random/src/legacy/legacy-distributions.c), bit for bit. It
// exists so that a partition can be the very split a published Python experiment used:
// NIID-Bench seeds numpy with np.random.seed(init_seed) and then partitions
// (data/partition.h, NiidBenchLabelDirichlet).
//
//   NumpyRandomState rs(0);              // np.random.seed(0)
//   rs.Shuffle(idx);                     // np.random.shuffle(idx)
//   std::vector<double> p = rs.Dirichlet(0.5, 10);  // np.random.dirichlet(np.repeat(0.5, 10))
//
// Only what partitioning needs is here. Values agree with numpy 1.17+ RandomState (checked
// against numpy 1.24 in numpy_random_test.cc); logs and powers come from the C library, as
// numpy's do.
#ifndef FEDGE_DATA_NUMPY_RANDOM_H_
#define FEDGE_DATA_NUMPY_RANDOM_H_

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace fedge::data {

class NumpyRandomState {
 public:
  // numpy.random.seed(seed) for an integer seed in [0, 2^32): MT19937's init_genrand.
  explicit NumpyRandomState(uint32_t seed) : mt_(seed) {}

  // The next raw 32-bit MT19937 output.
  uint32_t NextU32() { return static_cast<uint32_t>(mt_()); }
  // random_sample(): 53 bits from two 32-bit outputs, in [0, 1).
  double RandomSample();
  // A uniform integer in [0, max], numpy's random_interval (masked rejection). For shuffles.
  uint64_t RandomInterval(uint64_t max);
  // legacy standard_normal (polar method; the second value of a pair is kept for the next call).
  double Gauss();
  // legacy standard_exponential: −log(1 − U).
  double StandardExponential();
  // legacy standard_gamma(shape), shape ≥ 0.
  double StandardGamma(double shape);
  // dirichlet(np.repeat(alpha, k)): k legacy gammas, each times 1 / their sum. alpha > 0.
  std::vector<double> Dirichlet(double alpha, int k);

  // shuffle(x) of a 1-d array or a list: for i = n−1 down to 1, swap x[i] with
  // x[RandomInterval(i)].
  template <typename T>
  void Shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i-- > 1;) {
      std::swap(v[i], v[static_cast<size_t>(RandomInterval(i))]);
    }
  }

 private:
  std::mt19937 mt_;  // the standard's mt19937 is MT19937 with init_genrand seeding
  bool has_gauss_ = false;
  double gauss_ = 0.0;
};

}  // namespace fedge::data

#endif  // FEDGE_DATA_NUMPY_RANDOM_H_

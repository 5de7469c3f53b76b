// Client-level differential privacy for DP-FedAvg (McMahan et al., ICLR 2018): L2 clipping of
// a whole update, Gaussian noise on the sum (central mode) or per-client shares of it
// (distributed mode), and adaptive clipping to a target quantile (Andrew et al. 2021).
//
// Updates are passed as spans over the tensors' float values, so this layer needs nothing
// from aggregation/ (which sits above it): build a std::vector<absl::Span<float>> over
// aggregation::Tensor::values and pass it.
//
// Noise modes.
//   Central:     the trusted coordinator adds N(0, (z·S)²) to every coordinate of the sum.
//   Distributed: each of the n clients adds N(0, (z·S)²/t) to its own clipped update, where
//                t is the secure-aggregation threshold (the fewest survivors the protocol will
//                unmask). The sum over m ≥ t survivors then carries variance m·(zS)²/t ≥ (zS)²,
//                so the guarantee of noise multiplier z holds whenever the round completes; with
//                m > t survivors the sum is over-noised by sqrt(m/t) (the price of not knowing
//                the survivors in advance). The coordinator sees only the sum (SecAgg), so no
//                single client's share needs to be private on its own.
//   Accounting is the same in both modes: sampled Gaussian with noise multiplier z.
//
// Sampler. NoiseGenerator draws from a ChaCha20 keystream (privacy/sodium.h) keyed by a
// 32-byte seed from libsodium's randombytes_buf (or a fixed seed, for tests), and turns it
// into normals with the Box–Muller transform on 53-bit uniforms u1 ∈ (0, 1], u2:
// sqrt(−2 ln u1)·cos(2π u2) and ·sin(2π u2). Known limitation: like every floating-point
// Gaussian sampler (TF Privacy's, Opacus's), its tails and the fixed-point rounding after it
// are not the ideal continuous distribution; a discrete Gaussian (Canonne, Kamath, Steinke
// 2020) would close that gap and is future work.
#ifndef FEDGE_PRIVACY_DP_H_
#define FEDGE_PRIVACY_DP_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "privacy/sodium.h"

namespace fedge::privacy {

// L2 norm over all coordinates of all tensors (accumulated in double).
double GlobalL2Norm(absl::Span<const absl::Span<float>> tensors);

// Scales every tensor by min(1, clip_norm / ‖update‖₂) in place and returns the pre-clip norm.
// INVALID_ARGUMENT if clip_norm is not finite and > 0, or a value is NaN/∞ (nothing changed).
absl::StatusOr<double> ClipToL2Norm(absl::Span<const absl::Span<float>> tensors,
                                    double clip_norm);

// Noise std on each coordinate of the sum, central mode: z·S.
absl::StatusOr<double> CentralNoiseStddev(double noise_multiplier, double clip_norm);
// Noise std each client adds, distributed mode: z·S/sqrt(t), t = secure-aggregation threshold.
absl::StatusOr<double> DistributedNoiseStddev(double noise_multiplier, double clip_norm,
                                              int64_t threshold);

// Gaussian noise from a cryptographically seeded ChaCha20 stream. Not thread-safe.
class NoiseGenerator final {
 public:
  // Seeded from the OS CSPRNG (libsodium randombytes_buf). INTERNAL if libsodium fails.
  static absl::StatusOr<std::unique_ptr<NoiseGenerator>> Create();
  // Deterministic, for tests and reproducible simulations only.
  static std::unique_ptr<NoiseGenerator> CreateFromSeed(const Seed& seed);

  double StandardNormal();
  // v[i] += N(0, stddev²) for every i. REQUIRES stddev ≥ 0 and finite.
  void AddGaussianNoise(absl::Span<float> values, double stddev);

 private:
  explicit NoiseGenerator(const Seed& seed) : stream_(seed) {}

  ChaChaStream stream_;
  bool has_cached_ = false;
  double cached_ = 0.0;
};

// Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private
// Learning with Adaptive Clipping", Alg. 1, geometric update):
//   each client reports b_i = 1[‖Δ_i‖ ≤ C] (summed by the server, possibly under SecAgg);
//   b̄ = (Σ b_i + N(0, σ_b²)) / m,   m = the number of clients in the round;
//   C ← C · exp(−η (b̄ − γ)),         γ = target quantile, η = clip learning rate.
// The count is released with noise σ_b, which costs privacy: keep the overall multiplier at
// z by noising the update sum with z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) (the paper's Thm. 1),
// available as UpdateNoiseMultiplier().
class AdaptiveClipping final {
 public:
  struct Options {
    double initial_clip_norm = 0.1;       // C⁰ (paper: 0.1)
    double target_quantile = 0.5;         // γ ∈ (0, 1)
    double learning_rate = 0.2;           // η > 0 (paper: 0.2)
    double clipped_count_stddev = 0.0;    // σ_b ≥ 0 (paper: m/20)
  };
  // INVALID_ARGUMENT for out-of-range options.
  static absl::StatusOr<std::unique_ptr<AdaptiveClipping>> Create(const Options& options);

  double clip_norm() const { return clip_norm_; }

  // One round: `num_unclipped` of `num_clients` clients had ‖Δ‖ ≤ clip_norm(). Noises the
  // count with σ_b from `noise` and updates C. INVALID_ARGUMENT if num_clients ≤ 0 or
  // num_unclipped ∉ [0, num_clients] (C unchanged). Returns the noised fraction b̄.
  absl::StatusOr<double> Update(int64_t num_unclipped, int64_t num_clients,
                                NoiseGenerator& noise);
  // The same step from a count that is already noised (distributed mode: the devices added
  // the noise under secure aggregation). INVALID_ARGUMENT if num_clients ≤ 0 or the count is
  // not finite (C unchanged).
  absl::StatusOr<double> UpdateFromNoisedCount(double noised_unclipped, int64_t num_clients);

  // z_Δ for the update sum so that (z_Δ, σ_b) together cost what z alone would.
  // FAILED_PRECONDITION when σ_b is too small for the budget, z⁻² ≤ (2σ_b)⁻² (σ_b = 0
  // included: an un-noised count is not private at all); INVALID_ARGUMENT for z ≤ 0.
  absl::StatusOr<double> UpdateNoiseMultiplier(double noise_multiplier) const;

 private:
  explicit AdaptiveClipping(const Options& o) : options_(o), clip_norm_(o.initial_clip_norm) {}

  Options options_;
  double clip_norm_;
};

}  // namespace fedge::privacy

#endif  // FEDGE_PRIVACY_DP_H_

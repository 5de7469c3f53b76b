// Rényi-DP accounting for the sampled Gaussian mechanism (Mironov, Talwar, Zhang 2019,
// "Rényi Differential Privacy of the Sampled Gaussian Mechanism"), the accountant behind
// DP-FedAvg's (ε, δ) report.
//
// One round of DP-FedAvg with Poisson sampling rate q (clients per round / population) and
// noise multiplier z (noise std / clip norm) is one application of the sampled Gaussian
// mechanism under add/remove-one adjacency. Its RDP at order α is log(A_α)/(α−1), with A_α
// computed in log space:
//   - integer α: the finite binomial series  A_α = Σ_{i=0..α} C(α,i) q^i (1−q)^{α−i}
//                                                     · exp((i²−i)/(2z²));
//   - fractional α: the two-sided infinite series of Mironov et al. §3.3 with erfc terms,
//     summed until both terms fall below e^−30 (as TF Privacy / dp_accounting and Opacus do).
// Composition adds RDP order by order. Conversion to (ε, δ) uses the improved bound of
// Balle et al. 2020 / Canonne, Kamath, Steinke 2020 (Prop. 12 / Prop. 5, the one TF Privacy's
// dp_accounting and Opacus use today):
//   ε(α) = rdp(α) + log((α−1)/α) − (log δ + log α)/(α−1),
// minimised over the orders; orders α ≤ 1.01 give ε = ∞ (as dp_accounting), and if
// δ ≥ sqrt(1 − e^{−rdp}) the order gives ε = 0.
//
// Thread safety: RdpAccountant is a value type; const methods are safe to call concurrently,
// Compose needs external synchronisation.
#ifndef FEDGE_PRIVACY_RDP_ACCOUNTANT_H_
#define FEDGE_PRIVACY_RDP_ACCOUNTANT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace fedge::privacy {

// Opacus's RDPAccountant.DEFAULT_ALPHAS: [1 + x/10 for x in 1..99] + [12, 13, ..., 63].
std::vector<double> DefaultRdpOrders();

// How the fractional-order series treats the generalised binomial coefficients C(α, i),
// which change sign for i > α + 1.
enum class FractionalSeries {
  // Signed terms, as TF Privacy's rdp_accountant.py and Opacus's analysis/rdp.py (default):
  // the series of Mironov et al. summed as written.
  kSigned,
  // |C(α, i)| throughout, as google/differential-privacy's dp_accounting does today: an upper
  // bound on the signed sum, so slightly more conservative (e.g. 3% more RDP at α = 1.5 for
  // q = 0.01, z = 2.5). Integer orders are identical in both.
  kAbsolute,
};

// RDP at `order` of ONE application of the sampled Gaussian mechanism.
// q ∈ [0, 1], noise_multiplier ≥ 0, order > 1 (may be +∞). q = 0 → 0; z = 0 (and q > 0) → ∞;
// q = 1 → α/(2z²). INVALID_ARGUMENT for values outside those ranges or NaN.
absl::StatusOr<double> SampledGaussianRdp(double q, double noise_multiplier, double order,
                                          FractionalSeries series = FractionalSeries::kSigned);

// RDP of `steps` compositions at each order (TF Privacy's compute_rdp).
absl::StatusOr<std::vector<double>> ComputeRdp(double q, double noise_multiplier,
                                               int64_t steps, absl::Span<const double> orders);

struct EpsilonAndOrder {
  double epsilon = 0.0;  // +∞ when no order gives a finite bound
  double order = 0.0;    // the order attaining it
};

// The improved RDP → (ε, δ) conversion above. REQUIRES orders.size() == rdp.size() > 0;
// INVALID_ARGUMENT for δ ∉ (0, 1), negative RDP, orders < 1, or mismatched sizes.
absl::StatusOr<EpsilonAndOrder> EpsilonFromRdp(absl::Span<const double> orders,
                                               absl::Span<const double> rdp, double delta);

// The smallest noise multiplier (to relative precision `tolerance`) such that `steps` rounds
// at rate q give ε ≤ target_epsilon at `delta`, by doubling then bisection on z (ε falls
// monotonically in z). The returned z always meets the target. INVALID_ARGUMENT for bad
// arguments; OUT_OF_RANGE if even z = 1e6 does not reach the target.
absl::StatusOr<double> NoiseMultiplierForEpsilon(double target_epsilon, double delta, double q,
                                                 int64_t steps,
                                                 absl::Span<const double> orders,
                                                 double tolerance = 1e-6);

// Accumulates RDP over rounds that may each have their own q and z.
class RdpAccountant final {
 public:
  // Default orders (DefaultRdpOrders()).
  RdpAccountant();
  // INVALID_ARGUMENT if `orders` is empty or has an order ≤ 1 or NaN.
  static absl::StatusOr<RdpAccountant> Create(std::vector<double> orders);
  // Restores an accountant from its orders and accumulated RDP (e.g. from a checkpoint).
  static absl::StatusOr<RdpAccountant> Restore(std::vector<double> orders,
                                               std::vector<double> rdp);

  // Adds `steps` rounds at sampling rate q and noise multiplier z. On error nothing changes.
  absl::Status Compose(double q, double noise_multiplier, int64_t steps = 1);

  // (ε, order) at `delta` for everything composed so far (ε = 0 before any round).
  absl::StatusOr<EpsilonAndOrder> Epsilon(double delta) const;

  const std::vector<double>& orders() const { return orders_; }
  const std::vector<double>& rdp() const { return rdp_; }
  int64_t steps() const { return steps_; }

 private:
  RdpAccountant(std::vector<double> orders, std::vector<double> rdp);

  std::vector<double> orders_;
  std::vector<double> rdp_;
  int64_t steps_ = 0;
  // Per-step RDP of the last (q, z) composed: rounds usually repeat them.
  double last_q_ = -1, last_z_ = -1;
  std::vector<double> last_step_rdp_;
};

}  // namespace fedge::privacy

#endif  // FEDGE_PRIVACY_RDP_ACCOUNTANT_H_

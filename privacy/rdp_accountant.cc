#include "privacy/rdp_accountant.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace fedge::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(e^x + e^y).
double LogAdd(double x, double y) {
  const double a = std::max(x, y), b = std::min(x, y);
  if (a == -kInf) return -kInf;
  return a + std::log1p(std::exp(b - a));
}

// log(e^x − e^y), x ≥ y; −∞ when equal. A tiny negative excess (round-off) also gives −∞.
double LogSub(double x, double y) {
  if (y == -kInf) return x;
  if (x <= y) return -kInf;
  return x + std::log1p(-std::exp(y - x));
}

// log(erfc(x)), accurate where erfc underflows (asymptotic series for large x).
double LogErfc(double x) {
  if (x < 25.0) return std::log(std::erfc(x));
  // erfc(x) = e^{−x²}/(x√π) · (1 − 1/(2x²) + 3/(2x²)² − 15/(2x²)³ + …)
  const double r = 1.0 / (2.0 * x * x);
  double term = 1.0, sum = 0.0;
  for (int n = 1; n <= 6; ++n) {
    term *= -(2.0 * n - 1.0) * r;
    sum += term;
  }
  return -x * x - std::log(x) - 0.5 * std::log(M_PI) + std::log1p(sum);
}

// log A_α for integer α (finite binomial expansion).
double LogAInt(double q, double sigma, int64_t alpha) {
  double log_a = -kInf;
  const double log_q = std::log(q), log_1mq = std::log1p(-q);
  const double lg_alpha1 = std::lgamma(static_cast<double>(alpha) + 1.0);
  for (int64_t i = 0; i <= alpha; ++i) {
    const double di = static_cast<double>(i);
    const double log_binom =
        lg_alpha1 - std::lgamma(di + 1.0) - std::lgamma(static_cast<double>(alpha - i) + 1.0);
    const double s = log_binom + di * log_q + (static_cast<double>(alpha) - di) * log_1mq +
                     (di * di - di) / (2.0 * sigma * sigma);
    log_a = LogAdd(log_a, s);
  }
  return log_a;
}

// log A_α for fractional α (Mironov et al. 2019, §3.3): two series split at z0.
double LogAFrac(double q, double sigma, double alpha, bool signed_terms) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1.0 / q - 1.0) + 0.5;
  const double log_q = std::log(q), log_1mq = std::log1p(-q);
  double log_abs_coef = 0.0;  // log |C(α, i)|, updated by C(α,i+1) = C(α,i)·(α−i)/(i+1)
  double coef_sign = 1.0;
  for (int64_t i = 0;; ++i) {
    const double di = static_cast<double>(i);
    const double j = alpha - di;
    const double log_t0 = log_abs_coef + di * log_q + j * log_1mq;
    const double log_t1 = log_abs_coef + j * log_q + di * log_1mq;
    const double log_e0 = std::log(0.5) + LogErfc((di - z0) / (M_SQRT2 * sigma));
    const double log_e1 = std::log(0.5) + LogErfc((z0 - j) / (M_SQRT2 * sigma));
    const double log_s0 = log_t0 + (di * di - di) / (2.0 * sigma * sigma) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
    if (coef_sign > 0 || !signed_terms) {
      log_a0 = LogAdd(log_a0, log_s0);
      log_a1 = LogAdd(log_a1, log_s1);
    } else {
      log_a0 = LogSub(log_a0, log_s0);
      log_a1 = LogSub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30.0) break;
    if (i > 100000) break;  // never reached for orders this accountant accepts
    const double factor = (alpha - di) / (di + 1.0);
    if (factor < 0) coef_sign = -coef_sign;
    log_abs_coef += std::log(std::fabs(factor));
  }
  return LogAdd(log_a0, log_a1);
}

absl::Status CheckOrder(double order) {
  if (std::isnan(order) || order <= 1.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("RdpAccountant: order must be > 1, got ", order));
  }
  return absl::OkStatus();
}

absl::Status CheckMechanism(double q, double noise_multiplier) {
  if (!(q >= 0.0 && q <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RdpAccountant: sampling rate must be in [0, 1], got ", q));
  }
  if (!(noise_multiplier >= 0.0) || std::isinf(noise_multiplier)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RdpAccountant: noise multiplier must be finite and >= 0, got ", noise_multiplier));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<double> DefaultRdpOrders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1.0 + x / 10.0);
  for (int a = 12; a < 64; ++a) orders.push_back(a);
  return orders;
}

absl::StatusOr<double> SampledGaussianRdp(double q, double noise_multiplier, double order,
                                          FractionalSeries series) {
  FEDGE_RETURN_IF_ERROR(CheckMechanism(q, noise_multiplier));
  FEDGE_RETURN_IF_ERROR(CheckOrder(order));
  if (q == 0.0) return 0.0;
  if (noise_multiplier == 0.0) return kInf;
  if (std::isinf(order)) return kInf;
  if (q == 1.0) return order / (2.0 * noise_multiplier * noise_multiplier);
  double log_a;
  if (order == std::floor(order) && order < 1e6) {
    log_a = LogAInt(q, noise_multiplier, static_cast<int64_t>(order));
  } else {
    log_a = LogAFrac(q, noise_multiplier, order, series == FractionalSeries::kSigned);
  }
  return std::max(0.0, log_a / (order - 1.0));
}

absl::StatusOr<std::vector<double>> ComputeRdp(double q, double noise_multiplier,
                                               int64_t steps,
                                               absl::Span<const double> orders) {
  if (steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("RdpAccountant: steps must be >= 0, got ", steps));
  }
  std::vector<double> rdp;
  rdp.reserve(orders.size());
  for (double order : orders) {
    FEDGE_ASSIGN_OR_RETURN(double r, SampledGaussianRdp(q, noise_multiplier, order));
    // 0 · ∞ stays 0: zero steps spend nothing.
    rdp.push_back(steps == 0 ? 0.0 : r * static_cast<double>(steps));
  }
  return rdp;
}

absl::StatusOr<EpsilonAndOrder> EpsilonFromRdp(absl::Span<const double> orders,
                                               absl::Span<const double> rdp, double delta) {
  if (orders.empty() || orders.size() != rdp.size()) {
    return absl::InvalidArgumentError(absl::StrCat("RdpAccountant: ", orders.size(),
                                                   " orders but ", rdp.size(), " RDP values"));
  }
  if (!(delta > 0.0 && delta < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RdpAccountant: delta must be in (0, 1), got ", delta));
  }
  EpsilonAndOrder best{kInf, orders[0]};
  for (size_t k = 0; k < orders.size(); ++k) {
    const double a = orders[k], r = rdp[k];
    if (std::isnan(a) || a < 1.0) {
      return absl::InvalidArgumentError(
          absl::StrCat("RdpAccountant: order must be >= 1, got ", a));
    }
    if (std::isnan(r) || r < 0.0) {
      return absl::InvalidArgumentError(
          absl::StrCat("RdpAccountant: RDP must be >= 0, got ", r, " at order ", a));
    }
    double eps;
    if (delta * delta + std::expm1(-r) > 0.0) {
      eps = 0.0;  // δ ≥ sqrt(1 − e^{−r}): this order alone gives (0, δ)-DP
    } else if (a > 1.01 && !std::isinf(a)) {
      eps = r + std::log1p(-1.0 / a) - std::log(delta * a) / (a - 1.0);
    } else {
      eps = kInf;
    }
    if (eps < best.epsilon) best = {eps, a};
  }
  best.epsilon = std::max(0.0, best.epsilon);
  return best;
}

absl::StatusOr<double> NoiseMultiplierForEpsilon(double target_epsilon, double delta, double q,
                                                 int64_t steps,
                                                 absl::Span<const double> orders,
                                                 double tolerance) {
  if (!(target_epsilon > 0.0) || std::isinf(target_epsilon)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RdpAccountant: target epsilon must be finite and > 0, got ", target_epsilon));
  }
  if (!(tolerance > 0.0 && tolerance < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RdpAccountant: tolerance must be in (0, 1), got ", tolerance));
  }
  auto eps_at = [&](double z) -> absl::StatusOr<double> {
    FEDGE_ASSIGN_OR_RETURN(std::vector<double> rdp, ComputeRdp(q, z, steps, orders));
    FEDGE_ASSIGN_OR_RETURN(EpsilonAndOrder e, EpsilonFromRdp(orders, rdp, delta));
    return e.epsilon;
  };
  double lo = 0.0, hi = 1.0;
  for (;;) {
    FEDGE_ASSIGN_OR_RETURN(double e, eps_at(hi));
    if (e <= target_epsilon) break;
    lo = hi;
    hi *= 2.0;
    if (hi > 1e6) {
      return absl::OutOfRangeError(absl::StrCat("RdpAccountant: no noise multiplier up to 1e6 "
                                                "reaches epsilon ",
                                                target_epsilon));
    }
  }
  while (hi - lo > tolerance * hi) {
    const double mid = 0.5 * (lo + hi);
    FEDGE_ASSIGN_OR_RETURN(double e, eps_at(mid));
    if (e <= target_epsilon) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  return hi;
}

RdpAccountant::RdpAccountant() : RdpAccountant(DefaultRdpOrders(), {}) {}

RdpAccountant::RdpAccountant(std::vector<double> orders, std::vector<double> rdp)
    : orders_(std::move(orders)), rdp_(std::move(rdp)) {
  if (rdp_.empty()) rdp_.assign(orders_.size(), 0.0);
}

absl::StatusOr<RdpAccountant> RdpAccountant::Create(std::vector<double> orders) {
  if (orders.empty()) return absl::InvalidArgumentError("RdpAccountant: no orders");
  for (double a : orders) FEDGE_RETURN_IF_ERROR(CheckOrder(a));
  return RdpAccountant(std::move(orders), {});
}

absl::StatusOr<RdpAccountant> RdpAccountant::Restore(std::vector<double> orders,
                                                     std::vector<double> rdp) {
  if (orders.empty() || orders.size() != rdp.size()) {
    return absl::InvalidArgumentError(absl::StrCat("RdpAccountant: ", orders.size(),
                                                   " orders but ", rdp.size(), " RDP values"));
  }
  for (double a : orders) FEDGE_RETURN_IF_ERROR(CheckOrder(a));
  for (double r : rdp) {
    if (std::isnan(r) || r < 0.0) {
      return absl::InvalidArgumentError(absl::StrCat("RdpAccountant: RDP must be >= 0, got ", r));
    }
  }
  return RdpAccountant(std::move(orders), std::move(rdp));
}

absl::Status RdpAccountant::Compose(double q, double noise_multiplier, int64_t steps) {
  if (steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("RdpAccountant: steps must be >= 0, got ", steps));
  }
  if (q != last_q_ || noise_multiplier != last_z_) {
    FEDGE_ASSIGN_OR_RETURN(last_step_rdp_, ComputeRdp(q, noise_multiplier, 1, orders_));
    last_q_ = q;
    last_z_ = noise_multiplier;
  }
  if (steps == 0) return absl::OkStatus();
  for (size_t k = 0; k < rdp_.size(); ++k) {
    rdp_[k] += last_step_rdp_[k] * static_cast<double>(steps);
  }
  steps_ += steps;
  return absl::OkStatus();
}

absl::StatusOr<EpsilonAndOrder> RdpAccountant::Epsilon(double delta) const {
  return EpsilonFromRdp(orders_, rdp_, delta);
}

}  // namespace fedge::privacy

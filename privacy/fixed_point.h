// Fixed-point encoding of float updates into Z_2^32 for secure aggregation, with a scale
// chosen so that the sum of up to `max_summands` encodings cannot wrap.
//
// Each value is clamped to [−B, B] (B = max_abs_value), multiplied by `scale` and rounded to
// the nearest integer, halves away from zero (std::lround), then stored as its two's
// complement mod 2^32. With scale = (2^31 − 1 − n) / (n·B), n = max_summands, every encoded
// value has |q| ≤ B·scale + 1/2, so |Σ q| ≤ 2^31 − 1 − n/2 < 2^31 and the wrapped uint32 sum
// read back as int32 is the exact integer sum. Decoding divides by `scale`: per summand the
// rounding error is at most 1/(2·scale), so the sum is off by at most n/(2·scale).
//
// Choosing B: a clipped update (L2 norm ≤ S) has every coordinate in [−S, S], so B = S
// without noise. With distributed DP each client adds N(0, σ²) before encoding; take
// B = S + 6σ (a coordinate is clamped with probability ~2e−9; clamping distorts only those).
// Example: S = 1, n = 1000 → scale ≈ 2.15e6, resolution 4.7e−7 per summand.
#ifndef FEDGE_PRIVACY_FIXED_POINT_H_
#define FEDGE_PRIVACY_FIXED_POINT_H_

#include <cmath>
#include <cstdint>
#include <limits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"

namespace fedge::privacy {

class FixedPointEncoder final {
 public:
  // INVALID_ARGUMENT unless max_abs_value is finite and > 0 and 1 ≤ max_summands ≤ 2^24.
  static absl::StatusOr<FixedPointEncoder> Create(double max_abs_value, int64_t max_summands) {
    if (!(max_abs_value > 0.0) || std::isinf(max_abs_value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "FixedPoint: max abs value must be finite and > 0, got ", max_abs_value));
    }
    if (max_summands < 1 || max_summands > (int64_t{1} << 24)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "FixedPoint: max summands must be in [1, 2^24], got ", max_summands));
    }
    const double n = static_cast<double>(max_summands);
    return FixedPointEncoder(max_abs_value, (2147483647.0 - n) / (n * max_abs_value),
                             max_summands);
  }

  double scale() const { return scale_; }
  double max_abs_value() const { return max_abs_; }
  int64_t max_summands() const { return max_summands_; }

  // out[i] = encoding of in[i]; returns how many values were clamped to ±B.
  // INVALID_ARGUMENT on a size mismatch or a NaN/∞ value (out unspecified).
  absl::StatusOr<int64_t> Encode(absl::Span<const float> in, absl::Span<uint32_t> out) const {
    if (in.size() != out.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("FixedPoint: ", in.size(), " values for ", out.size(), " slots"));
    }
    int64_t clamped = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      double x = in[i];
      if (!std::isfinite(x)) {
        return absl::InvalidArgumentError(
            absl::StrCat("FixedPoint: non-finite value at coordinate ", i));
      }
      if (x > max_abs_) x = max_abs_, ++clamped;
      if (x < -max_abs_) x = -max_abs_, ++clamped;
      const int64_t q = std::lround(x * scale_);
      out[i] = static_cast<uint32_t>(static_cast<int32_t>(q));
    }
    return clamped;
  }

  // out[i] = int32(sum[i]) / scale. REQUIRES sum.size() == out.size().
  void Decode(absl::Span<const uint32_t> sum, absl::Span<float> out) const {
    for (size_t i = 0; i < sum.size(); ++i) {
      out[i] = static_cast<float>(static_cast<int32_t>(sum[i]) / scale_);
    }
  }

  // acc[i] += v[i] mod 2^32. REQUIRES equal sizes.
  static void AddInPlace(absl::Span<uint32_t> acc, absl::Span<const uint32_t> v) {
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += v[i];
  }

 private:
  FixedPointEncoder(double max_abs, double scale, int64_t n)
      : max_abs_(max_abs), scale_(scale), max_summands_(n) {}

  double max_abs_;
  double scale_;
  int64_t max_summands_;
};

}  // namespace fedge::privacy

#endif  // FEDGE_PRIVACY_FIXED_POINT_H_

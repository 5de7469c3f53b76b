#include "privacy/shamir.h"

#include <sodium.h>

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "privacy/sodium.h"

namespace fedge::privacy {
namespace {

constexpr uint64_t kP = kShamirPrime;
constexpr int kBytesPerElement = 7;

uint64_t Reduce128(unsigned __int128 v) {
  // v < p² < 2^122: fold twice.
  uint64_t lo = static_cast<uint64_t>(v & kP);
  uint64_t hi = static_cast<uint64_t>(v >> 61);
  uint64_t r = lo + (hi & kP) + (hi >> 61);
  r = (r & kP) + (r >> 61);
  return r >= kP ? r - kP : r;
}

uint64_t RandomFieldElement() {
  for (;;) {
    uint64_t v;
    randombytes_buf(&v, sizeof(v));
    v &= (uint64_t{1} << 61) - 1;  // 61 bits; reject p itself (2^61 − 1)
    if (v < kP) return v;
  }
}

absl::Status CheckPoints(absl::Span<const uint64_t> xs) {
  absl::flat_hash_set<uint64_t> seen;
  for (uint64_t x : xs) {
    if (x == 0 || x >= kP) {
      return absl::InvalidArgumentError(
          absl::StrCat("Shamir: evaluation point ", x, " is not in [1, p)"));
    }
    if (!seen.insert(x).second) {
      return absl::InvalidArgumentError(absl::StrCat("Shamir: duplicate share for x = ", x));
    }
  }
  return absl::OkStatus();
}

// Lagrange basis polynomials of `xs` evaluated at `at`.
std::vector<uint64_t> LagrangeAt(absl::Span<const uint64_t> xs, uint64_t at) {
  std::vector<uint64_t> c(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    uint64_t num = 1, den = 1;
    for (size_t j = 0; j < xs.size(); ++j) {
      if (j == i) continue;
      num = FieldMul(num, FieldSub(at, xs[j]));
      den = FieldMul(den, FieldSub(xs[i], xs[j]));
    }
    c[i] = FieldMul(num, FieldInv(den));
  }
  return c;
}

absl::Status CheckShapes(absl::Span<const ShamirShare> shares) {
  for (const ShamirShare& s : shares) {
    if (s.y.size() != shares[0].y.size()) {
      return absl::InvalidArgumentError(absl::StrCat("Shamir: share x = ", s.x, " has ",
                                                     s.y.size(), " values, expected ",
                                                     shares[0].y.size()));
    }
    for (uint64_t v : s.y) {
      if (v >= kP) {
        return absl::InvalidArgumentError(
            absl::StrCat("Shamir: share x = ", s.x, " has a value outside the field"));
      }
    }
  }
  return absl::OkStatus();
}

std::vector<uint64_t> Combine(absl::Span<const ShamirShare> shares,
                              absl::Span<const uint64_t> coeffs) {
  std::vector<uint64_t> out(shares[0].y.size(), 0);
  for (size_t e = 0; e < out.size(); ++e) {
    uint64_t acc = 0;
    for (size_t i = 0; i < coeffs.size(); ++i) acc = FieldAdd(acc, FieldMul(coeffs[i], shares[i].y[e]));
    out[e] = acc;
  }
  return out;
}

}  // namespace

uint64_t FieldAdd(uint64_t a, uint64_t b) {
  uint64_t r = a + b;
  return r >= kP ? r - kP : r;
}
uint64_t FieldSub(uint64_t a, uint64_t b) { return a >= b ? a - b : a + kP - b; }
uint64_t FieldMul(uint64_t a, uint64_t b) {
  return Reduce128(static_cast<unsigned __int128>(a) * b);
}
uint64_t FieldInv(uint64_t a) {
  FEDGE_CHECK(a != 0);
  uint64_t result = 1, base = a, e = kP - 2;
  while (e) {
    if (e & 1) result = FieldMul(result, base);
    base = FieldMul(base, base);
    e >>= 1;
  }
  return result;
}

absl::StatusOr<std::vector<ShamirShare>> ShamirSplit(absl::Span<const uint64_t> secret,
                                                     int threshold,
                                                     absl::Span<const uint64_t> xs) {
  if (threshold < 1 || static_cast<size_t>(threshold) > xs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("Shamir: threshold ", threshold,
                                                   " must be in [1, ", xs.size(), "]"));
  }
  FEDGE_RETURN_IF_ERROR(CheckPoints(xs));
  for (uint64_t s : secret) {
    if (s >= kP) return absl::InvalidArgumentError("Shamir: secret element outside the field");
  }
  FEDGE_RETURN_IF_ERROR(EnsureSodium());
  std::vector<ShamirShare> shares(xs.size());
  for (size_t k = 0; k < xs.size(); ++k) {
    shares[k].x = xs[k];
    shares[k].y.resize(secret.size());
  }
  std::vector<uint64_t> coeffs(threshold);
  for (size_t e = 0; e < secret.size(); ++e) {
    coeffs[0] = secret[e];
    for (int d = 1; d < threshold; ++d) coeffs[d] = RandomFieldElement();
    for (size_t k = 0; k < xs.size(); ++k) {
      uint64_t acc = 0;  // Horner
      for (int d = threshold - 1; d >= 0; --d) acc = FieldAdd(FieldMul(acc, xs[k]), coeffs[d]);
      shares[k].y[e] = acc;
    }
  }
  sodium_memzero(coeffs.data(), coeffs.size() * sizeof(uint64_t));
  return shares;
}

absl::StatusOr<ShamirReconstructor> ShamirReconstructor::Create(absl::Span<const uint64_t> xs,
                                                                uint64_t at) {
  if (xs.empty()) return absl::InvalidArgumentError("Shamir: no shares");
  if (at >= kP) return absl::InvalidArgumentError("Shamir: evaluation point outside the field");
  FEDGE_RETURN_IF_ERROR(CheckPoints(xs));
  return ShamirReconstructor(std::vector<uint64_t>(xs.begin(), xs.end()), LagrangeAt(xs, at));
}

absl::StatusOr<std::vector<uint64_t>> ShamirReconstructor::Reconstruct(
    absl::Span<const ShamirShare> shares) const {
  if (shares.size() != xs_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Shamir: ", shares.size(), " shares for ", xs_.size(), " points"));
  }
  for (size_t i = 0; i < shares.size(); ++i) {
    if (shares[i].x != xs_[i]) {
      return absl::InvalidArgumentError(absl::StrCat("Shamir: share ", i, " has x = ",
                                                     shares[i].x, ", expected ", xs_[i]));
    }
  }
  FEDGE_RETURN_IF_ERROR(CheckShapes(shares));
  return Combine(shares, coeffs_);
}

absl::StatusOr<std::vector<uint64_t>> ShamirReconstruct(absl::Span<const ShamirShare> shares,
                                                        int threshold) {
  if (threshold < 1) {
    return absl::InvalidArgumentError(absl::StrCat("Shamir: threshold ", threshold, " < 1"));
  }
  if (shares.size() < static_cast<size_t>(threshold)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Shamir: ", shares.size(), " shares, need at least ", threshold, " to reconstruct"));
  }
  std::vector<uint64_t> xs;
  for (const ShamirShare& s : shares) xs.push_back(s.x);
  FEDGE_RETURN_IF_ERROR(CheckPoints(xs));
  FEDGE_RETURN_IF_ERROR(CheckShapes(shares));
  auto first = shares.subspan(0, threshold);
  auto first_xs = absl::MakeConstSpan(xs).subspan(0, threshold);
  std::vector<uint64_t> secret = Combine(first, LagrangeAt(first_xs, 0));
  if (shares.size() > static_cast<size_t>(threshold)) {
    const ShamirShare& extra = shares[threshold];
    std::vector<uint64_t> predicted = Combine(first, LagrangeAt(first_xs, extra.x));
    if (predicted != extra.y) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Shamir: shares do not lie on one polynomial of degree ", threshold - 1,
          " (inconsistent or tampered shares)"));
    }
  }
  return secret;
}

std::vector<uint64_t> BytesToFieldElements(absl::Span<const uint8_t> bytes) {
  std::vector<uint64_t> out((bytes.size() + kBytesPerElement - 1) / kBytesPerElement, 0);
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[i / kBytesPerElement] |= static_cast<uint64_t>(bytes[i]) << (8 * (i % kBytesPerElement));
  }
  return out;
}

absl::StatusOr<std::vector<uint8_t>> FieldElementsToBytes(absl::Span<const uint64_t> elements,
                                                          size_t num_bytes) {
  const size_t want = (num_bytes + kBytesPerElement - 1) / kBytesPerElement;
  if (elements.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat("Shamir: ", elements.size(),
                                                   " elements for ", num_bytes,
                                                   " bytes, expected ", want));
  }
  std::vector<uint8_t> out(num_bytes);
  for (size_t e = 0; e < elements.size(); ++e) {
    const size_t nb = std::min<size_t>(kBytesPerElement, num_bytes - e * kBytesPerElement);
    if (elements[e] >> (8 * nb) != 0) {
      return absl::InvalidArgumentError(
          "Shamir: reconstructed value does not decode to bytes (wrong or tampered shares)");
    }
    for (size_t b = 0; b < nb; ++b) {
      out[e * kBytesPerElement + b] = static_cast<uint8_t>(elements[e] >> (8 * b));
    }
  }
  return out;
}

}  // namespace fedge::privacy

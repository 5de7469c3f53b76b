// Shamir t-of-n secret sharing over the prime field F_p, p = 2^61 − 1 (a Mersenne prime:
// products fit in 128 bits and reduce with a shift and an add). Exact: any t shares give the
// secret back bit for bit; t − 1 shares are independent of it.
//
// A secret is a vector of field elements, each shared with its own random polynomial of
// degree t − 1 (coefficients from libsodium's randombytes, rejection-sampled below p); a
// share holds one value per element. Byte strings (a 32-byte seed or X25519 secret key) go
// through BytesToFieldElements: 7 bytes (56 bits) per element, so 32 bytes → 5 elements.
// Decoding rejects an element ≥ 2^56, which catches a wrong reconstruction (from tampered or
// mismatched shares) with probability 1 − 2^−5 per element, ≈ 1 − 2^−25 for a 32-byte secret.
//
// Thread safety: free functions only; ShamirReconstructor is immutable after Create.
#ifndef FEDGE_PRIVACY_SHAMIR_H_
#define FEDGE_PRIVACY_SHAMIR_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace fedge::privacy {

inline constexpr uint64_t kShamirPrime = (uint64_t{1} << 61) - 1;

// Field arithmetic mod p (inputs < p).
uint64_t FieldAdd(uint64_t a, uint64_t b);
uint64_t FieldSub(uint64_t a, uint64_t b);
uint64_t FieldMul(uint64_t a, uint64_t b);
uint64_t FieldInv(uint64_t a);  // REQUIRES a != 0

struct ShamirShare {
  uint64_t x = 0;              // evaluation point, 1 ≤ x < p (SecAgg: the holder's index + 1)
  std::vector<uint64_t> y;     // f_e(x) for every secret element e
  bool operator==(const ShamirShare& o) const { return x == o.x && y == o.y; }
};

// Shares of `secret` for the points `xs` (distinct, in [1, p)) with threshold t.
// INVALID_ARGUMENT if t < 1, t > xs.size(), a point is 0 or ≥ p or repeated, or a secret
// element is ≥ p.
absl::StatusOr<std::vector<ShamirShare>> ShamirSplit(absl::Span<const uint64_t> secret,
                                                     int threshold,
                                                     absl::Span<const uint64_t> xs);

// Lagrange interpolation at `at` (0: the secret) for a fixed set of t points; reuse it for
// many secrets shared over the same holders (the SecAgg server does, for every client with the
// same survivors).
class ShamirReconstructor final {
 public:
  // INVALID_ARGUMENT for a point 0, ≥ p or repeated, or an empty set, or at ≥ p.
  static absl::StatusOr<ShamirReconstructor> Create(absl::Span<const uint64_t> xs,
                                                    uint64_t at = 0);

  // f(at) from shares whose x are exactly xs() in order (the secret when at = 0).
  // INVALID_ARGUMENT on x mismatch, ragged lengths or a value ≥ p.
  absl::StatusOr<std::vector<uint64_t>> Reconstruct(absl::Span<const ShamirShare> shares) const;

  const std::vector<uint64_t>& xs() const { return xs_; }

 private:
  ShamirReconstructor(std::vector<uint64_t> xs, std::vector<uint64_t> coeffs)
      : xs_(std::move(xs)), coeffs_(std::move(coeffs)) {}
  std::vector<uint64_t> xs_;
  std::vector<uint64_t> coeffs_;  // L_i(0)
};

// The secret from any ≥ t shares: interpolates the first t and, if another share is given,
// checks that it lies on the same polynomials (one check catches any single bad share among
// them). FAILED_PRECONDITION with fewer than t shares; INVALID_ARGUMENT for duplicate x,
// ragged lengths, values ≥ p, or shares that do not lie on one polynomial of degree t − 1.
absl::StatusOr<std::vector<uint64_t>> ShamirReconstruct(absl::Span<const ShamirShare> shares,
                                                        int threshold);

// 7 bytes per element, little-endian, last element zero-padded.
std::vector<uint64_t> BytesToFieldElements(absl::Span<const uint8_t> bytes);
// Inverse of the above for `num_bytes` bytes. INVALID_ARGUMENT if the count is wrong or an
// element does not fit its 56 bits (or the padding is not zero): a wrong reconstruction.
absl::StatusOr<std::vector<uint8_t>> FieldElementsToBytes(absl::Span<const uint64_t> elements,
                                                          size_t num_bytes);

}  // namespace fedge::privacy

#endif  // FEDGE_PRIVACY_SHAMIR_H_

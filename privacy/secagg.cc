#include "privacy/secagg.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace fedge::privacy {
namespace {

using Key32 = std::array<uint8_t, 32>;

constexpr int kSecretElements = 5;             // 32 bytes as 7-byte field elements
constexpr size_t kSharePlainBytes = 4 + 4 + 2 * kSecretElements * 8;  // 88
constexpr size_t kNonceBytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;  // 24
constexpr size_t kShareCipherBytes =
    kNonceBytes + kSharePlainBytes + crypto_aead_xchacha20poly1305_ietf_ABYTES;
constexpr char kAdLabel[] = "fedge-secagg-v1";
constexpr char kEncLabel[] = "fedge-secagg-enc";
constexpr char kMaskLabel[] = "fedge-secagg-mask";
constexpr char kCommitLabel[] = "fedge-secagg-commit";
constexpr uint64_t kGraphNonce = 0x6870617267ull;  // "graph"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "SecAgg reads the ChaCha20 keystream as little-endian uint32 via memcpy");

void PutU32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetLe(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

absl::StatusOr<Key32> ParseKey(const std::string& bytes, uint32_t client, const char* what) {
  if (bytes.size() != 32) {
    return absl::InvalidArgumentError(absl::StrCat("SecAgg: client ", client, "'s ", what,
                                                   " public key has ", bytes.size(),
                                                   " bytes, expected 32"));
  }
  Key32 k;
  std::memcpy(k.data(), bytes.data(), 32);
  return k;
}

std::string KeyBytes(const Key32& k) { return std::string(k.begin(), k.end()); }

void NewKeyPair(Key32& sk, Key32& pk) {
  randombytes_buf(sk.data(), sk.size());
  crypto_scalarmult_base(pk.data(), sk.data());
}

// BLAKE2b-256(label ‖ X25519(sk, peer_pk) ‖ pk_lo ‖ pk_hi), public keys ordered by client index.
absl::StatusOr<Key32> AgreeAndDerive(const char* label, const Key32& sk, const Key32& peer_pk,
                                     const Key32& pk_lo, const Key32& pk_hi, uint32_t peer) {
  Key32 shared;
  if (crypto_scalarmult(shared.data(), sk.data(), peer_pk.data()) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg: client ", peer, "'s public key is a low-order point"));
  }
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(label), std::strlen(label));
  crypto_generichash_update(&st, shared.data(), shared.size());
  crypto_generichash_update(&st, pk_lo.data(), pk_lo.size());
  crypto_generichash_update(&st, pk_hi.data(), pk_hi.size());
  Key32 out;
  crypto_generichash_final(&st, out.data(), out.size());
  sodium_memzero(shared.data(), shared.size());
  return out;
}

std::string AssociatedData(uint64_t session, uint32_t from, uint32_t to) {
  std::string ad(kAdLabel);
  PutU64(ad, session);
  PutU32(ad, from);
  PutU32(ad, to);
  return ad;
}

// acc ± PRG(seed), mod 2^32. `scratch` is resized to acc.size().
void ApplyPrg(const Seed& seed, absl::Span<uint32_t> acc, bool subtract,
              std::vector<uint32_t>& scratch) {
  static const uint8_t kZeroNonce[crypto_stream_chacha20_NONCEBYTES] = {0};
  scratch.resize(acc.size());
  crypto_stream_chacha20(reinterpret_cast<uint8_t*>(scratch.data()), scratch.size() * 4,
                         kZeroNonce, seed.data());
  if (subtract) {
    for (size_t i = 0; i < acc.size(); ++i) acc[i] -= scratch[i];
  } else {
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += scratch[i];
  }
}

std::string Commitment(uint64_t session, uint32_t client, const Seed& b) {
  std::string in(kCommitLabel);
  PutU64(in, session);
  PutU32(in, client);
  in.append(reinterpret_cast<const char*>(b.data()), b.size());
  std::string out(32, '\0');
  crypto_generichash(reinterpret_cast<uint8_t*>(out.data()), out.size(),
                     reinterpret_cast<const uint8_t*>(in.data()), in.size(), nullptr, 0);
  sodium_memzero(in.data(), in.size());
  return out;
}

Seed ToSeed(const Key32& k) {
  Seed s;
  std::memcpy(s.data(), k.data(), 32);
  return s;
}

bool SortedUnique(const std::vector<uint32_t>& v) {
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i - 1] >= v[i]) return false;
  }
  return true;
}

// log of the hypergeometric pmf: x successes in `draws` from N with K successes.
double LogHyperPmf(int N, int K, int draws, int x) {
  auto lc = [](int n, int k) {
    return std::lgamma(n + 1.0) - std::lgamma(k + 1.0) - std::lgamma(n - k + 1.0);
  };
  return lc(K, x) + lc(N - K, draws - x) - lc(N, draws);
}
double HyperTail(int N, int K, int draws, int from_x) {  // P[X ≥ from_x]
  double p = 0;
  for (int x = std::max(from_x, std::max(0, draws - (N - K))); x <= std::min(draws, K); ++x) {
    p += std::exp(LogHyperPmf(N, K, draws, x));
  }
  return p;
}
double HyperBelow(int N, int K, int draws, int below_x) {  // P[X < below_x]
  double p = 0;
  for (int x = std::max(0, draws - (N - K)); x < std::min(below_x, std::min(draws, K) + 1); ++x) {
    p += std::exp(LogHyperPmf(N, K, draws, x));
  }
  return p;
}

}  // namespace

// ---- parameters and plan ----------------------------------------------------------------

absl::StatusOr<SecAggPlusParameters> ChooseSecAggPlusParameters(int n, double adversarial_rate,
                                                                double dropout_rate) {
  if (n < 2) return absl::InvalidArgumentError(absl::StrCat("SecAgg: ", n, " clients"));
  if (!(adversarial_rate >= 0 && adversarial_rate < 1) ||
      !(dropout_rate >= 0 && dropout_rate < 1) || adversarial_rate + dropout_rate > 0.9) {
    return absl::FailedPreconditionError(absl::StrCat(
        "SecAgg: infeasible rates adversarial ", adversarial_rate, " dropout ", dropout_rate,
        " (each in [0, 1), sum <= 0.9)"));
  }
  constexpr double kSmall = 1e-14;
  const double log_sec = -41.0 * std::log(2.0);  // 2^-40 split over two bad events
  const double p_sec = std::pow(2.0, -41.0) / n;
  const double p_cor = std::pow(2.0, -20.0) / n;
  const int max_adv = static_cast<int>(std::floor((adversarial_rate + kSmall) * n));
  const int max_drop = static_cast<int>(std::floor((dropout_rate + kSmall) * n));
  const int min_alive = static_cast<int>(std::ceil((1 - dropout_rate - kSmall) * n));
  const int max_bad = max_adv + max_drop;
  for (int k = 2; k < n - 1; k += 2) {
    // (a) connectivity of the honest survivors: a cut needs two disjoint runs of k/2 removed
    // nodes on the ring; union bound over the n(n−k−1)/2 pairs of runs.
    if (k <= max_bad) {
      const double log_disc = std::log(static_cast<double>(n)) +
                              std::log(static_cast<double>(n - k - 1)) - std::log(2.0) +
                              std::lgamma(max_bad + 1.0) + std::lgamma(n - k + 1.0) -
                              std::lgamma(n + 1.0) - std::lgamma(max_bad - k + 1.0);
      if (log_disc >= log_sec) continue;
    }
    // (b) the smallest t_s the adversary reaches with probability ≤ p_sec …
    int t = 1;
    while (t <= k && HyperTail(n, max_adv, k, t) > p_sec) ++t;
    t = std::max(t, 2);
    if (t > k) continue;
    // … which enough neighbours survive to meet, except with probability ≤ p_cor.
    if (HyperBelow(n, min_alive, k, t) <= p_cor) return SecAggPlusParameters{k, t};
  }
  return absl::NotFoundError(absl::StrCat(
      "SecAgg: no sparse graph with fewer than n - 1 = ", n - 1,
      " neighbours meets the bounds for ", n, " clients; use the complete graph"));
}

absl::StatusOr<SecAggPlan> SecAggPlan::Create(const SecAggConfig& c) {
  if (c.num_clients < 2 || c.num_clients > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg: number of clients must be in [2, 2^20], got ", c.num_clients));
  }
  if (c.threshold < 2 || c.threshold > c.num_clients) {
    return absl::InvalidArgumentError(absl::StrCat("SecAgg: threshold must be in [2, ",
                                                   c.num_clients, "], got ", c.threshold));
  }
  if (c.vector_length < 1 || c.vector_length > (int64_t{1} << 31)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg: vector length must be in [1, 2^31], got ", c.vector_length));
  }
  SecAggPlan plan;
  plan.config_ = c;
  plan.share_threshold_ = c.threshold;
  if (!c.secagg_plus) return plan;

  int k = c.num_neighbors, ts = c.share_threshold;
  if (k == 0) {
    auto p = ChooseSecAggPlusParameters(c.num_clients, c.adversarial_rate, c.dropout_rate);
    if (!p.ok() && p.status().code() == absl::StatusCode::kNotFound) {
      return plan;  // k would reach n − 1: SecAgg+ is SecAgg here
    }
    FEDGE_RETURN_IF_ERROR(p.status());
    k = p->num_neighbors;
    if (ts == 0) ts = p->threshold;
  }
  if (k < 2 || k % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg: number of neighbours must be even and >= 2, got ", k));
  }
  if (k >= c.num_clients - 1) {
    plan.share_threshold_ = ts > 0 ? ts : c.threshold;
    if (plan.share_threshold_ < 2 || plan.share_threshold_ > c.num_clients) {
      return absl::InvalidArgumentError(
          absl::StrCat("SecAgg: share threshold ", plan.share_threshold_, " out of range"));
    }
    return plan;
  }
  if (ts < 2 || ts > k + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SecAgg: share threshold must be in [2, k + 1 = ", k + 1, "], got ", ts));
  }
  plan.share_threshold_ = ts;
  plan.half_degree_ = k / 2;
  // Fisher–Yates over the ring, keyed by the public graph seed.
  const uint32_t n = static_cast<uint32_t>(c.num_clients);
  plan.ring_.resize(n);
  for (uint32_t i = 0; i < n; ++i) plan.ring_[i] = i;
  ChaChaStream rng(c.graph_seed, kGraphNonce);
  for (uint32_t i = n - 1; i > 0; --i) {
    const uint64_t bound = uint64_t{i} + 1;
    const uint64_t limit = std::numeric_limits<uint64_t>::max() -
                           std::numeric_limits<uint64_t>::max() % bound;
    uint64_t r;
    do r = rng.NextU64(); while (r >= limit);
    std::swap(plan.ring_[i], plan.ring_[r % bound]);
  }
  plan.position_.resize(n);
  for (uint32_t i = 0; i < n; ++i) plan.position_[plan.ring_[i]] = i;
  return plan;
}

std::vector<uint32_t> SecAggPlan::Neighbors(uint32_t u) const {
  std::vector<uint32_t> out;
  const uint32_t n = static_cast<uint32_t>(config_.num_clients);
  if (!sparse()) {
    out.reserve(n - 1);
    for (uint32_t v = 0; v < n; ++v) {
      if (v != u) out.push_back(v);
    }
    return out;
  }
  const uint32_t p = position_[u];
  for (int d = 1; d <= half_degree_; ++d) {
    out.push_back(ring_[(p + d) % n]);
    out.push_back(ring_[(p + n - d) % n]);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool SecAggPlan::AreNeighbors(uint32_t u, uint32_t v) const {
  if (u == v) return false;
  if (!sparse()) return true;
  const uint32_t n = static_cast<uint32_t>(config_.num_clients);
  const uint32_t d = (position_[u] + n - position_[v]) % n;
  return std::min(d, n - d) <= static_cast<uint32_t>(half_degree_);
}

// ---- client -----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SecAggClient>> SecAggClient::Create(const SecAggConfig& config,
                                                                   uint32_t client) {
  FEDGE_RETURN_IF_ERROR(EnsureSodium());
  FEDGE_ASSIGN_OR_RETURN(SecAggPlan plan, SecAggPlan::Create(config));
  if (client >= static_cast<uint32_t>(plan.n())) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg: client index ", client, " >= ", plan.n()));
  }
  std::unique_ptr<SecAggClient> c(new SecAggClient(std::move(plan), client));
  NewKeyPair(c->c_sk_, c->c_pk_);
  NewKeyPair(c->s_sk_, c->s_pk_);
  return c;
}

SecAggClient::~SecAggClient() {
  sodium_memzero(c_sk_.data(), c_sk_.size());
  sodium_memzero(s_sk_.data(), s_sk_.size());
  sodium_memzero(self_seed_.data(), self_seed_.size());
}

absl::Status SecAggClient::Abort(absl::Status s) {
  step_ = Step::kAborted;
  sodium_memzero(c_sk_.data(), c_sk_.size());
  sodium_memzero(s_sk_.data(), s_sk_.size());
  sodium_memzero(self_seed_.data(), self_seed_.size());
  held_b_.clear();
  held_s_.clear();
  return s;
}

absl::StatusOr<SecAggAdvertiseKeys> SecAggClient::AdvertiseKeys() {
  if (step_ != Step::kAdvertise) {
    return absl::FailedPreconditionError(
        absl::StrCat("SecAgg: client ", client_, " already advertised its keys"));
  }
  step_ = Step::kShareKeys;
  return SecAggAdvertiseKeys{client_, KeyBytes(c_pk_), KeyBytes(s_pk_)};
}

absl::StatusOr<SecAggShareKeys> SecAggClient::ShareKeys(const SecAggKeysBroadcast& keys) {
  if (step_ != Step::kShareKeys) {
    return absl::FailedPreconditionError(
        absl::StrCat("SecAgg: client ", client_, " is not at the share-keys step"));
  }
  std::map<uint32_t, Key32> c_pk, s_pk;
  for (const SecAggAdvertiseKeys& k : keys.clients) {
    if (k.client >= static_cast<uint32_t>(plan_.n())) {
      return Abort(absl::InvalidArgumentError(
          absl::StrCat("SecAgg: key broadcast names unknown client ", k.client)));
    }
    if (c_pk.count(k.client)) {
      return Abort(absl::InvalidArgumentError(
          absl::StrCat("SecAgg: key broadcast lists client ", k.client, " twice")));
    }
    auto c = ParseKey(k.c_public_key, k.client, "c");
    if (!c.ok()) return Abort(c.status());
    auto s = ParseKey(k.s_public_key, k.client, "s");
    if (!s.ok()) return Abort(s.status());
    c_pk[k.client] = *c;
    s_pk[k.client] = *s;
  }
  auto own = c_pk.find(client_);
  if (own == c_pk.end() || own->second != c_pk_ || s_pk[client_] != s_pk_) {
    return Abort(absl::InvalidArgumentError(absl::StrCat(
        "SecAgg: key broadcast does not carry client ", client_, "'s own keys")));
  }
  if (static_cast<int>(c_pk.size()) < plan_.threshold()) {
    return Abort(absl::FailedPreconditionError(absl::StrCat(
        "SecAgg: ", c_pk.size(), " clients advertised keys, threshold is ", plan_.threshold())));
  }
  std::vector<uint32_t> holders = {client_};
  for (uint32_t v : plan_.Neighbors(client_)) {
    if (c_pk.count(v)) holders.push_back(v);
  }
  std::sort(holders.begin(), holders.end());
  if (static_cast<int>(holders.size()) < plan_.share_threshold()) {
    return Abort(absl::FailedPreconditionError(
        absl::StrCat("SecAgg: client ", client_, " has ", holders.size(),
                     " share holders, needs ", plan_.share_threshold())));
  }
  self_seed_ = RandomSeed();
  std::vector<uint64_t> secret = BytesToFieldElements(self_seed_);
  const std::vector<uint64_t> s_el = BytesToFieldElements(s_sk_);
  secret.insert(secret.end(), s_el.begin(), s_el.end());
  std::vector<uint64_t> xs;
  for (uint32_t h : holders) xs.push_back(uint64_t{h} + 1);
  auto shares = ShamirSplit(secret, plan_.share_threshold(), xs);
  sodium_memzero(secret.data(), secret.size() * 8);
  if (!shares.ok()) return Abort(shares.status());

  SecAggShareKeys out;
  out.client = client_;
  out.self_mask_commitment = Commitment(plan_.config().session_id, client_, self_seed_);
  for (size_t i = 0; i < holders.size(); ++i) {
    const uint32_t v = holders[i];
    const std::vector<uint64_t>& y = (*shares)[i].y;
    if (v == client_) {
      held_b_[v].assign(y.begin(), y.begin() + kSecretElements);
      held_s_[v].assign(y.begin() + kSecretElements, y.end());
      continue;
    }
    const bool lo = client_ < v;
    auto key = AgreeAndDerive(kEncLabel, c_sk_, c_pk[v], lo ? c_pk_ : c_pk[v],
                              lo ? c_pk[v] : c_pk_, v);
    if (!key.ok()) return Abort(key.status());
    std::string plain;
    PutU32(plain, client_);
    PutU32(plain, v);
    for (uint64_t e : y) PutU64(plain, e);
    std::string ct(kShareCipherBytes, '\0');
    uint8_t* nonce = reinterpret_cast<uint8_t*>(ct.data());
    randombytes_buf(nonce, kNonceBytes);
    const std::string ad = AssociatedData(plan_.config().session_id, client_, v);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(
        nonce + kNonceBytes, &clen, reinterpret_cast<const uint8_t*>(plain.data()),
        plain.size(), reinterpret_cast<const uint8_t*>(ad.data()), ad.size(), nullptr, nonce,
        key->data());
    sodium_memzero(plain.data(), plain.size());
    sodium_memzero(key->data(), key->size());
    out.shares.push_back(SecAggEncryptedShare{client_, v, std::move(ct)});
  }
  peer_c_pk_ = std::move(c_pk);
  peer_s_pk_ = std::move(s_pk);
  step_ = Step::kMaskedInput;
  return out;
}

absl::StatusOr<SecAggMaskedInput> SecAggClient::MaskedInput(const SecAggSharesForClient& shares,
                                                            absl::Span<const uint32_t> input) {
  if (step_ != Step::kMaskedInput) {
    return absl::FailedPreconditionError(
        absl::StrCat("SecAgg: client ", client_, " is not at the masked-input step"));
  }
  if (static_cast<int64_t>(input.size()) != plan_.config().vector_length) {
    return absl::InvalidArgumentError(absl::StrCat("SecAgg: input has ", input.size(),
                                                   " values, expected ",
                                                   plan_.config().vector_length));
  }
  std::set<uint32_t> senders;
  for (const SecAggEncryptedShare& e : shares.shares) {
    const uint32_t u = e.from;
    if (e.to != client_ || !peer_c_pk_.count(u) || u == client_ ||
        !plan_.AreNeighbors(u, client_)) {
      return Abort(absl::InvalidArgumentError(absl::StrCat(
          "SecAgg: client ", client_, " got a share from ", u, " to ", e.to,
          " that it cannot hold")));
    }
    if (!senders.insert(u).second) {
      return Abort(absl::InvalidArgumentError(absl::StrCat(
          "SecAgg: client ", client_, " got two shares from client ", u, " (replay)")));
    }
    if (e.ciphertext.size() != kShareCipherBytes) {
      return Abort(absl::InvalidArgumentError(absl::StrCat(
          "SecAgg: share from client ", u, " has ", e.ciphertext.size(), " bytes, expected ",
          kShareCipherBytes)));
    }
    const bool lo = u < client_;
    auto key = AgreeAndDerive(kEncLabel, c_sk_, peer_c_pk_[u], lo ? peer_c_pk_[u] : c_pk_,
                              lo ? c_pk_ : peer_c_pk_[u], u);
    if (!key.ok()) return Abort(key.status());
    const uint8_t* nonce = reinterpret_cast<const uint8_t*>(e.ciphertext.data());
    const std::string ad = AssociatedData(plan_.config().session_id, u, client_);
    uint8_t plain[kSharePlainBytes];
    unsigned long long plen = 0;
    const int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
        plain, &plen, nullptr, nonce + kNonceBytes, e.ciphertext.size() - kNonceBytes,
        reinterpret_cast<const uint8_t*>(ad.data()), ad.size(), nonce, key->data());
    sodium_memzero(key->data(), key->size());
    if (rc != 0 || plen != kSharePlainBytes) {
      return Abort(absl::DataLossError(absl::StrCat(
          "SecAgg: share from client ", u, " to client ", client_,
          " fails authentication (tampered, replayed from another session, or wrong key)")));
    }
    if (GetLe(plain, 4) != u || GetLe(plain + 4, 4) != client_) {
      return Abort(absl::DataLossError(
          absl::StrCat("SecAgg: share from client ", u, " names the wrong parties")));
    }
    std::vector<uint64_t> y(2 * kSecretElements);
    for (int i = 0; i < 2 * kSecretElements; ++i) {
      y[i] = GetLe(plain + 8 + 8 * i, 8);
      if (y[i] >= kShamirPrime) {
        return Abort(absl::DataLossError(
            absl::StrCat("SecAgg: share from client ", u, " is outside the field")));
      }
    }
    sodium_memzero(plain, sizeof(plain));
    held_b_[u].assign(y.begin(), y.begin() + kSecretElements);
    held_s_[u].assign(y.begin() + kSecretElements, y.end());
  }
  if (!plan_.sparse() && static_cast<int>(senders.size()) + 1 < plan_.threshold()) {
    return Abort(absl::FailedPreconditionError(
        absl::StrCat("SecAgg: only ", senders.size() + 1,
                     " clients shared keys, threshold is ", plan_.threshold())));
  }
  SecAggMaskedInput out;
  out.client = client_;
  out.masked.assign(input.begin(), input.end());
  std::vector<uint32_t> scratch;
  ApplyPrg(self_seed_, absl::MakeSpan(out.masked), /*subtract=*/false, scratch);
  for (uint32_t w : senders) {
    const bool lo = w < client_;
    auto seed = AgreeAndDerive(kMaskLabel, s_sk_, peer_s_pk_[w], lo ? peer_s_pk_[w] : s_pk_,
                               lo ? s_pk_ : peer_s_pk_[w], w);
    if (!seed.ok()) return Abort(seed.status());
    // + PRG(s_vw) for w < v, − for w > v.
    ApplyPrg(ToSeed(*seed), absl::MakeSpan(out.masked), /*subtract=*/!lo, scratch);
    sodium_memzero(seed->data(), seed->size());
  }
  sodium_memzero(scratch.data(), scratch.size() * 4);
  u2_neighbors_ = std::move(senders);
  step_ = Step::kUnmask;
  return out;
}

absl::StatusOr<SecAggUnmaskingResponse> SecAggClient::Unmask(
    const SecAggUnmaskingRequest& request) {
  if (step_ != Step::kUnmask) {
    return absl::FailedPreconditionError(
        absl::StrCat("SecAgg: client ", client_, " is not at the unmasking step"));
  }
  const auto& surv = request.survivors;
  const auto& drop = request.dropped;
  if (!SortedUnique(surv) || !SortedUnique(drop)) {
    return Abort(absl::InvalidArgumentError(
        "SecAgg: unmasking request lists are not sorted and duplicate-free"));
  }
  std::set<uint32_t> s_set(surv.begin(), surv.end()), d_set(drop.begin(), drop.end());
  for (uint32_t d : drop) {
    if (s_set.count(d)) {
      return Abort(absl::InvalidArgumentError(absl::StrCat(
          "SecAgg: unmasking request lists client ", d, " as both survivor and dropped")));
    }
  }
  if (!s_set.count(client_)) {
    return Abort(absl::InvalidArgumentError(
        absl::StrCat("SecAgg: unmasking request does not list client ", client_)));
  }
  if (static_cast<int>(surv.size()) < plan_.threshold()) {
    return Abort(absl::FailedPreconditionError(absl::StrCat(
        "SecAgg: ", surv.size(), " survivors, threshold is ", plan_.threshold())));
  }
  for (uint32_t w : u2_neighbors_) {
    if (!s_set.count(w) && !d_set.count(w)) {
      return Abort(absl::InvalidArgumentError(absl::StrCat(
          "SecAgg: unmasking request omits client ", w, " who shared keys")));
    }
  }
  for (const std::set<uint32_t>* set : {&s_set, &d_set}) {
    for (uint32_t w : *set) {
      if (w != client_ && plan_.AreNeighbors(w, client_) && !u2_neighbors_.count(w)) {
        return Abort(absl::InvalidArgumentError(absl::StrCat(
            "SecAgg: unmasking request lists client ", w, " who sent this client no share")));
      }
    }
  }
  SecAggUnmaskingResponse out;
  out.client = client_;
  for (const auto& [owner, b] : held_b_) {
    if (s_set.count(owner)) {
      out.shares.push_back({owner, SecAggRevealedShare::Kind::kSelfMaskSeed, b});
    } else if (d_set.count(owner)) {
      out.shares.push_back({owner, SecAggRevealedShare::Kind::kMaskSecretKey, held_s_[owner]});
    }
  }
  Abort(absl::OkStatus()).IgnoreError();  // wipes the secrets
  step_ = Step::kDone;
  return out;
}

// ---- server -----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SecAggServer>> SecAggServer::Create(const SecAggConfig& config) {
  FEDGE_RETURN_IF_ERROR(EnsureSodium());
  FEDGE_ASSIGN_OR_RETURN(SecAggPlan plan, SecAggPlan::Create(config));
  return std::unique_ptr<SecAggServer>(new SecAggServer(std::move(plan)));
}

absl::Status SecAggServer::Fail(absl::Status s) {
  step_ = Step::kFailed;
  masked_.clear();
  revealed_.clear();
  return s;
}

absl::Status SecAggServer::CheckStep(Step want, const char* what) const {
  if (step_ == Step::kFailed) {
    return absl::FailedPreconditionError("SecAgg: the session has failed");
  }
  if (step_ != want) {
    return absl::FailedPreconditionError(
        absl::StrCat("SecAgg: ", what, " arrived outside its step"));
  }
  return absl::OkStatus();
}

absl::Status SecAggServer::ReceiveAdvertiseKeys(const SecAggAdvertiseKeys& msg) {
  FEDGE_RETURN_IF_ERROR(CheckStep(Step::kAdvertise, "advertised keys"));
  if (msg.client >= static_cast<uint32_t>(plan_.n())) {
    return absl::InvalidArgumentError(absl::StrCat("SecAgg: unknown client ", msg.client));
  }
  FEDGE_RETURN_IF_ERROR(ParseKey(msg.c_public_key, msg.client, "c").status());
  FEDGE_RETURN_IF_ERROR(ParseKey(msg.s_public_key, msg.client, "s").status());
  if (keys_.count(msg.client)) {
    return absl::AlreadyExistsError(
        absl::StrCat("SecAgg: client ", msg.client, " already advertised keys"));
  }
  keys_[msg.client] = msg;
  return absl::OkStatus();
}

absl::StatusOr<SecAggKeysBroadcast> SecAggServer::CloseAdvertiseKeys() {
  FEDGE_RETURN_IF_ERROR(CheckStep(Step::kAdvertise, "closing advertise keys"));
  if (static_cast<int>(keys_.size()) < plan_.threshold()) {
    return Fail(absl::FailedPreconditionError(absl::StrCat(
        "SecAgg: ", keys_.size(), " clients advertised keys, threshold is ",
        plan_.threshold())));
  }
  SecAggKeysBroadcast out;
  for (const auto& [id, k] : keys_) {
    u1_.push_back(id);
    out.clients.push_back(k);
  }
  step_ = Step::kShareKeys;
  return out;
}

absl::Status SecAggServer::ReceiveShareKeys(const SecAggShareKeys& msg) {
  FEDGE_RETURN_IF_ERROR(CheckStep(Step::kShareKeys, "shared keys"));
  const uint32_t u = msg.client;
  if (!keys_.count(u)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg: client ", u, " shared keys without advertising"));
  }
  if (share_msgs_.count(u)) {
    return absl::AlreadyExistsError(absl::StrCat("SecAgg: client ", u, " already shared keys"));
  }
  std::set<uint32_t> to;
  for (const SecAggEncryptedShare& e : msg.shares) {
    if (e.from != u || e.to == u || !keys_.count(e.to) || !plan_.AreNeighbors(u, e.to)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SecAgg: client ", u, " sent a share from ", e.from, " to ", e.to));
    }
    if (!to.insert(e.to).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("SecAgg: client ", u, " sent two shares to client ", e.to));
    }
    if (e.ciphertext.size() != kShareCipherBytes) {
      return absl::InvalidArgumentError(absl::StrCat("SecAgg: client ", u, "'s share for ",
                                                     e.to, " has ", e.ciphertext.size(),
                                                     " bytes, expected ", kShareCipherBytes));
    }
  }
  if (msg.self_mask_commitment.size() != 32) {
    return absl::InvalidArgumentError(absl::StrCat("SecAgg: client ", u,
                                                   "'s self-mask commitment has ",
                                                   msg.self_mask_commitment.size(),
                                                   " bytes, expected 32"));
  }
  size_t expected = 0;
  for (uint32_t v : u1_) expected += plan_.AreNeighbors(u, v);
  if (to.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("SecAgg: client ", u, " sent ", to.size(),
                                                   " shares, expected ", expected));
  }
  share_msgs_[u] = msg.shares;
  commitments_[u] = msg.self_mask_commitment;
  return absl::OkStatus();
}

absl::StatusOr<std::map<uint32_t, SecAggSharesForClient>> SecAggServer::CloseShareKeys() {
  FEDGE_RETURN_IF_ERROR(CheckStep(Step::kShareKeys, "closing share keys"));
  if (static_cast<int>(share_msgs_.size()) < plan_.threshold()) {
    return Fail(absl::FailedPreconditionError(absl::StrCat(
        "SecAgg: ", share_msgs_.size(), " clients shared keys, threshold is ",
        plan_.threshold())));
  }
  std::map<uint32_t, SecAggSharesForClient> out;
  for (const auto& [u, list] : share_msgs_) {
    u2_.push_back(u);
    out[u];
  }
  for (const auto& [u, list] : share_msgs_) {
    for (const SecAggEncryptedShare& e : list) {
      auto it = out.find(e.to);
      if (it != out.end()) it->second.shares.push_back(e);
    }
  }
  share_msgs_.clear();  // delivered; the server keeps no ciphertexts
  step_ = Step::kMaskedInput;
  return out;
}

absl::Status SecAggServer::ReceiveMaskedInput(const SecAggMaskedInput& msg) {
  FEDGE_RETURN_IF_ERROR(CheckStep(Step::kMaskedInput, "masked input"));
  if (!std::binary_search(u2_.begin(), u2_.end(), msg.client)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg: client ", msg.client, " sent masked input without sharing keys"));
  }
  if (masked_.count(msg.client)) {
    return absl::AlreadyExistsError(
        absl::StrCat("SecAgg: client ", msg.client, " already sent its masked input"));
  }
  if (static_cast<int64_t>(msg.masked.size()) != plan_.config().vector_length) {
    return absl::InvalidArgumentError(absl::StrCat("SecAgg: client ", msg.client,
                                                   "'s masked input has ", msg.masked.size(),
                                                   " values, expected ",
                                                   plan_.config().vector_length));
  }
  masked_[msg.client] = msg.masked;
  return absl::OkStatus();
}

absl::StatusOr<SecAggUnmaskingRequest> SecAggServer::CloseMaskedInput() {
  FEDGE_RETURN_IF_ERROR(CheckStep(Step::kMaskedInput, "closing masked input"));
  if (static_cast<int>(masked_.size()) < plan_.threshold()) {
    return Fail(absl::FailedPreconditionError(absl::StrCat(
        "SecAgg: ", masked_.size(), " masked inputs, threshold is ", plan_.threshold())));
  }
  SecAggUnmaskingRequest out;
  for (uint32_t u : u2_) {
    (masked_.count(u) ? u3_ : dropped_).push_back(u);
  }
  out.survivors = u3_;
  out.dropped = dropped_;
  step_ = Step::kUnmask;
  return out;
}

absl::Status SecAggServer::ReceiveUnmaskingResponse(const SecAggUnmaskingResponse& msg) {
  FEDGE_RETURN_IF_ERROR(CheckStep(Step::kUnmask, "unmasking response"));
  const uint32_t v = msg.client;
  if (!std::binary_search(u3_.begin(), u3_.end(), v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg: client ", v, " is not a survivor and cannot unmask"));
  }
  if (responders_.count(v)) {
    return absl::AlreadyExistsError(
        absl::StrCat("SecAgg: client ", v, " already sent its unmasking shares"));
  }
  std::set<uint32_t> owners;
  for (const SecAggRevealedShare& s : msg.shares) {
    const bool survivor = std::binary_search(u3_.begin(), u3_.end(), s.owner);
    const bool dropped = std::binary_search(dropped_.begin(), dropped_.end(), s.owner);
    if ((!survivor && !dropped) || (s.owner != v && !plan_.AreNeighbors(s.owner, v))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SecAgg: client ", v, " revealed a share of client ", s.owner, " it cannot hold"));
    }
    const auto want = survivor ? SecAggRevealedShare::Kind::kSelfMaskSeed
                               : SecAggRevealedShare::Kind::kMaskSecretKey;
    if (s.kind != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SecAgg: client ", v, " revealed the wrong secret of client ", s.owner,
          survivor ? " (a survivor: only its self-mask seed)" : " (dropped: only its mask key)"));
    }
    if (!owners.insert(s.owner).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SecAgg: client ", v, " revealed two shares of client ", s.owner));
    }
    if (s.y.size() != kSecretElements) {
      return absl::InvalidArgumentError(absl::StrCat("SecAgg: client ", v, "'s share of ",
                                                     s.owner, " has ", s.y.size(),
                                                     " elements, expected ", kSecretElements));
    }
    for (uint64_t e : s.y) {
      if (e >= kShamirPrime) {
        return absl::InvalidArgumentError(absl::StrCat(
            "SecAgg: client ", v, "'s share of ", s.owner, " is outside the field"));
      }
    }
  }
  for (const SecAggRevealedShare& s : msg.shares) revealed_[s.owner][v] = s.y;
  responders_.insert(v);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> SecAggServer::Finish() {
  FEDGE_RETURN_IF_ERROR(CheckStep(Step::kUnmask, "finishing"));
  if (static_cast<int>(responders_.size()) < plan_.threshold()) {
    return Fail(absl::FailedPreconditionError(absl::StrCat(
        "SecAgg: ", responders_.size(), " clients answered the unmasking request, threshold is ",
        plan_.threshold())));
  }
  const int ts = plan_.share_threshold();
  const int64_t m = plan_.config().vector_length;
  // Reconstructor cache: owners whose chosen t_s holders coincide share Lagrange coefficients.
  std::map<std::vector<uint64_t>, ShamirReconstructor> cache;
  // Reconstructs owner's secret from t_s revealed shares and checks it with `verify` (the hash
  // commitment of b_u, or the advertised public key of s_u). If that fails and spare shares
  // exist, finds the one holder whose share is bad (the reconstruction verifies without it),
  // records it in bad_holders_ and skips it from then on. Two bad shares among the t_s tried
  // for one owner, or none to spare, fail cleanly.
  auto reconstruct = [&](uint32_t owner, const char* what,
                         const std::function<bool(const Key32&)>& verify)
      -> absl::StatusOr<Key32> {
    std::vector<ShamirShare> avail;
    for (const auto& [holder, y] : revealed_[owner]) {
      if (!bad_holders_.count(holder)) avail.push_back(ShamirShare{uint64_t{holder} + 1, y});
    }
    if (static_cast<int>(avail.size()) < ts) {
      return absl::FailedPreconditionError(absl::StrCat(
          "SecAgg: only ", avail.size(), " usable shares of client ", owner, "'s ", what,
          " arrived, ", ts, " needed"));
    }
    auto attempt = [&](int skip) -> absl::StatusOr<std::optional<Key32>> {
      std::vector<ShamirShare> pick;
      std::vector<uint64_t> xs;
      for (int i = 0; i < static_cast<int>(avail.size()) && static_cast<int>(pick.size()) < ts;
           ++i) {
        if (i == skip) continue;
        pick.push_back(avail[i]);
        xs.push_back(avail[i].x);
      }
      auto it = cache.find(xs);
      if (it == cache.end()) {
        FEDGE_ASSIGN_OR_RETURN(ShamirReconstructor r, ShamirReconstructor::Create(xs));
        it = cache.emplace(xs, std::move(r)).first;
      }
      FEDGE_ASSIGN_OR_RETURN(std::vector<uint64_t> secret, it->second.Reconstruct(pick));
      auto bytes = FieldElementsToBytes(secret, 32);
      if (!bytes.ok()) return std::optional<Key32>();
      Key32 out;
      std::memcpy(out.data(), bytes->data(), 32);
      sodium_memzero(bytes->data(), bytes->size());
      if (!verify(out)) return std::optional<Key32>();
      return std::optional<Key32>(out);
    };
    FEDGE_ASSIGN_OR_RETURN(std::optional<Key32> first, attempt(-1));
    if (first.has_value()) return *first;
    if (static_cast<int>(avail.size()) > ts) {
      for (int i = 0; i < ts; ++i) {
        FEDGE_ASSIGN_OR_RETURN(std::optional<Key32> k, attempt(i));
        if (k.has_value()) {
          bad_holders_.insert(static_cast<uint32_t>(avail[i].x - 1));
          return *k;
        }
      }
    }
    return absl::DataLossError(absl::StrCat("SecAgg: the shares of client ", owner, "'s ", what,
                                            " do not reconstruct it (tampered shares)"));
  };

  std::vector<uint32_t> sum(m, 0);
  for (const auto& [u, y] : masked_) {
    for (int64_t i = 0; i < m; ++i) sum[i] += y[i];
  }
  std::vector<uint32_t> scratch;
  const uint64_t session = plan_.config().session_id;
  for (uint32_t u : u3_) {
    auto b = reconstruct(u, "self-mask seed", [&](const Key32& k) {
      return Commitment(session, u, ToSeed(k)) == commitments_[u];
    });
    if (!b.ok()) return Fail(b.status());
    ApplyPrg(ToSeed(*b), absl::MakeSpan(sum), /*subtract=*/true, scratch);
  }
  for (uint32_t u : dropped_) {
    auto adv = ParseKey(keys_[u].s_public_key, u, "s");
    if (!adv.ok()) return Fail(adv.status());
    auto sk = reconstruct(u, "mask key", [&](const Key32& k) {
      Key32 pk;
      crypto_scalarmult_base(pk.data(), k.data());
      return pk == *adv;
    });
    if (!sk.ok()) return Fail(sk.status());
    const Key32& pk = *adv;
    for (uint32_t w : u3_) {
      if (!plan_.AreNeighbors(u, w)) continue;
      auto w_pk = ParseKey(keys_[w].s_public_key, w, "s");
      if (!w_pk.ok()) return Fail(w_pk.status());
      const bool lo = u < w;
      auto seed = AgreeAndDerive(kMaskLabel, *sk, *w_pk, lo ? pk : *w_pk, lo ? *w_pk : pk, w);
      if (!seed.ok()) return Fail(seed.status());
      // w added +PRG(s_wu) when u < w and −PRG when u > w: undo it.
      ApplyPrg(ToSeed(*seed), absl::MakeSpan(sum), /*subtract=*/lo, scratch);
    }
    sodium_memzero(sk->data(), sk->size());
  }
  masked_.clear();
  revealed_.clear();
  step_ = Step::kDone;
  return sum;
}

}  // namespace fedge::privacy

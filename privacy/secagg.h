// Secure aggregation (Bonawitz et al., CCS 2017, "Practical Secure Aggregation for
// Privacy-Preserving Machine Learning") with the SecAgg+ option (Bell et al., CCS 2020,
// "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead"): transport-free state
// machines for the client and the server. The caller moves the message structs below over
// whatever transport it has (gRPC in server/grpc and client/grpc; in-process in sim/).
//
// Threat model: honest-but-curious server (plus up to a fraction of colluding clients in
// SecAgg+, see ChooseSecAggPlusParameters); clients may drop out at any step. The server
// learns only the sum of the survivors' inputs, never one client's input. Not covered (as in
// the paper's semi-honest variant): an actively malicious server that sends different
// survivor sets to different clients; that needs the paper's signed consistency round.
//
// Session: n clients with indices 0..n−1 (assigned by the server), a threshold t (the fewest
// clients allowed at every step; at least t masked inputs are summed), vectors of m uint32 in
// Z_2^32 (fixed-point encoded, privacy/fixed_point.h), a 64-bit session id bound into every
// ciphertext, and for SecAgg+ a public graph seed.
//
// Rounds (client u, Shamir points x = index + 1):
//   0 AdvertiseKeys  u → S: two fresh X25519 public keys, c_u (encryption) and s_u (masks).
//                    S → all: KeysBroadcast with everyone who advertised (U1), if |U1| ≥ t.
//   1 ShareKeys      u picks a self-mask seed b_u (32 random bytes) and Shamir-shares b_u and
//                    the secret key s_u^SK (each as 5 field elements, privacy/shamir.h) among
//                    its holders H(u) = {u} ∪ (N(u) ∩ U1), threshold t_s; the share for v ≠ u
//                    is encrypted with XChaCha20-Poly1305 under
//                    k_uv = BLAKE2b("fedge-secagg-enc" ‖ X25519(c_u, c_v) ‖ c_lo ‖ c_hi) with
//                    a random 24-byte nonce and associated data (session id, u, v).
//                    S → each v: SharesForClient, the ciphertexts addressed to v from U2.
//   2 MaskedInput    v decrypts and checks its shares, then sends
//                      y_v = x_v + PRG(b_v) + Σ_{w ∈ N(v)∩U2, w<v} PRG(s_vw)
//                                         − Σ_{w ∈ N(v)∩U2, w>v} PRG(s_vw)   (mod 2^32)
//                    with s_vw = BLAKE2b("fedge-secagg-mask" ‖ X25519(s_v, s_w) ‖ s_lo ‖ s_hi)
//                    (public keys ordered by client index, so both ends derive the same seed)
//                    and PRG(seed) = the ChaCha20 keystream (crypto_stream_chacha20, nonce 0)
//                    read as little-endian uint32.
//                    S → U3 (senders of masked input, |U3| ≥ t): UnmaskingRequest(U3, U2∖U3).
//   3 Unmasking      v reveals, for each owner u whose share it holds, the share of b_u if
//                    u ∈ U3 or the share of s_u^SK if u ∈ U2∖U3 (never both for one u).
//                    S reconstructs b_u (u ∈ U3, checked against the hash commitment u sent in
//                    round 1) and s_u^SK (dropped u, checked against the advertised public
//                    key s_u), recomputes and removes the masks, and releases
//                    Σ_{u∈U3} x_u — or fails with nothing released.
//
// N(u): in SecAgg, everyone else (t_s = t). In SecAgg+, the k neighbours of u in a Harary
// graph H(n, k) laid on a ring permuted by a Fisher–Yates shuffle keyed by the public graph
// seed (ChaCha20), so every party derives the same graph; k and t_s as chosen by
// ChooseSecAggPlusParameters (Bell et al. §4 / Thm 3.6, the same bounds Google's fcp
// HararyGraphParameterFinder evaluates), unless given explicitly.
//
// Errors: a message that is malformed, from an unknown or wrong client, duplicated, replayed
// or out of step is refused with INVALID_ARGUMENT / ALREADY_EXISTS / FAILED_PRECONDITION and
// changes nothing: the caller drops that client (it then counts as a dropout), never the
// round. A client that cannot decrypt a share (DATA_LOSS) or sees an inconsistent set aborts.
// The server's Close*/Finish steps return FAILED_PRECONDITION when fewer than t clients (or
// fewer than t_s holders of some secret) remain, after which the session is failed and
// releases nothing. Every reconstructed secret is verified (b_u against u's commitment,
// s_u^SK against its public key); a bad revealed share is found with a spare share and its
// sender excluded (misbehaving_clients()); without a spare, Finish fails with DATA_LOSS.
#ifndef FEDGE_PRIVACY_SECAGG_H_
#define FEDGE_PRIVACY_SECAGG_H_

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "privacy/shamir.h"
#include "privacy/sodium.h"

namespace fedge::privacy {

// ---- configuration ----------------------------------------------------------------------

struct SecAggPlusParameters {
  int num_neighbors = 0;  // k (even)
  int threshold = 0;      // t_s: shares needed to reconstruct one client's secret
};

// Bell et al.'s choice of (k, t_s) for n clients of which at most a fraction
// `adversarial_rate` collude with the server and at most `dropout_rate` drop out: the
// smallest even k such that (a) the Harary graph stays connected after removing those
// clients except with probability 2^−41 (union bound over pairs of gaps of k/2 consecutive
// removed nodes) and (b) some t_s has P[a client has ≥ t_s adversarial neighbours] ≤ 2^−41/n
// (security) and P[a client has < t_s surviving neighbours] ≤ 2^−20/n (correctness), with
// hypergeometric neighbour counts; t_s is the smallest such threshold, k = O(log n).
// NOT_FOUND if no k < n − 1 works (small n: use the complete graph); FAILED_PRECONDITION if
// the rates are infeasible (each in [0, 1), adversarial + dropout ≤ 0.9).
absl::StatusOr<SecAggPlusParameters> ChooseSecAggPlusParameters(int num_clients,
                                                                double adversarial_rate,
                                                                double dropout_rate);

struct SecAggConfig {
  int num_clients = 0;         // n ≥ 2
  int threshold = 0;           // t ∈ [2, n]: minimum clients at every step
  int64_t vector_length = 0;   // m ≥ 1 uint32 values
  uint64_t session_id = 0;     // fresh per round; bound into every ciphertext
  bool secagg_plus = false;    // SecAgg+ (sparse graph) instead of the complete graph
  // SecAgg+ only: graph randomness (public; the server draws it and sends it with the
  // config), and k / t_s (0 = derive with ChooseSecAggPlusParameters from the two rates).
  Seed graph_seed{};
  int num_neighbors = 0;
  int share_threshold = 0;
  double adversarial_rate = 0.05;
  double dropout_rate = 0.3;
};

// The validated session plan both sides derive from a SecAggConfig.
class SecAggPlan final {
 public:
  // INVALID_ARGUMENT for out-of-range fields; FAILED_PRECONDITION if SecAgg+ parameters
  // cannot be derived. A derived k ≥ n − 1 falls back to the complete graph.
  static absl::StatusOr<SecAggPlan> Create(const SecAggConfig& config);

  const SecAggConfig& config() const { return config_; }
  int n() const { return config_.num_clients; }
  int threshold() const { return config_.threshold; }
  int share_threshold() const { return share_threshold_; }
  // Whether the sparse graph is in use (false: SecAgg, or SecAgg+ with k ≥ n − 1).
  bool sparse() const { return half_degree_ > 0; }
  int num_neighbors() const { return sparse() ? 2 * half_degree_ : n() - 1; }
  // Neighbours of u (sorted, u excluded). REQUIRES u < n.
  std::vector<uint32_t> Neighbors(uint32_t u) const;
  // REQUIRES u, v < n. False for u == v.
  bool AreNeighbors(uint32_t u, uint32_t v) const;

 private:
  SecAggPlan() = default;
  SecAggConfig config_;
  int share_threshold_ = 0;
  int half_degree_ = 0;             // k/2 in SecAgg+, 0 for the complete graph
  std::vector<uint32_t> ring_;      // ring position → client
  std::vector<uint32_t> position_;  // client → ring position
};

// ---- messages (plain structs; byte fields are std::string as in protobuf) ---------------

struct SecAggAdvertiseKeys {        // round 0, client → server
  uint32_t client = 0;
  std::string c_public_key;         // 32 bytes, X25519
  std::string s_public_key;         // 32 bytes, X25519
};

struct SecAggKeysBroadcast {        // round 0, server → every client in U1
  std::vector<SecAggAdvertiseKeys> clients;  // sorted by client index
};

struct SecAggEncryptedShare {
  uint32_t from = 0;
  uint32_t to = 0;
  std::string ciphertext;           // 24-byte nonce ‖ XChaCha20-Poly1305(88-byte share)
};

struct SecAggShareKeys {            // round 1, client → server
  uint32_t client = 0;
  std::vector<SecAggEncryptedShare> shares;  // one per holder other than the client
  // BLAKE2b-256("fedge-secagg-commit" ‖ session id ‖ client ‖ b_u): lets the server check the
  // self-mask seed it reconstructs (b_u is 256 random bits, so this reveals nothing usable).
  std::string self_mask_commitment;  // 32 bytes
};

struct SecAggSharesForClient {      // round 1, server → each client v in U2
  std::vector<SecAggEncryptedShare> shares;  // addressed to v, from senders in U2
};

struct SecAggMaskedInput {          // round 2, client → server
  uint32_t client = 0;
  std::vector<uint32_t> masked;     // m values
};

struct SecAggUnmaskingRequest {     // round 2, server → every client in U3
  std::vector<uint32_t> survivors;  // U3, sorted
  std::vector<uint32_t> dropped;    // U2 ∖ U3, sorted
};

struct SecAggRevealedShare {
  enum class Kind : uint8_t { kSelfMaskSeed = 0, kMaskSecretKey = 1 };
  uint32_t owner = 0;
  Kind kind = Kind::kSelfMaskSeed;
  std::vector<uint64_t> y;          // 5 field elements
};

struct SecAggUnmaskingResponse {    // round 3, client → server
  uint32_t client = 0;
  std::vector<SecAggRevealedShare> shares;
};

// ---- client -----------------------------------------------------------------------------

// One client's side of one session. Call the four steps in order, once each; any other use
// is FAILED_PRECONDITION. Not thread-safe. Secrets are wiped on destruction.
class SecAggClient final {
 public:
  // INVALID_ARGUMENT if `client` ≥ n or the config is bad; INTERNAL if libsodium fails.
  static absl::StatusOr<std::unique_ptr<SecAggClient>> Create(const SecAggConfig& config,
                                                              uint32_t client);
  ~SecAggClient();

  absl::StatusOr<SecAggAdvertiseKeys> AdvertiseKeys();
  // Checks the broadcast (|U1| ≥ t, own keys present and unchanged, 32-byte keys, no
  // duplicate or unknown clients) and shares b_u and s_u^SK among the holders.
  absl::StatusOr<SecAggShareKeys> ShareKeys(const SecAggKeysBroadcast& keys);
  // Decrypts and checks every share (DATA_LOSS on an AEAD failure), then masks `input`
  // (m values, already fixed-point encoded).
  absl::StatusOr<SecAggMaskedInput> MaskedInput(const SecAggSharesForClient& shares,
                                                absl::Span<const uint32_t> input);
  // Checks U3 ⊆ U2, U3 ∩ dropped = ∅, |U3| ≥ t, this client ∈ U3, and reveals shares.
  absl::StatusOr<SecAggUnmaskingResponse> Unmask(const SecAggUnmaskingRequest& request);

  uint32_t client() const { return client_; }

 private:
  enum class Step { kAdvertise, kShareKeys, kMaskedInput, kUnmask, kDone, kAborted };
  SecAggClient(SecAggPlan plan, uint32_t client) : plan_(std::move(plan)), client_(client) {}
  absl::Status Abort(absl::Status s);

  SecAggPlan plan_;
  uint32_t client_;
  Step step_ = Step::kAdvertise;
  std::array<uint8_t, 32> c_sk_{}, c_pk_{}, s_sk_{}, s_pk_{};
  Seed self_seed_{};
  std::map<uint32_t, std::array<uint8_t, 32>> peer_c_pk_, peer_s_pk_;  // U1 (incl. self)
  std::set<uint32_t> u2_neighbors_;                  // N(u) ∩ U2 (from shares received)
  std::map<uint32_t, std::vector<uint64_t>> held_b_, held_s_;  // owner → share (incl. own)
};

// ---- server -----------------------------------------------------------------------------

// The server's side of one session. Receive* take one client's message; Close* end a step.
// Not thread-safe (the caller serialises calls). Holds only masked inputs, never a clear one.
class SecAggServer final {
 public:
  static absl::StatusOr<std::unique_ptr<SecAggServer>> Create(const SecAggConfig& config);

  absl::Status ReceiveAdvertiseKeys(const SecAggAdvertiseKeys& msg);
  absl::StatusOr<SecAggKeysBroadcast> CloseAdvertiseKeys();

  absl::Status ReceiveShareKeys(const SecAggShareKeys& msg);
  // Per client v in U2, the shares to deliver to v.
  absl::StatusOr<std::map<uint32_t, SecAggSharesForClient>> CloseShareKeys();

  absl::Status ReceiveMaskedInput(const SecAggMaskedInput& msg);
  absl::StatusOr<SecAggUnmaskingRequest> CloseMaskedInput();

  absl::Status ReceiveUnmaskingResponse(const SecAggUnmaskingResponse& msg);
  // Reconstructs, unmasks and returns Σ_{u ∈ U3} x_u mod 2^32 (m values).
  absl::StatusOr<std::vector<uint32_t>> Finish();

  // The clients whose inputs are in the sum (U3), valid after CloseMaskedInput.
  const std::vector<uint32_t>& survivors() const { return u3_; }
  // Clients found revealing a bad share during Finish (the caller should drop them from later
  // rounds). Finish tolerates one bad share per secret when a spare share exists.
  const std::set<uint32_t>& misbehaving_clients() const { return bad_holders_; }
  bool failed() const { return step_ == Step::kFailed; }

 private:
  enum class Step { kAdvertise, kShareKeys, kMaskedInput, kUnmask, kDone, kFailed };
  explicit SecAggServer(SecAggPlan plan) : plan_(std::move(plan)) {}
  absl::Status Fail(absl::Status s);
  absl::Status CheckStep(Step want, const char* what) const;

  SecAggPlan plan_;
  Step step_ = Step::kAdvertise;
  std::map<uint32_t, SecAggAdvertiseKeys> keys_;               // U1 candidates
  std::vector<uint32_t> u1_;
  std::map<uint32_t, std::vector<SecAggEncryptedShare>> share_msgs_;  // U2
  std::map<uint32_t, std::string> commitments_;                  // U2: hash of b_u
  std::vector<uint32_t> u2_;
  std::map<uint32_t, std::vector<uint32_t>> masked_;            // U3
  std::vector<uint32_t> u3_, dropped_;
  // owner → (holder → share) for b (survivor owners) and s (dropped owners).
  std::map<uint32_t, std::map<uint32_t, std::vector<uint64_t>>> revealed_;
  std::set<uint32_t> responders_;
  std::set<uint32_t> bad_holders_;
};

}  // namespace fedge::privacy

#endif  // FEDGE_PRIVACY_SECAGG_H_

#include "privacy/secagg_wire.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace fedge::privacy {
namespace {

// Larger than any real ciphertext (24-byte nonce + 88-byte share + 16-byte tag) or key, small
// enough that a hostile list cannot make us copy much.
constexpr size_t kMaxCiphertextBytes = 512;
constexpr size_t kMaxKeyBytes = 64;
constexpr int kMaxShareElements = 16;

absl::Status CheckIndex(int64_t index, int n, const char* what) {
  if (index < 0 || index >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg wire: ", what, " index ", index, " is outside [0, ", n, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SecAggEncryptedShare> ShareFromWire(const v1::SecAggEncryptedShare& s, int n) {
  FEDGE_RETURN_IF_ERROR(CheckIndex(s.from_index(), n, "share sender"));
  FEDGE_RETURN_IF_ERROR(CheckIndex(s.to_index(), n, "share recipient"));
  if (s.ciphertext().size() > kMaxCiphertextBytes) {
    return absl::InvalidArgumentError(absl::StrCat("SecAgg wire: a ", s.ciphertext().size(),
                                                   "-byte share ciphertext"));
  }
  SecAggEncryptedShare out;
  out.from = static_cast<uint32_t>(s.from_index());
  out.to = static_cast<uint32_t>(s.to_index());
  out.ciphertext = s.ciphertext();
  return out;
}

v1::SecAggEncryptedShare ShareToWire(const SecAggEncryptedShare& s) {
  v1::SecAggEncryptedShare out;
  out.set_from_index(static_cast<int32_t>(s.from));
  out.set_to_index(static_cast<int32_t>(s.to));
  out.set_ciphertext(s.ciphertext);
  return out;
}

absl::StatusOr<std::vector<uint32_t>> IndicesFromWire(
    const google::protobuf::RepeatedField<int32_t>& list, int n, const char* what) {
  if (list.size() > n) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg wire: ", list.size(), " ", what, " indices for ", n, " clients"));
  }
  std::vector<uint32_t> out;
  out.reserve(list.size());
  for (int32_t i : list) {
    FEDGE_RETURN_IF_ERROR(CheckIndex(i, n, what));
    out.push_back(static_cast<uint32_t>(i));
  }
  return out;
}

}  // namespace

v1::SecureAggregationSession SessionFromConfig(const SecAggConfig& c) {
  v1::SecureAggregationSession s;
  s.set_session_id(c.session_id);
  s.set_threshold(c.threshold);
  s.set_num_participants(c.num_clients);
  s.set_secagg_plus(c.secagg_plus);
  if (c.secagg_plus) s.set_graph_seed(std::string(c.graph_seed.begin(), c.graph_seed.end()));
  s.set_num_neighbors(c.num_neighbors);
  s.set_share_threshold(c.share_threshold);
  s.set_adversarial_rate(c.adversarial_rate);
  s.set_dropout_rate(c.dropout_rate);
  s.set_vector_length(c.vector_length);
  return s;
}

namespace {
// Largest SecAgg+ session whose k and t_s a device derives itself.
constexpr int kMaxDerivedParticipants = 1000;
}  // namespace

absl::StatusOr<SecAggConfig> ConfigFromSession(const v1::SecureAggregationSession& s) {
  SecAggConfig c;
  c.num_clients = s.num_participants();
  c.threshold = s.threshold();
  c.vector_length = s.vector_length();
  c.session_id = s.session_id();
  c.secagg_plus = s.secagg_plus();
  c.num_neighbors = s.num_neighbors();
  c.share_threshold = s.share_threshold();
  c.adversarial_rate = s.adversarial_rate();
  c.dropout_rate = s.dropout_rate();
  if (s.secagg_plus()) {
    if (s.graph_seed().size() != c.graph_seed.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SecAgg wire: the SecAgg+ graph seed has ", s.graph_seed().size(), " bytes, not 32"));
    }
    std::memcpy(c.graph_seed.data(), s.graph_seed().data(), c.graph_seed.size());
  }
  if (s.secagg_plus() && s.num_neighbors() == 0 && s.num_participants() > kMaxDerivedParticipants) {
    // Deriving k and t_s costs a search that grows faster than n², and n comes from the
    // coordinator: a large session must name them (fedge's coordinator always does).
    return absl::InvalidArgumentError(absl::StrCat(
        "SecAgg wire: a SecAgg+ session of ", s.num_participants(),
        " participants must name its neighbours (at most ", kMaxDerivedParticipants,
        " may leave them to the device)"));
  }
  FEDGE_RETURN_IF_ERROR(CheckIndex(s.client_index(), std::max(0, s.num_participants()), "own"));
  if (!(s.max_abs_value() > 0) || !std::isfinite(s.max_abs_value()) || s.max_summands() < 1 ||
      s.max_summands() < s.num_participants() || !(s.noise_stddev() >= 0) ||
      !std::isfinite(s.noise_stddev())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SecAgg wire: bad encoding bounds (max_abs_value ", s.max_abs_value(), ", max_summands ",
        s.max_summands(), ", noise_stddev ", s.noise_stddev(), ")"));
  }
  FEDGE_RETURN_IF_ERROR(SecAggPlan::Create(c).status());
  return c;
}

v1::SecAggPublicKeys KeysToWire(const SecAggAdvertiseKeys& keys) {
  v1::SecAggPublicKeys out;
  out.set_c_public_key(keys.c_public_key);
  out.set_s_public_key(keys.s_public_key);
  return out;
}

SecAggAdvertiseKeys KeysFromWire(uint32_t client, const v1::SecAggPublicKeys& keys) {
  SecAggAdvertiseKeys out;
  out.client = client;
  // Oversized keys are cut to one byte past the limit so SecAggServer still refuses them by
  // length without our copying an attacker's megabytes.
  out.c_public_key = keys.c_public_key().substr(0, kMaxKeyBytes + 1);
  out.s_public_key = keys.s_public_key().substr(0, kMaxKeyBytes + 1);
  return out;
}

v1::SecAggKeyList KeyListToWire(const SecAggKeysBroadcast& broadcast) {
  v1::SecAggKeyList out;
  for (const SecAggAdvertiseKeys& k : broadcast.clients) {
    v1::SecAggClientKeys* c = out.add_clients();
    c->set_client_index(static_cast<int32_t>(k.client));
    *c->mutable_keys() = KeysToWire(k);
  }
  return out;
}

absl::StatusOr<SecAggKeysBroadcast> KeyListFromWire(const v1::SecAggKeyList& list, int n) {
  if (list.clients_size() > n) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg wire: ", list.clients_size(), " key entries for ", n, " clients"));
  }
  SecAggKeysBroadcast out;
  for (const v1::SecAggClientKeys& c : list.clients()) {
    FEDGE_RETURN_IF_ERROR(CheckIndex(c.client_index(), n, "key owner"));
    out.clients.push_back(KeysFromWire(static_cast<uint32_t>(c.client_index()), c.keys()));
  }
  return out;
}

v1::SecAggShareKeys ShareKeysToWire(const SecAggShareKeys& msg) {
  v1::SecAggShareKeys out;
  for (const SecAggEncryptedShare& s : msg.shares) *out.add_shares() = ShareToWire(s);
  out.set_self_mask_commitment(msg.self_mask_commitment);
  return out;
}

absl::StatusOr<SecAggShareKeys> ShareKeysFromWire(uint32_t client, const v1::SecAggShareKeys& msg,
                                                  int n) {
  if (msg.shares_size() >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg wire: ", msg.shares_size(), " shares from one of ", n, " clients"));
  }
  SecAggShareKeys out;
  out.client = client;
  for (const v1::SecAggEncryptedShare& s : msg.shares()) {
    FEDGE_ASSIGN_OR_RETURN(SecAggEncryptedShare share, ShareFromWire(s, n));
    out.shares.push_back(std::move(share));
  }
  out.self_mask_commitment = msg.self_mask_commitment().substr(0, kMaxKeyBytes + 1);
  return out;
}

v1::SecAggShareList ShareListToWire(const SecAggSharesForClient& shares) {
  v1::SecAggShareList out;
  for (const SecAggEncryptedShare& s : shares.shares) *out.add_shares() = ShareToWire(s);
  return out;
}

absl::StatusOr<SecAggSharesForClient> ShareListFromWire(const v1::SecAggShareList& list, int n) {
  if (list.shares_size() >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("SecAgg wire: ", list.shares_size(), " shares for one of ", n, " clients"));
  }
  SecAggSharesForClient out;
  for (const v1::SecAggEncryptedShare& s : list.shares()) {
    FEDGE_ASSIGN_OR_RETURN(SecAggEncryptedShare share, ShareFromWire(s, n));
    out.shares.push_back(std::move(share));
  }
  return out;
}

std::string PackMasked(const std::vector<uint32_t>& masked) {
  std::string out(masked.size() * 4, '\0');
  for (size_t i = 0; i < masked.size(); ++i) {
    const uint32_t v = masked[i];
    out[4 * i] = static_cast<char>(v & 0xff);
    out[4 * i + 1] = static_cast<char>((v >> 8) & 0xff);
    out[4 * i + 2] = static_cast<char>((v >> 16) & 0xff);
    out[4 * i + 3] = static_cast<char>(v >> 24);
  }
  return out;
}

absl::StatusOr<SecAggMaskedInput> MaskedFromWire(uint32_t client, const std::string& bytes,
                                                 int64_t vector_length) {
  if (static_cast<int64_t>(bytes.size()) != 4 * vector_length) {
    return absl::InvalidArgumentError(absl::StrCat("SecAgg wire: masked input of ", bytes.size(),
                                                   " bytes, expected ", 4 * vector_length));
  }
  SecAggMaskedInput out;
  out.client = client;
  out.masked.resize(static_cast<size_t>(vector_length));
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  for (size_t i = 0; i < out.masked.size(); ++i) {
    out.masked[i] = uint32_t{b[4 * i]} | uint32_t{b[4 * i + 1]} << 8 |
                    uint32_t{b[4 * i + 2]} << 16 | uint32_t{b[4 * i + 3]} << 24;
  }
  return out;
}

v1::SecAggUnmaskingRequest UnmaskingRequestToWire(const SecAggUnmaskingRequest& request) {
  v1::SecAggUnmaskingRequest out;
  for (uint32_t u : request.survivors) out.add_survivors(static_cast<int32_t>(u));
  for (uint32_t u : request.dropped) out.add_dropped(static_cast<int32_t>(u));
  return out;
}

absl::StatusOr<SecAggUnmaskingRequest> UnmaskingRequestFromWire(
    const v1::SecAggUnmaskingRequest& request, int n) {
  SecAggUnmaskingRequest out;
  FEDGE_ASSIGN_OR_RETURN(out.survivors, IndicesFromWire(request.survivors(), n, "survivor"));
  FEDGE_ASSIGN_OR_RETURN(out.dropped, IndicesFromWire(request.dropped(), n, "dropped"));
  return out;
}

v1::SecAggUnmasking UnmaskingToWire(const SecAggUnmaskingResponse& response) {
  v1::SecAggUnmasking out;
  for (const SecAggRevealedShare& s : response.shares) {
    v1::SecAggRevealedShare* w = out.add_shares();
    w->set_owner_index(static_cast<int32_t>(s.owner));
    w->set_mask_secret_key(s.kind == SecAggRevealedShare::Kind::kMaskSecretKey);
    for (uint64_t y : s.y) w->add_y(y);
  }
  return out;
}

absl::StatusOr<SecAggUnmaskingResponse> UnmaskingFromWire(uint32_t client,
                                                          const v1::SecAggUnmasking& msg, int n) {
  if (msg.shares_size() > n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SecAgg wire: ", msg.shares_size(), " revealed shares from one of ", n, " clients"));
  }
  SecAggUnmaskingResponse out;
  out.client = client;
  for (const v1::SecAggRevealedShare& s : msg.shares()) {
    FEDGE_RETURN_IF_ERROR(CheckIndex(s.owner_index(), n, "share owner"));
    if (s.y_size() > kMaxShareElements) {
      return absl::InvalidArgumentError(
          absl::StrCat("SecAgg wire: a revealed share of ", s.y_size(), " field elements"));
    }
    SecAggRevealedShare r;
    r.owner = static_cast<uint32_t>(s.owner_index());
    r.kind = s.mask_secret_key() ? SecAggRevealedShare::Kind::kMaskSecretKey
                                 : SecAggRevealedShare::Kind::kSelfMaskSeed;
    r.y.assign(s.y().begin(), s.y().end());
    out.shares.push_back(std::move(r));
  }
  return out;
}

std::string SumDigest(const std::vector<uint32_t>& sum) {
  const std::string bytes = PackMasked(sum);
  unsigned char h[crypto_generichash_BYTES];
  crypto_generichash(h, sizeof(h), reinterpret_cast<const unsigned char*>(bytes.data()),
                     bytes.size(), nullptr, 0);
  return std::string(reinterpret_cast<const char*>(h), sizeof(h));
}

}  // namespace fedge::privacy

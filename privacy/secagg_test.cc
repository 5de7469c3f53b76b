#include "privacy/secagg.h"

#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "privacy/dp.h"
#include "privacy/fixed_point.h"
#include "tests/status_matchers.h"

namespace fedge::privacy {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

SecAggConfig Config(int n, int t, int64_t m, bool plus = false) {
  SecAggConfig c;
  c.num_clients = n;
  c.threshold = t;
  c.vector_length = m;
  c.session_id = 0xfed6e;
  c.secagg_plus = plus;
  c.graph_seed.fill(9);
  return c;
}

// Clear inputs: clipped random float updates, fixed-point encoded for up to n summands.
std::vector<std::vector<uint32_t>> Inputs(const SecAggConfig& c, uint64_t seed,
                                          std::vector<std::vector<float>>* floats = nullptr) {
  auto enc = FixedPointEncoder::Create(1.0, c.num_clients);
  base::Rng rng(seed);
  std::vector<std::vector<uint32_t>> out(c.num_clients,
                                         std::vector<uint32_t>(c.vector_length));
  if (floats) floats->assign(c.num_clients, std::vector<float>(c.vector_length));
  for (int u = 0; u < c.num_clients; ++u) {
    std::vector<float> x(c.vector_length);
    for (auto& v : x) v = static_cast<float>(rng.Uniform() * 2 - 1);
    EXPECT_THAT(enc->Encode(x, absl::MakeSpan(out[u])), IsOk());
    if (floats) (*floats)[u] = x;
  }
  return out;
}

std::vector<uint32_t> PlainSum(const std::vector<std::vector<uint32_t>>& in,
                               const std::vector<uint32_t>& who) {
  std::vector<uint32_t> s(in[0].size(), 0);
  for (uint32_t u : who) FixedPointEncoder::AddInPlace(absl::MakeSpan(s), in[u]);
  return s;
}

struct Outcome {
  absl::StatusOr<std::vector<uint32_t>> sum = absl::UnknownError("not run");
  std::vector<uint32_t> survivors;
};

// The full protocol, with clients dropping (message never delivered) at a chosen step.
struct Drops {
  std::set<uint32_t> before_share_keys;   // advertise, then vanish
  std::set<uint32_t> before_masked_input; // share keys, then vanish
  std::set<uint32_t> before_unmasking;    // send masked input, then vanish
};

Outcome RunWithDrops(const SecAggConfig& c, const std::vector<std::vector<uint32_t>>& inputs,
                     const Drops& drops) {
  Outcome o;
  auto server_or = SecAggServer::Create(c);
  EXPECT_THAT(server_or, IsOk());
  SecAggServer& server = **server_or;
  std::vector<std::unique_ptr<SecAggClient>> clients;
  for (int u = 0; u < c.num_clients; ++u) {
    auto cl = SecAggClient::Create(c, u);
    EXPECT_THAT(cl, IsOk());
    clients.push_back(std::move(*cl));
    auto adv = clients[u]->AdvertiseKeys();
    EXPECT_THAT(adv, IsOk());
    EXPECT_THAT(server.ReceiveAdvertiseKeys(*adv), IsOk());
  }
  auto keys = server.CloseAdvertiseKeys();
  if (!keys.ok()) return o.sum = keys.status(), o;
  for (int u = 0; u < c.num_clients; ++u) {
    if (drops.before_share_keys.count(u)) continue;
    auto sk = clients[u]->ShareKeys(*keys);
    EXPECT_THAT(sk, IsOk());
    EXPECT_THAT(server.ReceiveShareKeys(*sk), IsOk());
  }
  auto routed = server.CloseShareKeys();
  if (!routed.ok()) return o.sum = routed.status(), o;
  for (auto& [v, shares] : *routed) {
    if (drops.before_masked_input.count(v)) continue;
    auto mi = clients[v]->MaskedInput(shares, inputs[v]);
    EXPECT_THAT(mi, IsOk());
    EXPECT_THAT(server.ReceiveMaskedInput(*mi), IsOk());
  }
  auto req = server.CloseMaskedInput();
  if (!req.ok()) return o.sum = req.status(), o;
  o.survivors = req->survivors;
  int answered = 0;
  for (uint32_t v : req->survivors) {
    if (drops.before_unmasking.count(v)) continue;
    auto resp = clients[v]->Unmask(*req);
    EXPECT_THAT(resp, IsOk());
    EXPECT_THAT(server.ReceiveUnmaskingResponse(*resp), IsOk());
    ++answered;
  }
  o.sum = server.Finish();
  EXPECT_EQ(server.failed(), !o.sum.ok());
  return o;
}

class SecAggModeTest : public ::testing::TestWithParam<bool> {};

SecAggConfig ModeConfig(bool plus, int n, int t, int64_t m) {
  SecAggConfig c = Config(n, t, m, plus);
  if (plus) {  // small n: a sparse graph with explicit k and t_s
    c.num_neighbors = 10;
    c.share_threshold = 4;
  }
  return c;
}

TEST_P(SecAggModeTest, UnmaskedSumEqualsPlainFixedPointSumBitExactly) {
  const SecAggConfig c = ModeConfig(GetParam(), 12, 8, 3000);
  std::vector<std::vector<float>> floats;
  const auto inputs = Inputs(c, 1, &floats);
  Outcome o = RunWithDrops(c, inputs, {});
  ASSERT_THAT(o.sum, IsOk());
  std::vector<uint32_t> all(12);
  for (uint32_t u = 0; u < 12; ++u) all[u] = u;
  EXPECT_EQ(*o.sum, PlainSum(inputs, all));
  // And it decodes to the float sum within n rounding steps.
  auto enc = FixedPointEncoder::Create(1.0, 12);
  std::vector<float> dec(c.vector_length);
  enc->Decode(*o.sum, absl::MakeSpan(dec));
  for (int64_t i = 0; i < c.vector_length; i += 97) {
    double want = 0;
    for (int u = 0; u < 12; ++u) want += floats[u][i];
    EXPECT_NEAR(dec[i], want, 12 / (2 * enc->scale()) + 1e-6);
  }
}

TEST_P(SecAggModeTest, ThirtyPercentDropAfterMaskedInputStillExact) {
  const SecAggConfig c = ModeConfig(GetParam(), 20, 12, 500);
  const auto inputs = Inputs(c, 2);
  Drops d;
  d.before_unmasking = {1, 4, 7, 10, 15, 19};  // 6 of 20 vanish after sending masked input
  Outcome o = RunWithDrops(c, inputs, d);
  ASSERT_THAT(o.sum, IsOk());
  EXPECT_EQ(o.survivors.size(), 20u);  // their masked inputs are in the sum
  EXPECT_EQ(*o.sum, PlainSum(inputs, o.survivors));
}

TEST_P(SecAggModeTest, ThirtyPercentDropBeforeMaskedInputIsUnmaskedExactly) {
  const SecAggConfig c = ModeConfig(GetParam(), 20, 12, 500);
  const auto inputs = Inputs(c, 3);
  Drops d;
  d.before_masked_input = {0, 3, 8, 11, 16, 18};  // shared keys, never sent input
  d.before_share_keys = {};
  Outcome o = RunWithDrops(c, inputs, d);
  ASSERT_THAT(o.sum, IsOk());
  ASSERT_EQ(o.survivors.size(), 14u);
  EXPECT_EQ(*o.sum, PlainSum(inputs, o.survivors));
}

TEST_P(SecAggModeTest, DropsAtEveryStepTogether) {
  const SecAggConfig c = ModeConfig(GetParam(), 24, 12, 257);
  const auto inputs = Inputs(c, 4);
  Drops d;
  d.before_share_keys = {2, 13};
  d.before_masked_input = {5, 6, 20};
  d.before_unmasking = {1, 9, 23};
  Outcome o = RunWithDrops(c, inputs, d);
  ASSERT_THAT(o.sum, IsOk());
  EXPECT_EQ(o.survivors.size(), 19u);
  EXPECT_EQ(*o.sum, PlainSum(inputs, o.survivors));
}

TEST_P(SecAggModeTest, FewerThanThresholdSurvivorsFailsCleanly) {
  const SecAggConfig c = ModeConfig(GetParam(), 10, 7, 100);
  const auto inputs = Inputs(c, 5);
  Drops d;
  d.before_masked_input = {0, 1, 2, 3};  // 6 masked inputs < t = 7
  Outcome o = RunWithDrops(c, inputs, d);
  EXPECT_THAT(o.sum, StatusIs(absl::StatusCode::kFailedPrecondition,
                              HasSubstr("6 masked inputs, threshold is 7")));
  // Too few unmasking answers: also a clean failure, nothing released.
  Drops d2;
  d2.before_unmasking = {0, 1, 2, 3};
  Outcome o2 = RunWithDrops(c, inputs, d2);
  EXPECT_THAT(o2.sum, StatusIs(absl::StatusCode::kFailedPrecondition,
                               HasSubstr("answered the unmasking request")));
}

INSTANTIATE_TEST_SUITE_P(SecAggAndSecAggPlus, SecAggModeTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "SecAggPlus" : "SecAgg"; });

TEST(SecAggTest, FailedSessionRefusesEverythingAfterwards) {
  const SecAggConfig c = Config(5, 5, 10);
  auto server = SecAggServer::Create(c);
  ASSERT_THAT(server, IsOk());
  auto cl = SecAggClient::Create(c, 0);
  ASSERT_THAT((*server)->ReceiveAdvertiseKeys(*(*cl)->AdvertiseKeys()), IsOk());
  EXPECT_THAT((*server)->CloseAdvertiseKeys(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("threshold is 5")));
  EXPECT_TRUE((*server)->failed());
  EXPECT_THAT((*server)->Finish(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("failed")));
}

// What the server holds for one client is indistinguishable from uniform: a chi-square test
// over the 256 byte values of one masked input (400 kB). 255 degrees of freedom: the 0.1%
// critical value is 330.5, the 1e-6 one 377 (used, so that the test flakes once in 10^6
// runs). The clear input (small fixed-point values) fails it grossly.
TEST(SecAggTest, MaskedInputBytesLookUniformAndDifferFromTheClearInput) {
  const SecAggConfig c = Config(5, 3, 100000);
  const auto inputs = Inputs(c, 6);
  auto server = SecAggServer::Create(c);
  std::vector<std::unique_ptr<SecAggClient>> clients;
  for (int u = 0; u < 5; ++u) {
    clients.push_back(std::move(*SecAggClient::Create(c, u)));
    ASSERT_THAT((*server)->ReceiveAdvertiseKeys(*clients[u]->AdvertiseKeys()), IsOk());
  }
  auto keys = (*server)->CloseAdvertiseKeys();
  for (int u = 0; u < 5; ++u) {
    ASSERT_THAT((*server)->ReceiveShareKeys(*clients[u]->ShareKeys(*keys)), IsOk());
  }
  auto routed = (*server)->CloseShareKeys();
  ASSERT_THAT(routed, IsOk());
  auto mi = clients[2]->MaskedInput(routed->at(2), inputs[2]);
  ASSERT_THAT(mi, IsOk());
  auto chi2 = [](const std::vector<uint32_t>& v) {
    std::vector<double> count(256, 0);
    for (uint32_t w : v) {
      for (int b = 0; b < 4; ++b) count[(w >> (8 * b)) & 0xff] += 1;
    }
    const double e = v.size() * 4 / 256.0;
    double x = 0;
    for (double k : count) x += (k - e) * (k - e) / e;
    return x;
  };
  EXPECT_LT(chi2(mi->masked), 377.0);
  EXPECT_GT(chi2(inputs[2]), 10000.0);
  int64_t equal = 0;
  for (int64_t i = 0; i < c.vector_length; ++i) equal += mi->masked[i] == inputs[2][i];
  EXPECT_LT(equal, 10);  // ~100000/2^32 expected by chance
}

// A ciphertext changed in transit: the recipient refuses it (AEAD), aborts, and counts as a
// dropout; the others' sum is still exact.
TEST(SecAggTest, TamperedShareCiphertextIsRefusedAndTheRoundGoesOn) {
  const SecAggConfig c = Config(8, 5, 64);
  const auto inputs = Inputs(c, 7);
  auto server_or = SecAggServer::Create(c);
  SecAggServer& server = **server_or;
  std::vector<std::unique_ptr<SecAggClient>> clients;
  for (int u = 0; u < 8; ++u) {
    clients.push_back(std::move(*SecAggClient::Create(c, u)));
    ASSERT_THAT(server.ReceiveAdvertiseKeys(*clients[u]->AdvertiseKeys()), IsOk());
  }
  auto keys = server.CloseAdvertiseKeys();
  for (int u = 0; u < 8; ++u) {
    ASSERT_THAT(server.ReceiveShareKeys(*clients[u]->ShareKeys(*keys)), IsOk());
  }
  auto routed = server.CloseShareKeys();
  ASSERT_THAT(routed, IsOk());
  (*routed)[3].shares[2].ciphertext[40] ^= 0x01;
  EXPECT_THAT(clients[3]->MaskedInput((*routed)[3], inputs[3]),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("fails authentication")));
  // Aborted: it will not go on.
  EXPECT_THAT(clients[3]->MaskedInput((*routed)[3], inputs[3]),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
  for (uint32_t v = 0; v < 8; ++v) {
    if (v == 3) continue;
    ASSERT_THAT(server.ReceiveMaskedInput(*clients[v]->MaskedInput((*routed)[v], inputs[v])),
                IsOk());
  }
  auto req = server.CloseMaskedInput();
  ASSERT_THAT(req, IsOk());
  EXPECT_EQ(req->dropped, std::vector<uint32_t>{3});
  for (uint32_t v : req->survivors) {
    ASSERT_THAT(server.ReceiveUnmaskingResponse(*clients[v]->Unmask(*req)), IsOk());
  }
  auto sum = server.Finish();
  ASSERT_THAT(sum, IsOk());
  EXPECT_EQ(*sum, PlainSum(inputs, req->survivors));
}

// Ciphertexts are bound to their session, sender and recipient: a share replayed from an
// earlier session, redirected to another recipient, or with its nonce changed is refused.
TEST(SecAggTest, ReplayedRedirectedOrAlteredSharesFailAuthentication) {
  const SecAggConfig c = Config(3, 2, 4);
  SecAggConfig old_c = c;
  old_c.session_id = c.session_id - 1;
  auto old_a = SecAggClient::Create(old_c, 0);
  auto old_b = SecAggClient::Create(old_c, 1);
  SecAggKeysBroadcast old_keys;
  old_keys.clients = {*(*old_a)->AdvertiseKeys(), *(*old_b)->AdvertiseKeys()};
  auto old_share = (*old_a)->ShareKeys(old_keys);
  ASSERT_THAT(old_share, IsOk());

  std::vector<std::unique_ptr<SecAggClient>> cl;
  SecAggKeysBroadcast keys;
  for (uint32_t u = 0; u < 3; ++u) {
    cl.push_back(std::move(*SecAggClient::Create(c, u)));
    keys.clients.push_back(*cl[u]->AdvertiseKeys());
  }
  std::vector<SecAggShareKeys> sk;
  for (uint32_t u = 0; u < 3; ++u) sk.push_back(*cl[u]->ShareKeys(keys));
  auto share = [&](uint32_t from, uint32_t to) {
    for (const auto& e : sk[from].shares) {
      if (e.to == to) return e;
    }
    return SecAggEncryptedShare{};
  };
  // Replay from the earlier session (0 → 1).
  EXPECT_THAT(cl[1]->MaskedInput({{old_share->shares[0], share(2, 1)}}, std::vector<uint32_t>(4)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("fails authentication")));
  // Redirect: the share 0 made for 1, relabelled as addressed to 2.
  SecAggEncryptedShare redirected = share(0, 1);
  redirected.to = 2;
  EXPECT_THAT(cl[2]->MaskedInput({{redirected, share(1, 2)}}, std::vector<uint32_t>(4)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("fails authentication")));
  // Nonce altered.
  SecAggEncryptedShare altered = share(1, 0);
  altered.ciphertext[0] ^= 0x80;
  EXPECT_THAT(cl[0]->MaskedInput({{altered, share(2, 0)}}, std::vector<uint32_t>(4)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("fails authentication")));
}

TEST(SecAggTest, DuplicateShareToAClientIsRefusedAsReplay) {
  const SecAggConfig c = Config(3, 2, 4);
  auto a = SecAggClient::Create(c, 0);
  auto b = SecAggClient::Create(c, 1);
  SecAggKeysBroadcast keys;
  keys.clients = {*(*a)->AdvertiseKeys(), *(*b)->AdvertiseKeys()};
  auto sa = (*a)->ShareKeys(keys);
  ASSERT_THAT((*b)->ShareKeys(keys), IsOk());
  SecAggSharesForClient to_b;
  to_b.shares = {sa->shares[0], sa->shares[0]};
  EXPECT_THAT((*b)->MaskedInput(to_b, std::vector<uint32_t>(4, 0)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("replay")));
}

TEST(SecAggTest, ServerRefusesDuplicatesWrongLengthsAndOutOfStepMessages) {
  const SecAggConfig c = Config(4, 3, 16);
  const auto inputs = Inputs(c, 8);
  auto server_or = SecAggServer::Create(c);
  SecAggServer& server = **server_or;
  std::vector<std::unique_ptr<SecAggClient>> clients;
  std::vector<SecAggAdvertiseKeys> adv;
  for (int u = 0; u < 4; ++u) {
    clients.push_back(std::move(*SecAggClient::Create(c, u)));
    adv.push_back(*clients[u]->AdvertiseKeys());
  }
  // Keys of the wrong length.
  SecAggAdvertiseKeys short_key = adv[0];
  short_key.c_public_key.pop_back();
  EXPECT_THAT(server.ReceiveAdvertiseKeys(short_key),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has 31 bytes")));
  SecAggAdvertiseKeys unknown = adv[0];
  unknown.client = 4;
  EXPECT_THAT(server.ReceiveAdvertiseKeys(unknown),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown client 4")));
  for (int u = 0; u < 4; ++u) ASSERT_THAT(server.ReceiveAdvertiseKeys(adv[u]), IsOk());
  EXPECT_THAT(server.ReceiveAdvertiseKeys(adv[1]),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("already advertised")));
  // Out of step: masked input before keys are shared.
  EXPECT_THAT(server.ReceiveMaskedInput(SecAggMaskedInput{0, inputs[0]}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("outside its step")));
  auto keys = server.CloseAdvertiseKeys();
  ASSERT_THAT(keys, IsOk());
  // A client seeing a wrong-length key in the broadcast refuses it.
  SecAggKeysBroadcast bad_keys = *keys;
  bad_keys.clients[2].s_public_key += "x";
  EXPECT_THAT(clients[0]->ShareKeys(bad_keys),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has 33 bytes")));
  // (client 0 aborted; the other three carry on, t = 3)
  std::vector<SecAggShareKeys> sk(4);
  for (int u = 1; u < 4; ++u) {
    sk[u] = *clients[u]->ShareKeys(*keys);
    ASSERT_THAT(server.ReceiveShareKeys(sk[u]), IsOk());
  }
  EXPECT_THAT(server.ReceiveShareKeys(sk[1]),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("already shared keys")));
  auto routed = server.CloseShareKeys();
  ASSERT_THAT(routed, IsOk());
  std::vector<SecAggMaskedInput> mi(4);
  for (int v = 1; v < 4; ++v) {
    mi[v] = *clients[v]->MaskedInput(routed->at(v), inputs[v]);
    ASSERT_THAT(server.ReceiveMaskedInput(mi[v]), IsOk());
  }
  // The same client sending masked input twice (a replay, or different values): refused,
  // the first stays.
  SecAggMaskedInput again = mi[2];
  again.masked[0] += 1;
  EXPECT_THAT(server.ReceiveMaskedInput(again),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("already sent its masked")));
  EXPECT_THAT(server.ReceiveMaskedInput(mi[2]), StatusIs(absl::StatusCode::kAlreadyExists, ::testing::_));
  EXPECT_THAT(server.ReceiveMaskedInput(SecAggMaskedInput{0, inputs[0]}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("without sharing keys")));
  auto req = server.CloseMaskedInput();
  ASSERT_THAT(req, IsOk());
  std::vector<SecAggUnmaskingResponse> resp(4);
  for (int v = 1; v < 4; ++v) resp[v] = *clients[v]->Unmask(*req);
  // A survivor may not be asked for its mask key share.
  SecAggUnmaskingResponse wrong_kind = resp[1];
  wrong_kind.shares[0].kind = SecAggRevealedShare::Kind::kMaskSecretKey;
  EXPECT_THAT(server.ReceiveUnmaskingResponse(wrong_kind),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("wrong secret")));
  for (int v = 1; v < 4; ++v) ASSERT_THAT(server.ReceiveUnmaskingResponse(resp[v]), IsOk());
  EXPECT_THAT(server.ReceiveUnmaskingResponse(resp[3]),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("already sent its unmask")));
  auto sum = server.Finish();
  ASSERT_THAT(sum, IsOk());
  EXPECT_EQ(*sum, PlainSum(inputs, {1, 2, 3}));
}

// Revealed shares that do not reconstruct: the server fails the session, releases nothing.
TEST(SecAggTest, SharesThatDoNotReconstructFailCleanly) {
  for (bool tamper_dropped : {false, true}) {
    const SecAggConfig c = Config(6, 4, 8);
    const auto inputs = Inputs(c, 9);
    auto server_or = SecAggServer::Create(c);
    SecAggServer& server = **server_or;
    std::vector<std::unique_ptr<SecAggClient>> clients;
    for (int u = 0; u < 6; ++u) {
      clients.push_back(std::move(*SecAggClient::Create(c, u)));
      ASSERT_THAT(server.ReceiveAdvertiseKeys(*clients[u]->AdvertiseKeys()), IsOk());
    }
    auto keys = server.CloseAdvertiseKeys();
    for (int u = 0; u < 6; ++u) {
      ASSERT_THAT(server.ReceiveShareKeys(*clients[u]->ShareKeys(*keys)), IsOk());
    }
    auto routed = server.CloseShareKeys();
    for (int v = 0; v < 5; ++v) {  // client 5 drops before masked input
      ASSERT_THAT(server.ReceiveMaskedInput(*clients[v]->MaskedInput(routed->at(v), inputs[v])),
                  IsOk());
    }
    auto req = server.CloseMaskedInput();
    ASSERT_THAT(req, IsOk());
    for (int v = 0; v < 4; ++v) {  // exactly t = 4 answer: no spare share to cross-check
      auto r = clients[v]->Unmask(*req);
      ASSERT_THAT(r, IsOk());
      if (v == 1) {
        for (auto& s : r->shares) {
          const bool is_dropped = s.owner == 5;
          if (is_dropped == tamper_dropped) s.y[2] = FieldAdd(s.y[2], 1);  // not a clamped key bit
        }
      }
      ASSERT_THAT(server.ReceiveUnmaskingResponse(*r), IsOk());
    }
    auto sum = server.Finish();
    EXPECT_THAT(sum, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("do not reconstruct")))
        << "tamper_dropped=" << tamper_dropped;
    EXPECT_TRUE(server.failed());
  }
}

// With spare shares, a bad revealed share is found, its sender excluded, and the sum exact.
TEST(SecAggTest, ABadRevealedShareIsExcludedWhenSpareSharesExist) {
  const SecAggConfig c = Config(6, 3, 8);
  const auto inputs = Inputs(c, 10);
  auto server_or = SecAggServer::Create(c);
  SecAggServer& server = **server_or;
  std::vector<std::unique_ptr<SecAggClient>> clients;
  for (int u = 0; u < 6; ++u) {
    clients.push_back(std::move(*SecAggClient::Create(c, u)));
    ASSERT_THAT(server.ReceiveAdvertiseKeys(*clients[u]->AdvertiseKeys()), IsOk());
  }
  auto keys = server.CloseAdvertiseKeys();
  for (int u = 0; u < 6; ++u) {
    ASSERT_THAT(server.ReceiveShareKeys(*clients[u]->ShareKeys(*keys)), IsOk());
  }
  auto routed = server.CloseShareKeys();
  for (int v = 0; v < 5; ++v) {  // 5 drops before masked input
    ASSERT_THAT(server.ReceiveMaskedInput(*clients[v]->MaskedInput(routed->at(v), inputs[v])),
                IsOk());
  }
  auto req = server.CloseMaskedInput();
  for (int v = 0; v < 5; ++v) {
    auto r = clients[v]->Unmask(*req);
    if (v == 1) {  // client 1 corrupts every share it reveals (b shares and 5's key share)
      for (auto& s : r->shares) s.y[2] = FieldAdd(s.y[2], 5);
    }
    ASSERT_THAT(server.ReceiveUnmaskingResponse(*r), IsOk());
  }
  auto sum = server.Finish();
  ASSERT_THAT(sum, IsOk());
  EXPECT_EQ(*sum, PlainSum(inputs, {0, 1, 2, 3, 4}));
  EXPECT_EQ(server.misbehaving_clients(), (std::set<uint32_t>{1}));
}

TEST(SecAggTest, ClientRefusesInconsistentUnmaskingRequests) {
  const SecAggConfig c = Config(4, 3, 4);
  auto server_or = SecAggServer::Create(c);
  SecAggServer& server = **server_or;
  std::vector<std::unique_ptr<SecAggClient>> clients;
  for (int u = 0; u < 4; ++u) {
    clients.push_back(std::move(*SecAggClient::Create(c, u)));
    ASSERT_THAT(server.ReceiveAdvertiseKeys(*clients[u]->AdvertiseKeys()), IsOk());
  }
  auto keys = server.CloseAdvertiseKeys();
  for (int u = 0; u < 4; ++u) {
    ASSERT_THAT(server.ReceiveShareKeys(*clients[u]->ShareKeys(*keys)), IsOk());
  }
  auto routed = server.CloseShareKeys();
  for (int v = 0; v < 4; ++v) {
    ASSERT_THAT(clients[v]->MaskedInput(routed->at(v), std::vector<uint32_t>(4, 1)), IsOk());
  }
  // Client 2 both survivor and dropped: revealing both secrets would unmask it.
  EXPECT_THAT(clients[0]->Unmask({{0, 1, 2}, {2, 3}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("both survivor and dropped")));
  EXPECT_THAT(clients[1]->Unmask({{0, 1, 2}, {}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("omits client 3")));
  EXPECT_THAT(clients[2]->Unmask({{0, 2}, {1, 3}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("threshold is 3")));
  auto ok = clients[3]->Unmask({{0, 1, 3}, {2}});
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(ok->shares.size(), 4u);  // own b, b of 0 and 1, s of 2
  EXPECT_THAT(clients[3]->Unmask({{0, 1, 3}, {2}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
}

// The device pipeline end to end: clip to S, add the distributed-DP share N(0, (zS)²/t),
// encode with B = S + 6σ, mask; the server unmasks the survivors' sum. The decoded sum minus
// the clipped clear sum is the noise: std z·S·sqrt(m/t) for m survivors (= z·S at m = t).
TEST(SecAggTest, DistributedDpNoiseSurvivesSecureAggregation) {
  const int n = 10, t = 7;
  const int64_t len = 20000;
  const double z = 1.0, S = 0.5;
  const SecAggConfig c = Config(n, t, len);
  auto sigma = DistributedNoiseStddev(z, S, t);
  ASSERT_THAT(sigma, IsOk());
  auto enc = FixedPointEncoder::Create(S + 6 * *sigma, n);
  ASSERT_THAT(enc, IsOk());
  base::Rng rng(12);
  std::vector<std::vector<float>> clipped(n, std::vector<float>(len));
  std::vector<std::vector<uint32_t>> encoded(n, std::vector<uint32_t>(len));
  for (int u = 0; u < n; ++u) {
    for (auto& v : clipped[u]) v = static_cast<float>(rng.Normal());
    std::vector<absl::Span<float>> tensors = {absl::MakeSpan(clipped[u])};
    ASSERT_THAT(ClipToL2Norm(tensors, S), IsOk());
    std::vector<float> noised = clipped[u];
    Seed seed;
    seed.fill(static_cast<uint8_t>(40 + u));
    NoiseGenerator::CreateFromSeed(seed)->AddGaussianNoise(absl::MakeSpan(noised), *sigma);
    auto clamped = enc->Encode(noised, absl::MakeSpan(encoded[u]));
    ASSERT_THAT(clamped, IsOk());
    EXPECT_EQ(*clamped, 0);
  }
  for (const int drops : {0, 3}) {
    Drops d;
    for (int u = 0; u < drops; ++u) d.before_masked_input.insert(u);
    Outcome o = RunWithDrops(c, encoded, d);
    ASSERT_THAT(o.sum, IsOk());
    const int m = n - drops;
    std::vector<float> dec(len);
    enc->Decode(*o.sum, absl::MakeSpan(dec));
    double sq = 0;
    for (int64_t i = 0; i < len; ++i) {
      double clear = 0;
      for (uint32_t u : o.survivors) clear += clipped[u][i];
      sq += (dec[i] - clear) * (dec[i] - clear);
    }
    const double want = z * S * std::sqrt(static_cast<double>(m) / t);
    EXPECT_NEAR(std::sqrt(sq / len), want, 0.03 * want) << m << " survivors";
  }
}

// The server is unharmed by junk: random malformed messages at every step are refused and
// change nothing; the honest session then completes with the exact sum.
TEST(SecAggTest, RandomJunkMessagesAreRefusedAndChangeNothing) {
  const SecAggConfig c = Config(6, 4, 32);
  const auto inputs = Inputs(c, 13);
  auto server_or = SecAggServer::Create(c);
  SecAggServer& server = **server_or;
  base::Rng rng(99);
  auto junk_bytes = [&](size_t max_len) {
    std::string s(rng.UniformInt(max_len + 1), '\0');
    for (char& ch : s) ch = static_cast<char>(rng.UniformInt(256));
    return s;
  };
  auto junk_id = [&] { return static_cast<uint32_t>(rng.UniformInt(9)); };  // some unknown
  std::vector<std::unique_ptr<SecAggClient>> clients;
  for (int u = 0; u < 6; ++u) {
    clients.push_back(std::move(*SecAggClient::Create(c, u)));
    ASSERT_THAT(server.ReceiveAdvertiseKeys(*clients[u]->AdvertiseKeys()), IsOk());
  }
  for (int i = 0; i < 200; ++i) {
    EXPECT_FALSE(server.ReceiveAdvertiseKeys({junk_id(), junk_bytes(40), junk_bytes(40)}).ok());
  }
  auto keys = server.CloseAdvertiseKeys();
  ASSERT_THAT(keys, IsOk());
  EXPECT_EQ(keys->clients.size(), 6u);
  std::vector<SecAggShareKeys> sk;
  for (int u = 0; u < 6; ++u) sk.push_back(*clients[u]->ShareKeys(*keys));
  for (int i = 0; i < 200; ++i) {
    SecAggShareKeys bad = sk[rng.UniformInt(6)];
    switch (rng.UniformInt(4)) {
      case 0: bad.shares[rng.UniformInt(bad.shares.size())].to = bad.client; break;
      case 1: {
        // A junk ciphertext of the right length looks like any other to the server; only its
        // recipient can tell (ReplayedRedirectedOrAlteredSharesFailAuthentication).
        std::string& ct = bad.shares[rng.UniformInt(bad.shares.size())].ciphertext;
        ct = junk_bytes(200);
        if (ct.size() == 128) ct.push_back('x');
        break;
      }
      case 2: bad.shares.pop_back(); break;
      default: bad.self_mask_commitment = junk_bytes(31); break;
    }
    EXPECT_FALSE(server.ReceiveShareKeys(bad).ok());
  }
  for (int u = 0; u < 6; ++u) ASSERT_THAT(server.ReceiveShareKeys(sk[u]), IsOk());
  auto routed = server.CloseShareKeys();
  ASSERT_THAT(routed, IsOk());
  for (int i = 0; i < 200; ++i) {
    SecAggMaskedInput bad{junk_id(), std::vector<uint32_t>(rng.UniformInt(64))};
    if (bad.client < 6 && bad.masked.size() == 32) bad.masked.push_back(0);
    EXPECT_FALSE(server.ReceiveMaskedInput(bad).ok());
  }
  for (int v = 0; v < 6; ++v) {
    ASSERT_THAT(server.ReceiveMaskedInput(*clients[v]->MaskedInput(routed->at(v), inputs[v])),
                IsOk());
  }
  auto req = server.CloseMaskedInput();
  ASSERT_THAT(req, IsOk());
  std::vector<SecAggUnmaskingResponse> resp;
  for (int v = 0; v < 6; ++v) resp.push_back(*clients[v]->Unmask(*req));
  for (int i = 0; i < 200; ++i) {
    SecAggUnmaskingResponse bad = resp[rng.UniformInt(6)];
    SecAggRevealedShare& s = bad.shares[rng.UniformInt(bad.shares.size())];
    switch (rng.UniformInt(4)) {
      case 0: s.owner = 6 + static_cast<uint32_t>(rng.UniformInt(3)); break;
      case 1: s.kind = SecAggRevealedShare::Kind::kMaskSecretKey; break;
      case 2: s.y.resize(rng.UniformInt(5)); break;
      default: s.y[0] = kShamirPrime + rng.UniformInt(100); break;
    }
    EXPECT_FALSE(server.ReceiveUnmaskingResponse(bad).ok());
  }
  for (int v = 0; v < 6; ++v) ASSERT_THAT(server.ReceiveUnmaskingResponse(resp[v]), IsOk());
  auto sum = server.Finish();
  ASSERT_THAT(sum, IsOk());
  EXPECT_EQ(*sum, PlainSum(inputs, {0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(server.misbehaving_clients().empty());
}

TEST(SecAggPlanTest, HararyGraphIsSymmetricRegularAndSharedBySeed) {
  SecAggConfig c = Config(50, 30, 1, true);
  c.num_neighbors = 8;
  c.share_threshold = 4;
  auto a = SecAggPlan::Create(c);
  auto b = SecAggPlan::Create(c);
  ASSERT_THAT(a, IsOk());
  ASSERT_TRUE(a->sparse());
  std::set<uint32_t> first_neighbors;
  for (uint32_t u = 0; u < 50; ++u) {
    auto nu = a->Neighbors(u);
    EXPECT_EQ(nu.size(), 8u);
    EXPECT_EQ(nu, b->Neighbors(u));
    for (uint32_t v : nu) {
      EXPECT_TRUE(a->AreNeighbors(v, u));
      EXPECT_NE(u, v);
    }
  }
  // A different seed, a different graph.
  c.graph_seed.fill(10);
  auto d = SecAggPlan::Create(c);
  bool differs = false;
  for (uint32_t u = 0; u < 50; ++u) differs |= d->Neighbors(u) != a->Neighbors(u);
  EXPECT_TRUE(differs);
}

// Bell et al.: k grows like log n. Figures for a 5% colluding / 30% dropout threat model.
TEST(SecAggPlanTest, SecAggPlusDegreeGrowsLogarithmically) {
  auto p1k = ChooseSecAggPlusParameters(1000, 0.05, 0.3);
  auto p10k = ChooseSecAggPlusParameters(10000, 0.05, 0.3);
  auto p100k = ChooseSecAggPlusParameters(100000, 0.05, 0.3);
  ASSERT_THAT(p1k, IsOk());
  ASSERT_THAT(p10k, IsOk());
  ASSERT_THAT(p100k, IsOk());
  std::printf("SecAgg+ (k, t_s): n=1e3 (%d, %d), n=1e4 (%d, %d), n=1e5 (%d, %d)\n",
              p1k->num_neighbors, p1k->threshold, p10k->num_neighbors, p10k->threshold,
              p100k->num_neighbors, p100k->threshold);
  EXPECT_LT(p1k->num_neighbors, 999);
  EXPECT_LE(p1k->num_neighbors, p10k->num_neighbors);
  EXPECT_LE(p10k->num_neighbors, p100k->num_neighbors);
  EXPECT_LT(p100k->num_neighbors, 2 * p1k->num_neighbors);  // 100× the clients, < 2× the degree
  EXPECT_GT(p1k->threshold, 1);
  EXPECT_LE(p1k->threshold, p1k->num_neighbors);
  EXPECT_THAT(ChooseSecAggPlusParameters(1000, 0.5, 0.5),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("infeasible")));
  EXPECT_THAT(ChooseSecAggPlusParameters(4, 0.05, 0.3),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("complete graph")));
}

TEST(SecAggPlanTest, DerivedSecAggPlusRunsExactlyAt200Clients) {
  SecAggConfig c = Config(200, 100, 64, true);
  auto plan = SecAggPlan::Create(c);
  ASSERT_THAT(plan, IsOk());
  ASSERT_TRUE(plan->sparse());
  const auto inputs = Inputs(c, 11);
  Drops d;
  for (uint32_t u = 0; u < 200; u += 10) d.before_unmasking.insert(u);    // 10%
  for (uint32_t u = 5; u < 200; u += 10) d.before_masked_input.insert(u); // 10%
  Outcome o = RunWithDrops(c, inputs, d);
  ASSERT_THAT(o.sum, IsOk());
  EXPECT_EQ(o.survivors.size(), 180u);
  EXPECT_EQ(*o.sum, PlainSum(inputs, o.survivors));
}

}  // namespace
}  // namespace fedge::privacy

#include "server/secure_round.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "privacy/fixed_point.h"
#include "privacy/secagg.h"
#include "privacy/secagg_wire.h"
#include "tests/status_matchers.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

// A device's side of the protocol, as the device runtime runs it (without a transport).
struct Device {
  std::string id;
  std::unique_ptr<privacy::SecAggClient> client;
  std::vector<uint32_t> encoded;
};

v1::SecAggStepRequest Step(int phase, Device& d, const v1::SecAggStepResponse& previous,
                           int n) {
  v1::SecAggStepRequest r;
  switch (phase) {
    case 0:
      *r.mutable_advertise_keys() = privacy::KeysToWire(*d.client->AdvertiseKeys());
      break;
    case 1: {
      auto list = privacy::KeyListFromWire(previous.keys(), n);
      *r.mutable_share_keys() = privacy::ShareKeysToWire(*d.client->ShareKeys(*list));
      break;
    }
    case 2: {
      auto mine = privacy::ShareListFromWire(previous.shares(), n);
      auto masked = d.client->MaskedInput(*mine, d.encoded);
      r.mutable_masked_input()->set_masked(privacy::PackMasked(masked->masked));
      r.mutable_masked_input()->set_num_examples(10);
      break;
    }
    default: {
      auto request = privacy::UnmaskingRequestFromWire(previous.unmasking_request(), n);
      *r.mutable_unmasking() = privacy::UnmaskingToWire(*d.client->Unmask(*request));
    }
  }
  return r;
}

TEST(SecureRoundTest, ReleasesTheSurvivorsMeanAndDropsWhoMissesAPhase) {
  v1::PrivacyConfig privacy;
  privacy.set_clip_norm(1.0);
  privacy.set_secure_aggregation_threshold(2);
  const std::vector<std::string> ids = {"a", "b", "c"};
  SecureRound::Encoding e;
  e.clip_norm = 1.0;
  // Two tensors of 2 values each.
  aggregation::ModelWeights model(2);
  model[0].name = "w";
  model[0].shape = {2};
  model[0].values = {0, 0};
  model[1].name = "b";
  model[1].shape = {2};
  model[1].values = {0, 0};
  auto round = SecureRound::Create(privacy, ids, 4, e);
  ASSERT_THAT(round.status(), IsOk());
  SecureRound& s = **round;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  s.set_phase_deadline(t0 + absl::Seconds(60));
  const std::vector<std::vector<float>> x = {{0.5f, -0.25f, 0.125f, 0.0f},
                                             {0.25f, 0.25f, -0.5f, 0.75f},
                                             {0.9f, 0.9f, 0.9f, 0.9f}};
  std::vector<Device> devices;
  for (size_t i = 0; i < ids.size(); ++i) {
    const v1::SecureAggregationSession session = s.SessionFor(ids[i]);
    auto config = privacy::ConfigFromSession(session);
    ASSERT_THAT(config.status(), IsOk());
    auto encoder =
        privacy::FixedPointEncoder::Create(session.max_abs_value(), session.max_summands());
    ASSERT_THAT(encoder.status(), IsOk());
    Device d;
    d.id = ids[i];
    d.client = std::move(privacy::SecAggClient::Create(
                             *config, static_cast<uint32_t>(session.client_index())))
                   .value();
    d.encoded.resize(4);
    ASSERT_THAT(encoder->Encode(x[i], absl::MakeSpan(d.encoded)).status(), IsOk());
    devices.push_back(std::move(d));
  }
  absl::flat_hash_set<std::string> waiting(ids.begin(), ids.end());
  std::vector<v1::SecAggStepResponse> last(ids.size());
  for (int phase = 0; phase < 4; ++phase) {
    for (size_t i = 0; i < devices.size(); ++i) {
      if (!waiting.contains(ids[i])) continue;
      // "c" drops out after sending its keys: it never sends its shares.
      if (ids[i] == "c" && phase >= 1) continue;
      ASSERT_THAT(s.Receive(ids[i], Step(phase, devices[i], last[i], 3)), IsOk())
          << "phase " << phase << " client " << ids[i];
    }
    // Not complete while "c" is silent, until its phase times out.
    auto finished = s.Advance(t0 + absl::Seconds(1), absl::Seconds(10), waiting);
    ASSERT_THAT(finished.status(), IsOk());
    if (phase == 1) {
      EXPECT_EQ(s.phase(), 1);
      EXPECT_TRUE(waiting.contains("c"));
      // Phase 1 times out 10 s after the training phase's deadline (t0 + 60).
      finished = s.Advance(t0 + absl::Seconds(71), absl::Seconds(10), waiting);
      ASSERT_THAT(finished.status(), IsOk());
      EXPECT_FALSE(waiting.contains("c"));  // a dropout
    }
    EXPECT_EQ(*finished, phase == 3);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!waiting.contains(ids[i]) || phase == 3) continue;
      auto r = s.Poll(ids[i], phase);
      ASSERT_THAT(r.status(), IsOk());
      last[i] = *r;
    }
  }
  EXPECT_THAT(s.Survivors(), UnorderedElementsAre("a", "b"));
  const SecureRound::Release release = s.Released(model);
  EXPECT_EQ(release.mean.weight, 2);
  ASSERT_EQ(release.mean.tensors.size(), 2u);
  EXPECT_EQ(release.mean.tensors[1].name, "b");
  const float tolerance = 1e-4f;
  EXPECT_NEAR(release.mean.tensors[0].values[0], (0.5f + 0.25f) / 2, tolerance);
  EXPECT_NEAR(release.mean.tensors[0].values[1], 0.0f, tolerance);
  EXPECT_NEAR(release.mean.tensors[1].values[0], (0.125f - 0.5f) / 2, tolerance);
  EXPECT_NEAR(release.mean.tensors[1].values[1], 0.375f, tolerance);
  EXPECT_FALSE(release.noised_unclipped.has_value());
}

TEST(SecureRoundTest, FewerThanTheThresholdReleasesNothing) {
  v1::PrivacyConfig privacy;
  privacy.set_clip_norm(1.0);
  privacy.set_secure_aggregation_threshold(2);
  SecureRound::Encoding e;
  e.clip_norm = 1.0;
  auto round = SecureRound::Create(privacy, {"a", "b", "c"}, 3, e);
  ASSERT_THAT(round.status(), IsOk());
  absl::flat_hash_set<std::string> waiting = {"a", "b", "c"};
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  (*round)->set_phase_deadline(t0);
  // Nobody sent keys and the phase timed out: below t, the session fails.
  auto finished = (*round)->Advance(t0 + absl::Seconds(1), absl::Seconds(10), waiting);
  EXPECT_FALSE(finished.ok());
  EXPECT_TRUE(waiting.empty());
}

// SecAgg+'s neighbours and share threshold are derived once, by the coordinator, and travel
// in every device's session; a device refuses to derive them itself for a large session
// (the search grows faster than n², and n comes from the coordinator).
TEST(SecureRoundTest, SecAggPlusSessionsNameTheirNeighbours) {
  v1::PrivacyConfig privacy;
  privacy.set_clip_norm(1.0);
  privacy.set_secure_aggregation_threshold(200);
  privacy.set_secure_aggregation_plus(true);
  std::vector<std::string> ids;
  for (int i = 0; i < 1200; ++i) ids.push_back(absl::StrCat("d", i));
  SecureRound::Encoding e;
  e.clip_norm = 1.0;
  auto round = SecureRound::Create(privacy, ids, 4, e);
  ASSERT_THAT(round.status(), IsOk());
  const v1::SecureAggregationSession session = (*round)->SessionFor("d7");
  EXPECT_TRUE((*round)->metrics().plus());
  EXPECT_GT(session.num_neighbors(), 0);
  EXPECT_LT(session.num_neighbors(), 1199);
  EXPECT_EQ(session.num_neighbors(), (*round)->metrics().num_neighbors());
  EXPECT_GE(session.share_threshold(), 2);
  ASSERT_THAT(privacy::ConfigFromSession(session).status(), IsOk());
  // The same session asking the device to derive them: refused.
  v1::SecureAggregationSession derive = session;
  derive.set_num_neighbors(0);
  derive.set_share_threshold(0);
  EXPECT_THAT(privacy::ConfigFromSession(derive).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must name its neighbours")));
}

}  // namespace
}  // namespace fedge::server

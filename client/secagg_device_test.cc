#include "client/secagg_device.h"

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "privacy/fixed_point.h"
#include "privacy/secagg.h"
#include "privacy/secagg_wire.h"
#include "tests/status_matchers.h"

namespace fedge::client {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;

constexpr int kClients = 4;
constexpr int kParams = 5;

// A task whose session has `kClients` participants (this device at `index`) and Δ of
// kParams values.
v1::TaskHeader SessionTask(int index, double noise_stddev = 0, bool clipped_count = false) {
  privacy::SecAggConfig config;
  config.num_clients = kClients;
  config.threshold = 3;
  config.vector_length = kParams + (clipped_count ? 1 : 0);
  config.session_id = 77;
  v1::TaskHeader t;
  t.set_job_id("job-1");
  t.set_round(3);
  t.set_task_id("task-3");
  t.mutable_privacy()->set_clip_norm(2.0);
  v1::SecureAggregationSession& s = *t.mutable_secure_aggregation();
  s = privacy::SessionFromConfig(config);
  s.set_client_index(index);
  s.set_max_abs_value(4.0);
  s.set_max_summands(kClients);
  s.set_noise_stddev(noise_stddev);
  s.set_clipped_count(clipped_count);
  s.set_count_noise_stddev(clipped_count ? noise_stddev : 0);
  return t;
}

LocalUpdate Update(float base, double norm = 1.0) {
  LocalUpdate u;
  v1::TensorProto* p = u.delta.add_parameters();
  p->set_name("w");
  p->add_shape(kParams);
  for (int i = 0; i < kParams; ++i) p->add_values(base + 0.25f * static_cast<float>(i));
  u.num_examples = 10;
  u.delta_norm = norm;
  return u;
}

TEST(SecAggDeviceTest, InputIsTheFixedPointEncodedUpdateWithoutNoise) {
  const v1::TaskHeader t = SessionTask(0);
  auto device = SecAggDevice::Create(t, Update(-0.5f), {});
  ASSERT_THAT(device.status(), IsOk());
  auto encoder = privacy::FixedPointEncoder::Create(4.0, kClients);
  ASSERT_THAT(encoder.status(), IsOk());
  std::vector<uint32_t> want(kParams);
  const LocalUpdate u = Update(-0.5f);
  std::vector<float> x(u.delta.parameters(0).values().begin(), u.delta.parameters(0).values().end());
  ASSERT_THAT(encoder->Encode(x, absl::MakeSpan(want)).status(), IsOk());
  EXPECT_EQ((*device)->input(), want);
  EXPECT_EQ((*device)->clamped(), 0);
}

TEST(SecAggDeviceTest, CountCoordinateSaysWhetherTheUpdateWasWithinTheClipNorm) {
  auto within = SecAggDevice::Create(SessionTask(0, 0, true), Update(0, 1.5), {});
  auto over = SecAggDevice::Create(SessionTask(0, 0, true), Update(0, 2.5), {});
  ASSERT_THAT(within.status(), IsOk());
  ASSERT_THAT(over.status(), IsOk());
  auto encoder = privacy::FixedPointEncoder::Create(4.0, kClients);
  std::vector<float> decoded(1);
  encoder->Decode({(*within)->input().back()}, absl::MakeSpan(decoded));
  EXPECT_NEAR(decoded[0], 2.0, 1e-3);  // the clip norm
  encoder->Decode({(*over)->input().back()}, absl::MakeSpan(decoded));
  EXPECT_NEAR(decoded[0], 0.0, 1e-3);
}

TEST(SecAggDeviceTest, SeededNoiseIsReproducibleAndPerDevice) {
  const v1::TaskHeader t = SessionTask(0, 0.5);
  SecAggDevice::Options a, b;
  a.noise_seed = DeviceNoiseSeed(9, t, "dev-a");
  b.noise_seed = DeviceNoiseSeed(9, t, "dev-b");
  auto a1 = SecAggDevice::Create(t, Update(0), a);
  auto a2 = SecAggDevice::Create(t, Update(0), a);
  auto b1 = SecAggDevice::Create(t, Update(0), b);
  auto plain = SecAggDevice::Create(SessionTask(0), Update(0), {});
  ASSERT_THAT(a1.status(), IsOk());
  ASSERT_THAT(a2.status(), IsOk());
  ASSERT_THAT(b1.status(), IsOk());
  ASSERT_THAT(plain.status(), IsOk());
  EXPECT_EQ((*a1)->input(), (*a2)->input());
  EXPECT_NE((*a1)->input(), (*b1)->input());
  EXPECT_NE((*a1)->input(), (*plain)->input());  // noise was added
  v1::TaskHeader next = t;
  next.set_round(4);
  EXPECT_NE(DeviceNoiseSeed(9, t, "dev-a"), DeviceNoiseSeed(9, next, "dev-a"));
}

TEST(SecAggDeviceTest, RefusesAnUpdateOfTheWrongLength) {
  LocalUpdate u = Update(0);
  u.delta.mutable_parameters(0)->add_values(1);
  EXPECT_THAT(SecAggDevice::Create(SessionTask(0), u, {}).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(SecAggDeviceTest, StepsOnlyInOrderAndOnTheRightAnswer) {
  auto device = SecAggDevice::Create(SessionTask(1), Update(0), {});
  ASSERT_THAT(device.status(), IsOk());
  EXPECT_THAT((*device)->Continue(v1::SecAggStepResponse()).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT((*device)->Start().status(), IsOk());
  EXPECT_EQ((*device)->phase(), 0);
  EXPECT_THAT((*device)->Start().status(), StatusIs(absl::StatusCode::kFailedPrecondition));
  v1::SecAggStepResponse wrong;
  wrong.set_retry_after_ms(5);
  EXPECT_THAT((*device)->Continue(wrong).status(), StatusIs(absl::StatusCode::kInternal));
}

// The whole protocol between four devices and a privacy::SecAggServer, with device 3
// dropping after its masked input: the server's sum is the sum of the four inputs.
TEST(SecAggDeviceTest, FourPhasesReleaseTheSumOfTheInputs) {
  privacy::SecAggConfig config;
  config.num_clients = kClients;
  config.threshold = 3;
  config.vector_length = kParams;
  config.session_id = 77;
  auto server = privacy::SecAggServer::Create(config);
  ASSERT_THAT(server.status(), IsOk());
  std::vector<std::unique_ptr<SecAggDevice>> devices;
  std::vector<uint32_t> plain(kParams, 0);
  for (int i = 0; i < kClients; ++i) {
    auto d = SecAggDevice::Create(SessionTask(i), Update(0.1f * static_cast<float>(i)), {});
    ASSERT_THAT(d.status(), IsOk());
    for (int j = 0; j < kParams; ++j) plain[j] += (*d)->input()[j];
    devices.push_back(*std::move(d));
  }
  for (int i = 0; i < kClients; ++i) {
    auto keys = devices[i]->Start();
    ASSERT_THAT(keys.status(), IsOk());
    ASSERT_THAT((*server)->ReceiveAdvertiseKeys(
                    privacy::KeysFromWire(i, keys->advertise_keys())),
                IsOk());
  }
  auto list = (*server)->CloseAdvertiseKeys();
  ASSERT_THAT(list.status(), IsOk());
  v1::SecAggStepResponse answer;
  *answer.mutable_keys() = privacy::KeyListToWire(*list);
  for (int i = 0; i < kClients; ++i) {
    auto shares = devices[i]->Continue(answer);
    ASSERT_THAT(shares.status(), IsOk());
    auto msg = privacy::ShareKeysFromWire(i, shares->share_keys(), kClients);
    ASSERT_THAT(msg.status(), IsOk());
    ASSERT_THAT((*server)->ReceiveShareKeys(*msg), IsOk());
  }
  auto delivered = (*server)->CloseShareKeys();
  ASSERT_THAT(delivered.status(), IsOk());
  for (int i = 0; i < kClients; ++i) {
    v1::SecAggStepResponse mine;
    *mine.mutable_shares() = privacy::ShareListToWire(delivered->at(i));
    auto masked = devices[i]->Continue(mine);
    ASSERT_THAT(masked.status(), IsOk());
    EXPECT_EQ(masked->masked_input().num_examples(), 10);
    auto in = privacy::MaskedFromWire(i, masked->masked_input().masked(), kParams);
    ASSERT_THAT(in.status(), IsOk());
    EXPECT_NE(in->masked, devices[i]->input());  // masked, not clear
    ASSERT_THAT((*server)->ReceiveMaskedInput(*in), IsOk());
  }
  auto request = (*server)->CloseMaskedInput();
  ASSERT_THAT(request.status(), IsOk());
  v1::SecAggStepResponse unmask;
  *unmask.mutable_unmasking_request() = privacy::UnmaskingRequestToWire(*request);
  for (int i = 0; i < kClients - 1; ++i) {  // device 3 is gone
    auto reveal = devices[i]->Continue(unmask);
    ASSERT_THAT(reveal.status(), IsOk());
    EXPECT_TRUE(devices[i]->done());
    auto msg = privacy::UnmaskingFromWire(i, reveal->unmasking(), kClients);
    ASSERT_THAT(msg.status(), IsOk());
    ASSERT_THAT((*server)->ReceiveUnmaskingResponse(*msg), IsOk());
  }
  auto sum = (*server)->Finish();
  ASSERT_THAT(sum.status(), IsOk());
  EXPECT_EQ(*sum, plain);
  EXPECT_EQ(privacy::SumDigest(*sum), privacy::SumDigest(plain));
}

}  // namespace
}  // namespace fedge::client

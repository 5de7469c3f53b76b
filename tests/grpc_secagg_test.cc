// Secure aggregation over real gRPC: an in-process coordinator
// on 127.0.0.1 and devices written against the generated stubs, each running its own
// privacy::SecAggClient. Checks the released sum bit for bit against the plain fixed-point
// sum (RoundMetrics.secure_aggregation.sum_digest), with and without dropouts after the
// masked input, SecAgg and SecAgg+; a round with fewer than t survivors fails with nothing
// released and the job goes on; bad messages (wrong key length, a tampered share, a masked
// input sent twice, a replay) give clear errors and leave the coordinator unharmed.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/text_format.h"
#include "absl/time/clock.h"
#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/payload.h"
#include "model/sequential.h"
#include "privacy/fixed_point.h"
#include "privacy/secagg.h"
#include "privacy/secagg_wire.h"
#include "proto/admin.grpc.pb.h"
#include "proto/coordinator.grpc.pb.h"
#include "server/coordinator.h"
#include "server/grpc/grpc_server.h"
#include "server/store.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"

namespace fedge {
namespace {

using ::fedge::testing::IsOk;
using ::testing::HasSubstr;

constexpr char kToken[] = "enroll-me";
constexpr char kTinyMlp[] =
    "model_spec { name: \"tiny\" input_shape: 8 "
    "layers { name: \"fc1\" dense { in_features: 8 out_features: 16 } } "
    "layers { name: \"relu1\" relu {} } "
    "layers { name: \"fc2\" dense { in_features: 16 out_features: 3 } } }";
constexpr double kClip = 1.0;

// What a test device does wrong, if anything.
struct Behaviour {
  int stop_after_phase = 99;     // send phases 0..stop_after_phase, then go silent
  bool short_keys = false;       // 31-byte public keys
  bool tamper_share_to = false;  // flip a byte of the first share it sends
  bool masked_twice = false;     // send the masked input a second time
  bool corrupt_reveal = false;   // reveal a share that does not reconstruct
  bool nan_metrics = false;      // report a NaN train loss and -1 train seconds
};

struct DeviceResult {
  grpc::Status last;              // the first error the device saw (OK if none)
  absl::Status client_error;      // its own SecAggClient's refusal, if any
  int sent_phases = 0;            // phases whose message the coordinator accepted
  std::vector<uint32_t> encoded;  // its fixed-point input (empty if it never encoded)
  std::string masked_bytes;       // its masked input as the coordinator received it
  v1::TaskHeader header;
};

class GrpcSecAggTest : public ::testing::Test {
 protected:
  void Start() {
    dir_ = ::testing::TempDir() + "/grpc_secagg_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    auto store = server::Store::Open(dir_);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(store).value();
    server::CoordinatorOptions o;
    o.enrollment_token = kToken;
    o.liveness_timeout = absl::Seconds(2);  // silent devices drop out quickly
    o.evaluation_data = std::make_shared<const data::Dataset>(
        ::fedge::testing::SeparableData(100, 8, 3, 99));
    auto c = server::Coordinator::Create(o, store_.get());
    ASSERT_THAT(c, IsOk());
    coordinator_ = std::move(c).value();
    server::GrpcServerOptions so;
    so.listen_address = "127.0.0.1:0";
    so.credentials = grpc::InsecureServerCredentials();
    so.tick_interval = absl::Milliseconds(20);
    so.limits.max_wait = absl::Seconds(2);
    auto s = server::GrpcCoordinatorServer::Start(so, coordinator_.get(), store_.get());
    ASSERT_THAT(s, IsOk());
    server_ = std::move(s).value();
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Coordinator::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  std::pair<std::string, std::string> Enroll() {
    v1::RegisterRequest r;
    r.set_enrollment_token(kToken);
    r.mutable_profile()->set_num_examples(50);
    v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    EXPECT_TRUE(stub_->Register(&ctx, r, &resp).ok());
    return {resp.client_id(), resp.session_token()};
  }

  std::string JobText(int per_round, int threshold, const std::string& extra_privacy = "",
                      int rounds = 1) {
    // min_registered: a round (or its retry) opens only once `per_round` devices are live.
    return absl::StrCat("name: \"secagg\"\n", kTinyMlp, "\nrounds: ", rounds,
                        "\nselection { clients_per_round: ", per_round, " min_registered: ",
                        per_round, " }\nround_policy { quorum: ", threshold,
                        " deadline_seconds: 60 }\n"
                        "local_training { epochs: 1 batch_size: 16 learning_rate: 0.1 }\n"
                        "privacy { clip_norm: ", kClip, " secure_aggregation_threshold: ",
                        threshold, " ", extra_privacy, " }\n");
  }

  std::string StartJob(const std::string& text) {
    v1::JobConfig config;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &config));
    auto id = coordinator_->StartJob(config);
    EXPECT_THAT(id, IsOk());
    return id.ok() ? *id : "";
  }

  // Long-polls until a task arrives; returns its header (the model is not needed: the test
  // devices send inputs of their own).
  std::optional<v1::TaskHeader> FetchTask(const std::string& id, const std::string& token) {
    for (int attempt = 0; attempt < 6; ++attempt) {
      v1::FetchTaskRequest req;
      req.set_client_id(id);
      req.set_session_token(token);
      req.set_wait_seconds(1);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      auto reader = stub_->FetchTask(&ctx, req);
      v1::TaskChunk msg;
      std::optional<v1::TaskHeader> header;
      while (reader->Read(&msg)) {
        if (msg.has_header()) header = msg.header();
      }
      if (!reader->Finish().ok()) return std::nullopt;
      if (header.has_value()) return header;
    }
    return std::nullopt;
  }

  grpc::Status Call(const std::string& id, const std::string& token, const v1::TaskHeader& t,
                    v1::SecAggStepRequest req, v1::SecAggStepResponse* resp) {
    req.set_client_id(id);
    req.set_session_token(token);
    req.set_job_id(t.job_id());
    req.set_round(t.round());
    req.set_task_id(t.task_id());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub_->SecureAggregationStep(&ctx, req, resp);
  }

  grpc::Status Await(const std::string& id, const std::string& token, const v1::TaskHeader& t,
                     int phase, v1::SecAggStepResponse* resp) {
    v1::SecAggStepRequest poll;
    poll.set_poll(phase);
    for (;;) {
      grpc::Status s = Call(id, token, t, poll, resp);
      if (!s.ok() || resp->result_case() != v1::SecAggStepResponse::kRetryAfterMs) return s;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

  // One device's whole protocol run with input `x` (L2 norm ≤ kClip).
  DeviceResult RunDevice(const std::string& id, const std::string& token,
                         const std::vector<float>& x, Behaviour b) {
    DeviceResult out;
    std::optional<v1::TaskHeader> t = FetchTask(id, token);
    if (!t.has_value()) {
      out.last = grpc::Status(grpc::StatusCode::NOT_FOUND, "no task");
      return out;
    }
    out.header = *t;
    const v1::SecureAggregationSession& session = t->secure_aggregation();
    auto config = privacy::ConfigFromSession(session);
    EXPECT_THAT(config, IsOk());
    if (!config.ok()) return out;
    EXPECT_EQ(config->vector_length, static_cast<int64_t>(x.size()));
    auto encoder = privacy::FixedPointEncoder::Create(session.max_abs_value(), session.max_summands());
    EXPECT_THAT(encoder, IsOk());
    std::vector<uint32_t> encoded(x.size());
    EXPECT_THAT(encoder->Encode(x, absl::MakeSpan(encoded)), IsOk());
    auto client = privacy::SecAggClient::Create(*config, static_cast<uint32_t>(session.client_index()));
    EXPECT_THAT(client, IsOk());
    const int n = config->num_clients;
    auto fail = [&](const grpc::Status& s) {
      out.last = s;
      return out;
    };
    auto refused = [&](const absl::Status& s) {
      out.client_error = s;
      return out;
    };
    v1::SecAggStepResponse resp;
    // Phase 0.
    auto keys = (*client)->AdvertiseKeys();
    if (!keys.ok()) return refused(keys.status());
    if (b.short_keys) keys->c_public_key.resize(31);
    v1::SecAggStepRequest r0;
    *r0.mutable_advertise_keys() = privacy::KeysToWire(*keys);
    if (grpc::Status s = Call(id, token, *t, r0, &resp); !s.ok()) return fail(s);
    out.sent_phases = 1;
    if (b.stop_after_phase == 0) return out;
    if (grpc::Status s = Await(id, token, *t, 0, &resp); !s.ok()) return fail(s);
    auto list = privacy::KeyListFromWire(resp.keys(), n);
    if (!list.ok()) return refused(list.status());
    // Phase 1.
    auto shares = (*client)->ShareKeys(*list);
    if (!shares.ok()) return refused(shares.status());
    if (b.tamper_share_to && !shares->shares.empty()) shares->shares[0].ciphertext[40] ^= 1;
    v1::SecAggStepRequest r1;
    *r1.mutable_share_keys() = privacy::ShareKeysToWire(*shares);
    if (grpc::Status s = Call(id, token, *t, r1, &resp); !s.ok()) return fail(s);
    out.sent_phases = 2;
    if (b.stop_after_phase == 1) return out;
    if (grpc::Status s = Await(id, token, *t, 1, &resp); !s.ok()) return fail(s);
    auto mine = privacy::ShareListFromWire(resp.shares(), n);
    if (!mine.ok()) return refused(mine.status());
    // Phase 2.
    auto masked = (*client)->MaskedInput(*mine, encoded);
    if (!masked.ok()) return refused(masked.status());
    out.encoded = encoded;
    v1::SecAggStepRequest r2;
    out.masked_bytes = privacy::PackMasked(masked->masked);
    r2.mutable_masked_input()->set_masked(out.masked_bytes);
    r2.mutable_masked_input()->set_num_examples(50);
    r2.mutable_masked_input()->mutable_metrics()->set_train_loss(b.nan_metrics ? NAN : 0.5);
    r2.mutable_masked_input()->mutable_metrics()->set_train_seconds(b.nan_metrics ? -1 : 2);
    if (grpc::Status s = Call(id, token, *t, r2, &resp); !s.ok()) return fail(s);
    out.sent_phases = 3;
    if (b.masked_twice) {
      grpc::Status again = Call(id, token, *t, r2, &resp);
      EXPECT_EQ(again.error_code(), grpc::StatusCode::ALREADY_EXISTS) << again.error_message();
      EXPECT_THAT(again.error_message(), HasSubstr("already sent its masked input"));
    }
    if (b.stop_after_phase == 2) return out;
    if (grpc::Status s = Await(id, token, *t, 2, &resp); !s.ok()) return fail(s);
    auto request = privacy::UnmaskingRequestFromWire(resp.unmasking_request(), n);
    if (!request.ok()) return refused(request.status());
    // Phase 3.
    auto reveal = (*client)->Unmask(*request);
    if (!reveal.ok()) return refused(reveal.status());
    if (b.corrupt_reveal) {
      for (privacy::SecAggRevealedShare& s : reveal->shares) s.y[0] ^= 1;
    }
    v1::SecAggStepRequest r3;
    *r3.mutable_unmasking() = privacy::UnmaskingToWire(*reveal);
    if (grpc::Status s = Call(id, token, *t, r3, &resp); !s.ok()) return fail(s);
    EXPECT_TRUE(resp.done());
    out.sent_phases = 4;
    return out;
  }

  // Inputs of L2 norm 0.9 (inside the clip), one per device.
  static std::vector<std::vector<float>> Inputs(int n, int64_t m, uint64_t seed) {
    std::vector<std::vector<float>> xs(n, std::vector<float>(m));
    base::Rng rng(seed, 1);
    for (auto& x : xs) {
      double sq = 0;
      for (float& v : x) {
        v = static_cast<float>(rng.Normal());
        sq += v * v;
      }
      for (float& v : x) v = static_cast<float>(v * 0.9 / std::sqrt(sq));
    }
    return xs;
  }

  // Runs `n` devices concurrently (device i with behaviours[i], default honest).
  std::vector<DeviceResult> RunRound(const std::vector<std::pair<std::string, std::string>>& ids,
                                     const std::vector<std::vector<float>>& xs,
                                     const std::vector<Behaviour>& behaviours) {
    std::vector<DeviceResult> results(ids.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < ids.size(); ++i) {
      threads.emplace_back([&, i] {
        results[i] = RunDevice(ids[i].first, ids[i].second, xs[i],
                               i < behaviours.size() ? behaviours[i] : Behaviour{});
      });
    }
    for (std::thread& t : threads) t.join();
    return results;
  }

  // Waits until the job has `rounds` completed rounds (or 30 s).
  v1::JobStatus WaitRounds(const std::string& job, int64_t rounds) {
    v1::JobStatus st;
    for (int i = 0; i < 1500; ++i) {
      auto s = coordinator_->GetJob(job);
      EXPECT_THAT(s, IsOk());
      st = *s;
      if (st.completed_rounds() >= rounds) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return st;
  }

  v1::RoundMetrics LastRound(const std::string& job) {
    auto rounds = coordinator_->ListRounds(job);
    EXPECT_THAT(rounds, IsOk());
    for (auto it = rounds->rbegin(); it != rounds->rend(); ++it) {
      if (it->state() == v1::ROUND_STATE_COMPLETED) return it->metrics();
    }
    ADD_FAILURE() << "no completed round";
    return {};
  }

  // Pearson's chi-square statistic of the bytes' 4-bit halves against the uniform
  // distribution over 16 values (15 degrees of freedom).
  static double NibbleChiSquare(const std::string& bytes) {
    std::vector<double> counts(16, 0);
    for (unsigned char c : bytes) {
      ++counts[c & 15];
      ++counts[c >> 4];
    }
    const double expected = 2.0 * static_cast<double>(bytes.size()) / 16;
    double chi = 0;
    for (double c : counts) chi += (c - expected) * (c - expected) / expected;
    return chi;
  }

  static std::string PlainSumDigest(const std::vector<DeviceResult>& results,
                                    const std::vector<size_t>& members) {
    std::vector<uint32_t> sum(results[members[0]].encoded.size(), 0);
    for (size_t i : members) privacy::FixedPointEncoder::AddInPlace(absl::MakeSpan(sum), results[i].encoded);
    return privacy::SumDigest(sum);
  }

  std::string dir_;
  std::unique_ptr<server::Store> store_;
  std::unique_ptr<server::Coordinator> coordinator_;
  std::unique_ptr<server::GrpcCoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

constexpr int64_t kParams = 8 * 16 + 16 + 16 * 3 + 3;

TEST_F(GrpcSecAggTest, ReleasedSumIsThePlainFixedPointSumAndMovesTheModelByTheMean) {
  Start();
  std::vector<std::pair<std::string, std::string>> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Enroll());
  const std::string job = StartJob(JobText(5, 3));
  auto before = coordinator_->ExportModel(job);
  ASSERT_THAT(before, IsOk());
  const auto xs = Inputs(5, kParams, 7);
  std::vector<Behaviour> b(5);
  b[2].nan_metrics = true;
  std::vector<DeviceResult> r = RunRound(ids, xs, b);
  for (const DeviceResult& d : r) {
    EXPECT_TRUE(d.last.ok()) << d.last.error_message();
    EXPECT_EQ(d.sent_phases, 4);
    EXPECT_FALSE(d.header.secure_aggregation().secagg_plus());
  }
  ASSERT_EQ(WaitRounds(job, 1).completed_rounds(), 1);
  const v1::RoundMetrics m = LastRound(job);
  const v1::SecureAggregationRoundMetrics& sa = m.secure_aggregation();
  EXPECT_EQ(sa.advertised(), 5);
  EXPECT_EQ(sa.masked(), 5);
  EXPECT_EQ(sa.unmasked_by(), 5);
  EXPECT_EQ(sa.num_neighbors(), 4);
  EXPECT_EQ(m.participants(), 5);
  EXPECT_EQ(sa.sum_digest(), PlainSumDigest(r, {0, 1, 2, 3, 4}));
  // Device 2 reported a NaN loss and negative seconds: recorded as 0, the round's means stay
  // finite.
  EXPECT_TRUE(std::isfinite(m.train_loss())) << m.train_loss();
  EXPECT_TRUE(std::isfinite(m.mean_client_seconds())) << m.mean_client_seconds();
  // What the coordinator holds for one device looks uniform (chi-square under 57.4, the
  // critical value at p = 1e-6 of 15 degrees of freedom, so that the test is not flaky) and
  // is not its clear update, whose fixed-point bytes are far from uniform.
  for (const DeviceResult& d : r) {
    ASSERT_EQ(d.masked_bytes.size(), 4 * d.encoded.size());
    EXPECT_LT(NibbleChiSquare(d.masked_bytes), 57.4);
    const std::string clear = privacy::PackMasked(d.encoded);
    EXPECT_NE(d.masked_bytes, clear);
    EXPECT_GT(NibbleChiSquare(clear), 200);
  }
  // The released mean is the mean of the inputs to within the fixed-point resolution.
  auto after = coordinator_->ExportModel(job);
  ASSERT_THAT(after, IsOk());
  int64_t k = 0;
  double worst = 0;
  for (int p = 0; p < after->parameters_size(); ++p) {
    for (int i = 0; i < after->parameters(p).values_size(); ++i, ++k) {
      double mean = 0;
      for (const auto& x : xs) mean += x[k] / 5.0;
      worst = std::max(worst, std::abs(after->parameters(p).values(i) -
                                       before->parameters(p).values(i) - mean));
    }
  }
  EXPECT_EQ(k, kParams);
  EXPECT_LT(worst, 1e-5);
}

// 30% of the devices drop after sending their masked input: their inputs are in the sum, and
// the others' shares still remove every mask. SecAgg (complete graph) and SecAgg+ (k = 6).
class GrpcSecAggDropoutTest : public GrpcSecAggTest,
                              public ::testing::WithParamInterface<bool> {};

TEST_P(GrpcSecAggDropoutTest, ThirtyPercentDropAfterMaskedInputSumStillExact) {
  const bool plus = GetParam();
  Start();
  std::vector<std::pair<std::string, std::string>> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(Enroll());
  const std::string job = StartJob(JobText(
      10, 5,
      plus ? "secure_aggregation_plus: true secure_aggregation_neighbors: 6 "
             "secure_aggregation_share_threshold: 3"
           : ""));
  std::vector<Behaviour> b(10);
  for (int i : {1, 4, 8}) b[i].stop_after_phase = 2;
  std::vector<DeviceResult> r = RunRound(ids, Inputs(10, kParams, 11), b);
  for (const DeviceResult& d : r) {
    EXPECT_TRUE(d.last.ok()) << d.last.error_message();
    EXPECT_THAT(d.client_error, IsOk());
    EXPECT_EQ(d.header.secure_aggregation().secagg_plus(), plus);
  }
  ASSERT_EQ(WaitRounds(job, 1).completed_rounds(), 1);
  const v1::RoundMetrics m = LastRound(job);
  const v1::SecureAggregationRoundMetrics& sa = m.secure_aggregation();
  EXPECT_EQ(sa.plus(), plus);
  EXPECT_EQ(sa.num_neighbors(), plus ? 6 : 9);
  EXPECT_EQ(sa.masked(), 10);
  EXPECT_EQ(sa.unmasked_by(), 7);
  EXPECT_EQ(m.participants(), 10);
  EXPECT_EQ(sa.sum_digest(), PlainSumDigest(r, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

INSTANTIATE_TEST_SUITE_P(SecAggAndPlus, GrpcSecAggDropoutTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "SecAggPlus" : "SecAgg"; });

// Two of four devices vanish after sending their keys: the shares phase has 2 < t = 3
// senders, the round fails with nothing released, and the job goes on: the retry (with two
// new devices) completes round 1.
TEST_F(GrpcSecAggTest, FewerThanThresholdFailsCleanlyAndTheJobGoesOn) {
  Start();
  std::vector<std::pair<std::string, std::string>> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(Enroll());
  const std::string job = StartJob(JobText(4, 3));
  auto before = coordinator_->ExportModel(job);
  ASSERT_THAT(before, IsOk());
  std::vector<Behaviour> b(4);
  b[0].stop_after_phase = 0;
  b[1].stop_after_phase = 0;
  std::vector<DeviceResult> r = RunRound(ids, Inputs(4, kParams, 3), b);
  // The survivors are told the round's protocol failed (or that the round is gone).
  for (int i : {2, 3}) {
    EXPECT_FALSE(r[i].last.ok());
    EXPECT_EQ(r[i].sent_phases, 2);
    EXPECT_TRUE(r[i].last.error_code() == grpc::StatusCode::ABORTED ||
                r[i].last.error_code() == grpc::StatusCode::FAILED_PRECONDITION)
        << r[i].last.error_message();
  }
  auto rounds = coordinator_->ListRounds(job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_FALSE(rounds->empty());
  EXPECT_EQ(rounds->back().state(), v1::ROUND_STATE_FAILED);
  auto unchanged = coordinator_->ExportModel(job);
  ASSERT_THAT(unchanged, IsOk());
  EXPECT_EQ(unchanged->SerializeAsString(), before->SerializeAsString());
  // The job goes on: two new devices join the two that stayed.
  std::vector<std::pair<std::string, std::string>> next = {ids[2], ids[3], Enroll(), Enroll()};
  std::vector<DeviceResult> r2 = RunRound(next, Inputs(4, kParams, 5), {});
  for (const DeviceResult& d : r2) EXPECT_TRUE(d.last.ok()) << d.last.error_message();
  ASSERT_EQ(WaitRounds(job, 1).completed_rounds(), 1);
  EXPECT_EQ(LastRound(job).secure_aggregation().sum_digest(), PlainSumDigest(r2, {0, 1, 2, 3}));
}

// Bad messages: keys of the wrong length (dropped, INVALID_ARGUMENT), a share tampered on
// the way (its recipient cannot decrypt it, aborts and drops out), a masked input sent twice
// (ALREADY_EXISTS, the first counts), a replay after the round (FAILED_PRECONDITION). The
// round completes with the honest devices' exact sum and the coordinator serves the next.
TEST_F(GrpcSecAggTest, BadMessagesGiveClearErrorsAndTheSumIsStillExact) {
  Start();
  std::vector<std::pair<std::string, std::string>> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(Enroll());
  const std::string job = StartJob(JobText(6, 3, "", /*rounds=*/2));
  std::vector<Behaviour> b(6);
  b[0].short_keys = true;
  b[1].tamper_share_to = true;  // device 1's first share (to the lowest other index) is bad
  b[2].masked_twice = true;
  std::vector<DeviceResult> r = RunRound(ids, Inputs(6, kParams, 13), b);
  EXPECT_EQ(r[0].last.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(r[0].last.error_message(), HasSubstr("key"));
  // Exactly one honest device holds the tampered share and refuses it (DATA_LOSS).
  int refused = 0;
  std::vector<size_t> in_sum;
  for (size_t i = 0; i < r.size(); ++i) {
    if (r[i].client_error.code() == absl::StatusCode::kDataLoss) ++refused;
    if (r[i].sent_phases >= 3) in_sum.push_back(i);
  }
  EXPECT_EQ(refused, 1);
  EXPECT_EQ(in_sum.size(), 4u);
  ASSERT_EQ(WaitRounds(job, 1).completed_rounds(), 1);
  const v1::RoundMetrics m = LastRound(job);
  EXPECT_EQ(m.secure_aggregation().masked(), 4);
  EXPECT_EQ(m.rejected(), 1);
  EXPECT_EQ(m.secure_aggregation().sum_digest(), PlainSumDigest(r, in_sum));
  // A replayed keys message for the finished round.
  v1::SecAggStepRequest replay;
  replay.mutable_advertise_keys()->set_c_public_key(std::string(32, 'x'));
  replay.mutable_advertise_keys()->set_s_public_key(std::string(32, 'y'));
  v1::SecAggStepResponse resp;
  grpc::Status s = Call(ids[3].first, ids[3].second, r[3].header, replay, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  // The coordinator is unharmed: round 2 completes with honest devices (the one that
  // aborted went silent, so it may no longer be live and then is not sampled).
  std::vector<DeviceResult> r2 = RunRound(ids, Inputs(6, kParams, 17), {});
  std::vector<size_t> in_sum2;
  for (size_t i = 0; i < r2.size(); ++i) {
    if (r2[i].sent_phases == 4) {
      in_sum2.push_back(i);
    } else {
      EXPECT_EQ(r2[i].last.error_message(), "no task");
    }
  }
  EXPECT_GE(in_sum2.size(), 5u);
  ASSERT_EQ(WaitRounds(job, 2).completed_rounds(), 2);
  EXPECT_EQ(LastRound(job).secure_aggregation().sum_digest(), PlainSumDigest(r2, in_sum2));
}

// A device reveals shares that do not reconstruct: the coordinator checks every reconstructed
// secret against its commitment or public key, and when a bad share was among those it used,
// finds it with a spare and names the device; either way the sum is exact.
TEST_F(GrpcSecAggTest, AShareThatDoesNotReconstructIsFoundAndTheSumIsStillExact) {
  Start();
  std::vector<std::pair<std::string, std::string>> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Enroll());
  const std::string job = StartJob(JobText(5, 3));
  std::vector<Behaviour> b(5);
  b[2].corrupt_reveal = true;  // every share it reveals
  std::vector<DeviceResult> r = RunRound(ids, Inputs(5, kParams, 19), b);
  for (const DeviceResult& d : r) EXPECT_TRUE(d.last.ok()) << d.last.error_message();
  ASSERT_EQ(WaitRounds(job, 1).completed_rounds(), 1);
  const v1::SecureAggregationRoundMetrics sa = LastRound(job).secure_aggregation();
  EXPECT_EQ(sa.sum_digest(), PlainSumDigest(r, {0, 1, 2, 3, 4}));
  ASSERT_LE(sa.misbehaving_clients_size(), 1);
  if (sa.misbehaving_clients_size() == 1) {
    EXPECT_EQ(sa.misbehaving_clients(0), ids[2].first);
  }
}

TEST_F(GrpcSecAggTest, PlainUploadsAndUnsupportedCombinationsAreRefused) {
  Start();
  // Secure aggregation needs a clip norm (it bounds the fixed-point encoding).
  v1::JobConfig config;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      absl::StrCat("name: \"x\" ", kTinyMlp,
                   " rounds: 1 selection { clients_per_round: 3 } round_policy { quorum: 3 } "
                   "privacy { secure_aggregation_threshold: 3 }"),
      &config));
  auto refused = coordinator_->StartJob(config);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("clip_norm"));
  // A device of a secure round cannot send its update in the clear.
  std::vector<std::pair<std::string, std::string>> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(Enroll());
  const std::string job = StartJob(JobText(3, 3));
  std::optional<v1::TaskHeader> t = FetchTask(ids[0].first, ids[0].second);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->secure_aggregation().num_participants(), 3);
  EXPECT_EQ(t->secure_aggregation().vector_length(), kParams);
  v1::UpdateHeader h;
  h.set_client_id(ids[0].first);
  h.set_session_token(ids[0].second);
  h.set_job_id(t->job_id());
  h.set_round(t->round());
  h.set_task_id(t->task_id());
  h.set_num_examples(50);
  aggregation::Update u;
  u.weight = 50;
  auto s = coordinator_->SubmitUpdate(h, u, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("SecureAggregationStep"));
}

}  // namespace
}  // namespace fedge

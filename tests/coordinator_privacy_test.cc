// Central DP-FedAvg in the coordinator, transport-free: clipping enforced on
// arrival, devices clipping before upload, unweighted sums with Gaussian noise of the right
// scale, ε from the RDP accountant in every round's metrics, and the job's ε budget.
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "client/local_trainer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/zoo.h"
#include "privacy/rdp_accountant.h"
#include "server/coordinator.h"
#include "server/model_weights.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"
#include "tests/update_header.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kToken[] = "enroll-me";

// The tests' separable synthetic problem (tests/synthetic_data.h).
data::Dataset MakeData(int n, int features, uint64_t seed) {
  return ::fedge::testing::SeparableData(n, features, 3, seed);
}

v1::JobConfig DpJob(int rounds, int per_round, double clip, double z) {
  v1::JobConfig job;
  job.set_name("dp");
  *job.mutable_model_spec() = model::MlpSpec({32, 64, 3}, "dp-mlp");
  job.set_rounds(rounds);
  job.mutable_selection()->set_clients_per_round(per_round);
  job.mutable_round_policy()->set_quorum(1);
  job.mutable_local_training()->set_batch_size(16);
  job.mutable_local_training()->set_learning_rate(0.1);
  job.mutable_privacy()->set_clip_norm(clip);
  job.mutable_privacy()->set_noise_multiplier(z);
  job.mutable_privacy()->set_delta(1e-5);
  return job;
}

struct Device {
  std::string id, token;
  data::Dataset data;
};

class CoordinatorPrivacyTest : public ::testing::Test {
 protected:
  void SetUp() override { eval_ = std::make_shared<const data::Dataset>(MakeData(200, 32, 99)); }

  std::unique_ptr<Coordinator> Make() {
    CoordinatorOptions o;
    o.clock = &clock_;
    o.enrollment_token = kToken;
    o.evaluation_data = eval_;
    auto c = Coordinator::Create(o, nullptr);
    EXPECT_THAT(c, IsOk());
    return std::move(c).value();
  }

  std::vector<Device> Enroll(Coordinator& c, int n, int examples = 64) {
    std::vector<Device> out;
    for (int i = 0; i < n; ++i) {
      v1::RegisterRequest r;
      r.set_enrollment_token(kToken);
      r.mutable_profile()->set_num_examples(examples);
      auto resp = c.Register(r);
      EXPECT_THAT(resp, IsOk());
      out.push_back({resp->client_id(), resp->session_token(), MakeData(examples, 32, 100 + i)});
    }
    return out;
  }

  static v1::UpdateHeader HeaderFor(const Device& d, const TaskAssignment& t, int64_t n) {
    return ::fedge::testing::UpdateHeaderFor(d.id, d.token, t.header, n);
  }

  // Δ = `value` in every coordinate.
  static aggregation::Update Constant(const Device& d, const TaskAssignment& t, int64_t n,
                                      float value) {
    v1::ModelProto delta = *t.model;
    for (v1::TensorProto& p : *delta.mutable_parameters()) {
      for (float& v : *p.mutable_values()) v = value;
    }
    return UpdateFromDeltaProto(d.id, static_cast<double>(n), delta);
  }

  base::ManualClock clock_;
  std::shared_ptr<const data::Dataset> eval_;
};

TEST_F(CoordinatorPrivacyTest, UpdatesOverTheClipNormAreRefusedAndDevicesClip) {
  auto c = Make();
  std::vector<Device> d = Enroll(*c, 2);
  auto job = c->StartJob(DpJob(1, 2, /*clip=*/0.5, /*z=*/0.0));
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto t0 = c->FetchTask(d[0].id, d[0].token);
  ASSERT_THAT(t0, IsOk());
  ASSERT_TRUE(t0->has_value());
  EXPECT_DOUBLE_EQ((*t0)->header.privacy().clip_norm(), 0.5);
  // 0.1 in each of the model's ~2.3k coordinates: a norm far over 0.5.
  EXPECT_THAT(c->SubmitUpdate(HeaderFor(d[0], **t0, 64), Constant(d[0], **t0, 64, 0.1f), 10),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("L2 norm"), HasSubstr("clip_norm 0.5"))));
  // A device trains with the task's options: it clips to 0.5 before uploading.
  auto t1 = c->FetchTask(d[1].id, d[1].token);
  ASSERT_THAT(t1, IsOk());
  auto options = client::OptionsFromTask((*t1)->header, 1);
  ASSERT_THAT(options, IsOk());
  EXPECT_DOUBLE_EQ(options->clip_norm, 0.5);
  options->learning_rate = 0.5f;  // move far: the update must need clipping
  auto u = client::TrainLocally(*(*t1)->model, d[1].data, *options);
  ASSERT_THAT(u, IsOk());
  EXPECT_GT(u->delta_norm, 0.5);
  double sq = 0;
  for (const v1::TensorProto& p : u->delta.parameters()) {
    for (float v : p.values()) sq += static_cast<double>(v) * v;
  }
  EXPECT_NEAR(std::sqrt(sq), 0.5, 1e-4);
  EXPECT_THAT(c->SubmitUpdate(HeaderFor(d[1], **t1, u->num_examples),
                              UpdateFromDeltaProto(d[1].id, u->num_examples, u->delta), 10),
              IsOk());
}

// Every participant counts once (not by its examples), and the sum gets N(0, (zS)²): the
// mean of m zero updates moves each coordinate by N(0, (zS/m)²).
TEST_F(CoordinatorPrivacyTest, CentralNoiseHasStddevZSOverParticipantsAndEpsilonIsAccounted) {
  auto c = Make();
  std::vector<Device> d = Enroll(*c, 8);
  const double clip = 2.0, z = 1.5;
  auto job = c->StartJob(DpJob(1, 4, clip, z));
  ASSERT_THAT(job, IsOk());
  auto before = c->ExportModel(*job);
  ASSERT_THAT(before, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  int sent = 0;
  for (const Device& dev : d) {
    auto t = c->FetchTask(dev.id, dev.token);
    ASSERT_THAT(t, IsOk());
    if (!t->has_value()) continue;
    ASSERT_THAT(c->SubmitUpdate(HeaderFor(dev, **t, 64), Constant(dev, **t, 64, 0.0f), 10), IsOk());
    ++sent;
  }
  ASSERT_EQ(sent, 4);
  ASSERT_THAT(c->Tick(), IsOk());
  auto after = c->ExportModel(*job);
  ASSERT_THAT(after, IsOk());
  double sum = 0, sq = 0;
  int64_t n = 0;
  for (int i = 0; i < after->parameters_size(); ++i) {
    for (int k = 0; k < after->parameters(i).values_size(); ++k) {
      const double diff = after->parameters(i).values(k) - before->parameters(i).values(k);
      sum += diff;
      sq += diff * diff;
      ++n;
    }
  }
  const double mean = sum / n, stddev = std::sqrt(sq / n - mean * mean);
  const double want = z * clip / 4;  // 0.75
  EXPECT_NEAR(stddev, want, 0.05 * want) << n << " coordinates";
  EXPECT_NEAR(mean, 0.0, 4 * want / std::sqrt(static_cast<double>(n)));
  auto rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 1u);
  const v1::RoundMetrics& m = rounds->front().metrics();
  EXPECT_DOUBLE_EQ(m.dp_sampling_rate(), 4.0 / 8.0);
  EXPECT_DOUBLE_EQ(m.dp_noise_multiplier(), z);
  privacy::RdpAccountant want_eps;
  ASSERT_THAT(want_eps.Compose(0.5, z), IsOk());
  auto e = want_eps.Epsilon(1e-5);
  ASSERT_THAT(e, IsOk());
  EXPECT_GT(m.epsilon(), 0.0);
  EXPECT_DOUBLE_EQ(m.epsilon(), e->epsilon);
}

TEST_F(CoordinatorPrivacyTest, ParticipantsCountOnceWhateverTheirExamples) {
  auto c = Make();
  std::vector<Device> d = Enroll(*c, 2, /*examples=*/300);
  auto job = c->StartJob(DpJob(1, 2, /*clip=*/100.0, /*z=*/1e-9));
  ASSERT_THAT(job, IsOk());
  auto before = c->ExportModel(*job);
  ASSERT_THAT(c->Tick(), IsOk());
  const int64_t examples[] = {300, 100};
  const float values[] = {0.01f, 0.03f};
  for (int i = 0; i < 2; ++i) {
    auto t = c->FetchTask(d[i].id, d[i].token);
    ASSERT_THAT(t, IsOk());
    ASSERT_THAT(c->SubmitUpdate(HeaderFor(d[i], **t, examples[i]),
                                Constant(d[i], **t, examples[i], values[i]), 10),
                IsOk());
  }
  ASSERT_THAT(c->Tick(), IsOk());
  auto after = c->ExportModel(*job);
  ASSERT_THAT(after, IsOk());
  // (0.01 + 0.03) / 2 = 0.02, not the example-weighted 0.015.
  for (int k = 0; k < 10; ++k) {
    EXPECT_NEAR(after->parameters(0).values(k) - before->parameters(0).values(k), 0.02f, 1e-6f);
  }
}

TEST_F(CoordinatorPrivacyTest, JobStopsCleanlyBeforeTheRoundThatWouldExceedTheBudget) {
  auto c = Make();
  std::vector<Device> d = Enroll(*c, 4);
  v1::JobConfig cfg = DpJob(10, 4, 1.0, 1.0);
  // q = 1, z = 1: ε after 1, 2, 3 rounds at δ 1e-5.
  std::vector<double> eps;
  privacy::RdpAccountant acc;
  for (int r = 0; r < 3; ++r) {
    ASSERT_THAT(acc.Compose(1.0, 1.0), IsOk());
    eps.push_back(acc.Epsilon(1e-5)->epsilon);
  }
  cfg.mutable_privacy()->set_epsilon_budget((eps[1] + eps[2]) / 2);  // room for 2 rounds
  auto job = c->StartJob(cfg);
  ASSERT_THAT(job, IsOk());
  for (int step = 0; step < 20 && c->running_job().has_value(); ++step) {
    ASSERT_THAT(c->Tick(), IsOk());
    for (const Device& dev : d) {
      auto t = c->FetchTask(dev.id, dev.token);
      ASSERT_THAT(t, IsOk());
      if (t->has_value()) {
        ASSERT_THAT(c->SubmitUpdate(HeaderFor(dev, **t, 64), Constant(dev, **t, 64, 0.0f), 10),
                    IsOk());
      }
    }
  }
  EXPECT_FALSE(c->running_job().has_value());
  auto status = c->GetJob(*job);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->state(), v1::JOB_STATE_FINISHED);
  EXPECT_EQ(status->completed_rounds(), 2);
  EXPECT_THAT(status->message(), HasSubstr("privacy budget"));
  auto rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 2u);
  EXPECT_NEAR(rounds->back().metrics().epsilon(), eps[1], 1e-9);
}

TEST_F(CoordinatorPrivacyTest, SecureAggregationOrDpWithTiersAreRefusedForNow) {
  auto c = Make();
  v1::JobConfig secagg = DpJob(1, 4, 1.0, 1.0);
  secagg.mutable_round_policy()->set_quorum(2);
  secagg.mutable_privacy()->set_secure_aggregation_threshold(2);
  secagg.mutable_privacy()->set_noise_multiplier(0);
  v1::SubModelTier* half = secagg.mutable_sub_models()->add_tiers();
  half->set_name("half");
  half->set_width_ratio(0.5);
  EXPECT_THAT(c->StartJob(secagg), StatusIs(absl::StatusCode::kUnimplemented,
                                            HasSubstr("secure aggregation with sub_models tiers")));
  v1::JobConfig tiers = DpJob(1, 4, 1.0, 1.0);
  v1::SubModelTier* t = tiers.mutable_sub_models()->add_tiers();
  t->set_name("half");
  t->set_width_ratio(0.5);
  EXPECT_THAT(c->StartJob(tiers), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("tiers")));
}

// Adaptive clipping (Andrew et al. 2021), central mode: the clip norm moves by
// exp(−η·(b̄ − γ)) after every round, b̄ the noised fraction of unclipped updates; the next
// round's tasks carry it and updates over it are refused.
TEST_F(CoordinatorPrivacyTest, AdaptiveClippingMovesTheClipNormTowardTheQuantile) {
  auto c = Make();
  std::vector<Device> d = Enroll(*c, 4);
  v1::JobConfig config = DpJob(2, 4, /*clip=*/1.0, /*z=*/0.5);
  config.mutable_privacy()->mutable_adaptive_clipping()->set_count_noise_stddev(0.3);
  auto job = c->StartJob(config);
  ASSERT_THAT(job, IsOk());
  auto run_round = [&](double reported_norm, float value, int expect_accepted) {
    ASSERT_THAT(c->Tick(), IsOk());
    int accepted = 0;
    for (const Device& dev : d) {
      auto t = c->FetchTask(dev.id, dev.token);
      ASSERT_THAT(t, IsOk());
      if (!t->has_value()) continue;  // dropped from the round already
      v1::UpdateHeader h = HeaderFor(dev, **t, 64);
      h.mutable_metrics()->set_update_norm(reported_norm);
      if (c->SubmitUpdate(h, Constant(dev, **t, 64, value), 10).ok()) ++accepted;
    }
    EXPECT_EQ(accepted, expect_accepted);
    ASSERT_THAT(c->Tick(), IsOk());
  };
  // Round 1: every update is within C = 1 (b̄ ≈ 1 > γ = 0.5): C shrinks.
  run_round(0.1, 0.0f, 4);
  auto rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 1u);
  const v1::RoundMetrics m1 = rounds->back().metrics();
  EXPECT_DOUBLE_EQ(m1.dp_clip_norm(), 1.0);
  EXPECT_NEAR(m1.dp_unclipped_fraction(), 1.0, 5 * 0.3 / 4);  // σ_b / m, 5 standard errors
  const double c2 = std::exp(-0.2 * (m1.dp_unclipped_fraction() - 0.5));
  EXPECT_DOUBLE_EQ(m1.dp_next_clip_norm(), c2);
  EXPECT_LT(c2, 0.96);
  // Round 2 runs at C = c2: an update of norm 0.97 (over c2, under the initial 1) is refused;
  // the task says c2.
  ASSERT_THAT(c->Tick(), IsOk());
  auto t = c->FetchTask(d[0].id, d[0].token);
  ASSERT_THAT(t, IsOk());
  ASSERT_TRUE(t->has_value());
  EXPECT_DOUBLE_EQ((*t)->header.privacy().clip_norm(), c2);
  const float over = static_cast<float>(0.97 / std::sqrt(32 * 64 + 64 + 64 * 3 + 3));
  EXPECT_THAT(c->SubmitUpdate(HeaderFor(d[0], **t, 64), Constant(d[0], **t, 64, over), 10),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("clip_norm")));
  // The other three send updates they clipped to C (they arrive at norm C) and report a
  // norm of 0, which the coordinator does not take: measured, none was within C (b̄ ≈ 0 <
  // γ), so C grows again.
  const float at_c2 = static_cast<float>(c2 / std::sqrt(32 * 64 + 64 + 64 * 3 + 3));
  run_round(0.0, at_c2, 3);
  rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  const v1::RoundMetrics m2 = rounds->back().metrics();
  EXPECT_DOUBLE_EQ(m2.dp_clip_norm(), c2);
  EXPECT_NEAR(m2.dp_unclipped_fraction(), 0.0, 5 * 0.3 / 3);
  EXPECT_DOUBLE_EQ(m2.dp_next_clip_norm(), c2 * std::exp(-0.2 * (m2.dp_unclipped_fraction() - 0.5)));
  EXPECT_GT(m2.dp_next_clip_norm(), c2);
}

TEST_F(CoordinatorPrivacyTest, AdaptiveClippingNeedsACountNoiseOverHalfZ) {
  auto c = Make();
  v1::JobConfig config = DpJob(1, 4, 1.0, 1.0);
  config.mutable_privacy()->mutable_adaptive_clipping()->set_count_noise_stddev(0.4);
  EXPECT_THAT(c->StartJob(config), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("count_noise_stddev")));
  config.mutable_privacy()->set_noise_multiplier(0);
  EXPECT_THAT(c->StartJob(config), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("noise_multiplier")));
}

}  // namespace
}  // namespace fedge::server

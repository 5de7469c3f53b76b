// Hostile updates against the coordinator's defaults (docs/security.md): one device of nine
// claims the largest weight it may (what it registered) and sends Δ = −1000·w, or values of
// 1e30, from round 1 on. The committed model stays close to the one the same fleet reaches
// when that device is honest, with the default weight caps and adaptive norm bound, and
// with each robust rule.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "client/local_trainer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/sequential.h"
#include "model/trainer.h"
#include "model/zoo.h"
#include "server/coordinator.h"
#include "server/model_weights.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"
#include "tests/update_header.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;

constexpr char kToken[] = "enroll-me";
constexpr int kHonest = 8;
constexpr int64_t kHostileClaim = 100000;  // what the hostile device registers, and claims

enum class Attack { kNone, kFlipTimes1000, kHuge };

v1::JobConfig MakeJob(v1::RobustnessConfig::AggregationRule rule) {
  v1::JobConfig job;
  job.set_name("hostile");
  *job.mutable_model_spec() = model::MlpSpec({8, 16, 3}, "tiny");
  job.set_rounds(4);
  job.mutable_selection()->set_clients_per_round(kHonest + 1);
  job.mutable_round_policy()->set_quorum(kHonest + 1);
  job.mutable_local_training()->set_epochs(2);
  job.mutable_local_training()->set_batch_size(16);
  job.mutable_local_training()->set_learning_rate(0.1);
  job.mutable_robustness()->set_aggregation_rule(rule);
  // β ≥ f/n: 0.2 of 9 trims one value at each end (the default 0.1 trims none of 9).
  if (rule == v1::RobustnessConfig::AGGREGATION_RULE_TRIMMED_MEAN) {
    job.mutable_robustness()->set_trim_fraction(0.2);
  }
  return job;
}

struct JobRun {
  v1::ModelProto model;
  std::vector<v1::RoundRecord> rounds;
};

class CoordinatorRobustnessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    eval_ = std::make_shared<const data::Dataset>(::fedge::testing::SeparableData(600, 8, 3, 99));
  }

  // Nine devices of 100 examples; the last is hostile unless `attack` is kNone (then it
  // registers 100 examples and trains like the others).
  // The hostile device sends first when `hostile_first`, else last.
  JobRun RunJob(Attack attack, v1::RobustnessConfig::AggregationRule rule =
                                   v1::RobustnessConfig::AGGREGATION_RULE_WEIGHTED_MEAN,
                bool hostile_first = false) {
    base::ManualClock clock;
    CoordinatorOptions o;
    o.clock = &clock;
    o.enrollment_token = kToken;
    o.evaluation_data = eval_;
    auto c = std::move(Coordinator::Create(o, nullptr)).value();
    struct Device {
      std::string id, token;
      data::Dataset data;
      bool hostile;
    };
    std::vector<Device> devices;
    for (int i = 0; i <= kHonest; ++i) {
      const bool hostile = i == kHonest && attack != Attack::kNone;
      v1::RegisterRequest r;
      r.set_enrollment_token(kToken);
      r.mutable_profile()->set_num_examples(hostile ? kHostileClaim : 100);
      auto resp = c->Register(r);
      EXPECT_THAT(resp, IsOk());
      devices.push_back({resp->client_id(), resp->session_token(),
                         ::fedge::testing::SeparableData(100, 8, 3, 1000 + i), hostile});
    }
    if (hostile_first) std::reverse(devices.begin(), devices.end());
    auto job = c->StartJob(MakeJob(rule));
    EXPECT_THAT(job, IsOk());
    for (int step = 0; step < 20 && c->running_job().has_value(); ++step) {
      EXPECT_THAT(c->Tick(), IsOk());
      for (const Device& d : devices) {
        auto task = c->FetchTask(d.id, d.token);
        if (!task.ok() || !task->has_value()) continue;
        const TaskAssignment& t = **task;
        if (d.hostile) {
          aggregation::Update u = UpdateFromDeltaProto(d.id, kHostileClaim, *t.model);
          for (aggregation::Tensor& x : u.tensors) {
            for (float& v : x.values) v = attack == Attack::kHuge ? 1e30f : -1000 * v;
          }
          EXPECT_THAT(c->SubmitUpdate(::fedge::testing::UpdateHeaderFor(d.id, d.token, t.header,
                                                                       kHostileClaim),
                                      u, 10),
                      IsOk());
          continue;
        }
        client::LocalTrainingOptions lo;
        lo.epochs = t.header.training().epochs();
        lo.batch_size = t.header.training().batch_size();
        lo.learning_rate = static_cast<float>(t.header.training().learning_rate());
        auto update = client::TrainLocally(*t.model, d.data, lo);
        EXPECT_THAT(update, IsOk());
        EXPECT_THAT(c->SubmitUpdate(
                        ::fedge::testing::UpdateHeaderFor(d.id, d.token, t.header, 100),
                        UpdateFromDeltaProto(d.id, 100, update->delta), 10),
                    IsOk());
      }
      EXPECT_THAT(c->Tick(), IsOk());
    }
    JobRun run;
    run.model = *c->ExportModel(*job);
    run.rounds = *c->ListRounds(*job);
    EXPECT_EQ(run.rounds.size(), 4u);
    return run;
  }

  double Accuracy(const v1::ModelProto& m) {
    auto net = std::move(model::Sequential::FromProto(m)).value();
    return model::Evaluate(*net, *eval_, model::ComputeMode::kFp32).accuracy;
  }

  // ‖a − b‖ / ‖b‖ over every parameter.
  static double RelativeDistance(const v1::ModelProto& a, const v1::ModelProto& b) {
    double d = 0, n = 0;
    for (int i = 0; i < b.parameters_size(); ++i) {
      for (int k = 0; k < b.parameters(i).values_size(); ++k) {
        const double x = a.parameters(i).values(k), y = b.parameters(i).values(k);
        d += (x - y) * (x - y);
        n += y * y;
      }
    }
    return std::sqrt(d / n);
  }

  std::shared_ptr<const data::Dataset> eval_;
};

TEST_F(CoordinatorRobustnessTest, OneHostileDeviceBarelyMovesTheModelWithDefaults) {
  const JobRun honest = RunJob(Attack::kNone);
  const double honest_accuracy = Accuracy(honest.model);
  EXPECT_GT(honest_accuracy, 0.85);
  for (const v1::RoundRecord& r : honest.rounds) {
    EXPECT_EQ(r.metrics().participants() + r.metrics().robustness().excluded(), kHonest + 1);
  }
  for (Attack attack : {Attack::kFlipTimes1000, Attack::kHuge}) {
    const JobRun hostile = RunJob(attack);
    const double distance = RelativeDistance(hostile.model, honest.model);
    const double accuracy = Accuracy(hostile.model);
    RecordProperty(attack == Attack::kHuge ? "huge_distance" : "flip_distance",
                   std::to_string(distance));
    EXPECT_LT(distance, 0.6) << static_cast<int>(attack);  // unbounded: > 1e20
    EXPECT_GT(accuracy, honest_accuracy - 0.05) << static_cast<int>(attack);
    for (const v1::RoundRecord& r : hostile.rounds) {
      const v1::RobustnessRoundMetrics& m = r.metrics().robustness();
      // Bounded, then the direction check: −1000·w points against the round once the model
      // has learned (at the random initial model it is about orthogonal to the round).
      EXPECT_EQ(r.metrics().participants() + m.excluded(), kHonest + 1);
      EXPECT_EQ(r.metrics().rejected(), m.excluded());
      if (attack == Attack::kFlipTimes1000 && r.round() > 1) {
        // The hostile update is among the excluded (an honest one near convergence, where
        // updates are mostly noise, may be too): its claimed examples left the counts.
        EXPECT_GE(m.excluded(), 1) << "round " << r.round();
        EXPECT_LT(r.metrics().examples(), kHostileClaim) << "round " << r.round();
      }
      EXPECT_EQ(m.clipped(), 1) << "round " << r.round();
      EXPECT_EQ(m.weight_capped(), 1);
      EXPECT_EQ(m.weight_cap(), 200);  // 2 × the median weight, 100
      EXPECT_GT(m.norm_bound(), 0);
    }
  }
}

TEST_F(CoordinatorRobustnessTest, RobustRulesKeepTheModelCloseToTheHonestOne) {
  using Config = v1::RobustnessConfig;
  for (Config::AggregationRule rule :
       {Config::AGGREGATION_RULE_COORDINATE_MEDIAN, Config::AGGREGATION_RULE_TRIMMED_MEAN,
        Config::AGGREGATION_RULE_MULTI_KRUM}) {
    const JobRun honest = RunJob(Attack::kNone, rule);
    const JobRun hostile = RunJob(Attack::kFlipTimes1000, rule);
    const double honest_accuracy = Accuracy(honest.model);
    EXPECT_GT(honest_accuracy, 0.85) << Config::AggregationRule_Name(rule);
    EXPECT_GT(Accuracy(hostile.model), honest_accuracy - 0.05)
        << Config::AggregationRule_Name(rule);
    const double distance = RelativeDistance(hostile.model, honest.model);
    RecordProperty(Config::AggregationRule_Name(rule) + "_distance", std::to_string(distance));
    EXPECT_LT(distance, 0.3) << Config::AggregationRule_Name(rule);
  }
}

}  // namespace
}  // namespace fedge::server

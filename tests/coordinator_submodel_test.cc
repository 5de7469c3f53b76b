// The coordinator with sub-model tiers, transport-free: tier assignment, the tasks'
// sub-models and teachers, updates checked against the client's tier and scattered back
// into the full model, per-client and per-tier metrics.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "client/local_trainer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/sequential.h"
#include "model/submodel_slicer.h"
#include "model/zoo.h"
#include "server/coordinator.h"
#include "server/model_weights.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"
#include "tests/tiered_job.h"
#include "tests/update_header.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kToken[] = "enroll-me";
constexpr int64_t kMiB = int64_t{1} << 20;

// The tests' separable synthetic problem (tests/synthetic_data.h).
data::Dataset MakeData(int n, uint64_t seed) {
  return ::fedge::testing::SeparableData(n, 8, 3, seed);
}

using ::fedge::testing::TieredJob;

struct Device {
  std::string id, token;
  data::Dataset data;
};

class CoordinatorSubModelTest : public ::testing::Test {
 protected:
  void SetUp() override { eval_ = std::make_shared<const data::Dataset>(MakeData(300, 99)); }

  std::unique_ptr<Coordinator> Make() {
    CoordinatorOptions o;
    o.clock = &clock_;
    o.enrollment_token = kToken;
    o.evaluation_data = eval_;
    o.accept_requested_client_ids = true;  // Enroll(..., id): reproducible per-client draws
    auto c = Coordinator::Create(o, nullptr);
    EXPECT_THAT(c, IsOk());
    return std::move(c).value();
  }

  Device Enroll(Coordinator& c, int64_t budget, uint64_t seed, const std::string& id = "") {
    v1::RegisterRequest r;
    r.set_enrollment_token(kToken);
    r.set_previous_client_id(id);
    r.mutable_profile()->set_num_examples(64);
    r.mutable_profile()->set_memory_budget_bytes(budget);
    auto resp = c.Register(r);
    EXPECT_THAT(resp, IsOk());
    return {resp->client_id(), resp->session_token(), MakeData(64, seed)};
  }

  v1::UpdateHeader HeaderFor(const Device& d, const TaskAssignment& t, int64_t n) {
    return ::fedge::testing::UpdateHeaderFor(d.id, d.token, t.header, n);
  }

  absl::Status Train(Coordinator& c, const Device& d, const TaskAssignment& t) {
    FEDGE_ASSIGN_OR_RETURN(client::LocalTrainingOptions o, client::OptionsFromTask(t.header, 1));
    o.teacher = t.teacher.get();
    FEDGE_ASSIGN_OR_RETURN(client::LocalUpdate u, client::TrainLocally(*t.model, d.data, o));
    return c.SubmitUpdate(HeaderFor(d, t, u.num_examples),
                          UpdateFromDeltaProto(d.id, u.num_examples, u.delta), 100);
  }

  base::ManualClock clock_;
  std::shared_ptr<const data::Dataset> eval_;
};

int64_t Rows(const v1::ModelProto& m, const std::string& name) {
  for (const v1::TensorProto& p : m.parameters()) {
    if (p.name() == name) return p.shape(0);
  }
  return -1;
}

TEST_F(CoordinatorSubModelTest, TasksCarryTheSubModelOfTheDevicesTier) {
  auto c = Make();
  std::vector<Device> d = {Enroll(*c, 128 * kMiB, 1), Enroll(*c, 32 * kMiB, 2),
                           Enroll(*c, 1 * kMiB, 3), Enroll(*c, 0, 4)};
  ASSERT_THAT(c->StartJob(TieredJob(1, 4)), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  const std::map<int64_t, std::pair<std::string, int64_t>> want = {
      {128 * kMiB, {"full", 16}}, {32 * kMiB, {"half", 8}}, {1 * kMiB, {"quarter", 4}},
      {0, {"quarter", 4}}};
  const int64_t budgets[] = {128 * kMiB, 32 * kMiB, 1 * kMiB, 0};
  for (size_t i = 0; i < d.size(); ++i) {
    auto task = c->FetchTask(d[i].id, d[i].token);
    ASSERT_THAT(task, IsOk());
    ASSERT_TRUE(task->has_value());
    const auto& [tier, rows] = want.at(budgets[i]);
    EXPECT_EQ((*task)->header.tier(), tier);
    EXPECT_EQ(Rows(*(*task)->model, "fc1.weight"), rows);
    EXPECT_EQ(Rows(*(*task)->model, "fc2.weight"), rows);
    EXPECT_EQ(Rows(*(*task)->model, "fc3.weight"), 3);  // the output layer keeps its size
    EXPECT_EQ((*task)->header.model_spec().layers(0).dense().out_features(), rows);
    EXPECT_EQ((*task)->teacher, nullptr);  // distillation is off
  }
  auto clients = c->ListClients();
  ASSERT_THAT(clients, IsOk());
  for (const v1::ClientRecord& r : *clients) {
    EXPECT_EQ(r.tier(), want.at(r.profile().memory_budget_bytes()).first);
  }
}

TEST_F(CoordinatorSubModelTest, MixedTiersTrainAndReportPerClientAndPerTier) {
  auto c = Make();
  std::vector<Device> d = {Enroll(*c, 128 * kMiB, 1), Enroll(*c, 32 * kMiB, 2),
                           Enroll(*c, 1 * kMiB, 3), Enroll(*c, 1 * kMiB, 4)};
  auto job = c->StartJob(TieredJob(4, 4));
  ASSERT_THAT(job, IsOk());
  for (int step = 0; step < 40 && c->running_job().has_value(); ++step) {
    ASSERT_THAT(c->Tick(), IsOk());
    for (const Device& dev : d) {
      auto task = c->FetchTask(dev.id, dev.token);
      ASSERT_THAT(task, IsOk());
      if (task->has_value()) {
        ASSERT_THAT(Train(*c, dev, **task), IsOk());
      }
    }
  }
  auto rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 4u);
  const v1::RoundMetrics& m = rounds->back().metrics();
  EXPECT_EQ(m.participants(), 4);
  ASSERT_EQ(m.clients_size(), 4);
  std::map<std::string, int64_t> down_by_tier;
  for (const v1::ClientRoundMetrics& cm : m.clients()) {
    EXPECT_EQ(cm.outcome(), v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
    EXPECT_EQ(cm.bytes_up(), 100);
    EXPECT_GT(cm.bytes_down(), 0);
    down_by_tier[cm.tier()] = cm.bytes_down();
  }
  // float32 tasks: the bytes of each tier's parameters.
  auto full = model::Sequential::Create(model::MlpSpec({8, 16, 16, 3}, "tiny"));
  ASSERT_THAT(full, IsOk());
  EXPECT_EQ(down_by_tier["full"], (*full)->num_parameters() * 4);
  EXPECT_EQ(down_by_tier["half"], (8 * 8 + 8 + 8 * 8 + 8 + 8 * 3 + 3) * 4);
  EXPECT_EQ(down_by_tier["quarter"], (8 * 4 + 4 + 4 * 4 + 4 + 4 * 3 + 3) * 4);
  ASSERT_EQ(m.tiers_size(), 3);
  EXPECT_EQ(m.tiers(0).tier(), "full");
  EXPECT_EQ(m.tiers(0).participants(), 1);
  EXPECT_EQ(m.tiers(2).tier(), "quarter");
  EXPECT_EQ(m.tiers(2).participants(), 2);
  EXPECT_EQ(m.tiers(2).bytes_down(), 2 * down_by_tier["quarter"]);
  EXPECT_TRUE(m.tiers(2).evaluated());
  EXPECT_DOUBLE_EQ(m.tiers(0).test_accuracy(), m.test_accuracy());  // r = 1 is the model
  EXPECT_GT(m.tiers(2).test_accuracy(), 0.0);
  EXPECT_GT(m.test_accuracy(), 0.5);  // 3 classes: chance is 1/3
}

TEST_F(CoordinatorSubModelTest, CoordinatesNoClientHeldKeepTheirValue) {
  auto c = Make();
  std::vector<Device> d = {Enroll(*c, 1 * kMiB, 1), Enroll(*c, 1 * kMiB, 2)};
  v1::JobConfig config = TieredJob(1, 2);
  // The weighted mean's arithmetic, without the update bound (in a round of two, the lower
  // median would cap the first device's weight at 2 × 16 and clip the second's Δ to 2).
  config.mutable_robustness()->set_norm_bound_multiple(0);
  config.mutable_robustness()->set_max_weight_multiple(0);
  auto job = c->StartJob(config);
  ASSERT_THAT(job, IsOk());
  auto before = c->ExportModel(*job);
  ASSERT_THAT(before, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  // Both quarter clients send Δ = 1 everywhere they hold; one with 3× the examples.
  std::vector<TaskAssignment> tasks;
  for (const Device& dev : d) {
    auto task = c->FetchTask(dev.id, dev.token);
    ASSERT_THAT(task, IsOk());
    ASSERT_TRUE(task->has_value());
    tasks.push_back(**task);
  }
  for (size_t i = 0; i < d.size(); ++i) {
    v1::ModelProto delta = *tasks[i].model;
    for (v1::TensorProto& p : *delta.mutable_parameters()) {
      for (float& v : *p.mutable_values()) v = i == 0 ? 1.0f : 3.0f;
    }
    const int64_t n = i == 0 ? 48 : 16;
    ASSERT_THAT(c->SubmitUpdate(HeaderFor(d[i], tasks[i], n), UpdateFromDeltaProto(d[i].id, n, delta), 10),
                IsOk());
  }
  ASSERT_THAT(c->Tick(), IsOk());
  auto after = c->ExportModel(*job);
  ASSERT_THAT(after, IsOk());
  // fc1.weight is [16, 8]: rows 0..3 held by both (mean Δ = (48·1 + 16·3)/64 = 1.5), rows
  // 4..15 by nobody.
  const v1::TensorProto& w0 = before->parameters(0);
  const v1::TensorProto& w1 = after->parameters(0);
  ASSERT_EQ(w0.name(), "fc1.weight");
  for (int r = 0; r < 16; ++r) {
    for (int k = 0; k < 8; ++k) {
      const int i = r * 8 + k;
      const float want = r < 4 ? w0.values(i) + 1.5f : w0.values(i);
      EXPECT_FLOAT_EQ(w1.values(i), want) << "row " << r << " col " << k;
    }
  }
  // fc2.weight is [16, 16]: held are rows and columns 0..3.
  const v1::TensorProto& v0 = before->parameters(2);
  const v1::TensorProto& v1 = after->parameters(2);
  ASSERT_EQ(v0.name(), "fc2.weight");
  for (int r = 0; r < 16; ++r) {
    for (int k = 0; k < 16; ++k) {
      const int i = r * 16 + k;
      EXPECT_FLOAT_EQ(v1.values(i), (r < 4 && k < 4) ? v0.values(i) + 1.5f : v0.values(i));
    }
  }
}

TEST_F(CoordinatorSubModelTest, FullShapedUpdateFromASmallTierIsRejectedNamingTheTier) {
  auto c = Make();
  std::vector<Device> d = {Enroll(*c, 1 * kMiB, 1), Enroll(*c, 128 * kMiB, 2)};
  auto job = c->StartJob(TieredJob(1, 2));
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto small = c->FetchTask(d[0].id, d[0].token);
  ASSERT_THAT(small, IsOk());
  ASSERT_EQ((*small)->header.tier(), "quarter");
  auto full_model = c->ExportModel(*job);  // the full model's shapes
  ASSERT_THAT(full_model, IsOk());
  EXPECT_THAT(c->SubmitUpdate(HeaderFor(d[0], **small, 64),
                              UpdateFromDeltaProto(d[0].id, 64, *full_model), 10),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("tier 'quarter'"), HasSubstr("fc1.weight"),
                             HasSubstr("[16,8]"), HasSubstr("[4,8]"))));
  // The client is out of the round; the round goes on with the other one.
  auto big = c->FetchTask(d[1].id, d[1].token);
  ASSERT_THAT(big, IsOk());
  ASSERT_THAT(Train(*c, d[1], **big), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 1u);
  EXPECT_EQ(rounds->front().metrics().participants(), 1);
  EXPECT_EQ(rounds->front().metrics().rejected(), 1);
  bool saw_rejected = false;
  for (const auto& cm : rounds->front().metrics().clients()) {
    if (cm.client_id() == d[0].id) {
      saw_rejected = cm.outcome() == v1::ClientRoundMetrics::OUTCOME_REJECTED;
    }
  }
  EXPECT_TRUE(saw_rejected);
}

TEST_F(CoordinatorSubModelTest, LargestFittingTierFollowsTheTrainingMemoryEstimate) {
  v1::JobConfig cfg = TieredJob(1, 3);
  cfg.mutable_sub_models()->clear_rules();
  cfg.mutable_sub_models()->clear_default_tier();
  cfg.mutable_sub_models()->set_assignment(v1::SubModelConfig::ASSIGNMENT_LARGEST_FITTING);
  const auto bytes = [&](double r) {
    auto s = model::SubModelSlicer::Create(cfg.model_spec(), r, model::SubModelExtraction::kLeading, 0);
    EXPECT_THAT(s, IsOk());
    return model::EstimateDeviceRoundMemoryBytes(s->sub_spec(), 16, false);
  };
  const int64_t full = bytes(1.0), half = bytes(0.5);
  ASSERT_GT(full, half);
  auto c = Make();
  std::vector<Device> d = {Enroll(*c, full, 1), Enroll(*c, full - 1, 2), Enroll(*c, 0, 3)};
  ASSERT_THAT(c->StartJob(cfg), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  const char* want[] = {"full", "half", "quarter"};  // budget 0: unknown → the smallest
  for (size_t i = 0; i < d.size(); ++i) {
    auto task = c->FetchTask(d[i].id, d[i].token);
    ASSERT_THAT(task, IsOk());
    ASSERT_TRUE(task->has_value());
    EXPECT_EQ((*task)->header.tier(), want[i]) << "device " << i;
  }
}

TEST_F(CoordinatorSubModelTest, SmallTiersGetTheLargestTeacherThatFits) {
  v1::JobConfig cfg = TieredJob(1, 3);
  cfg.mutable_distillation()->set_weight(0.5);
  cfg.mutable_distillation()->set_teacher_compute_mode(v1::COMPUTE_MODE_INT8);
  auto c = Make();
  // full tier (no teacher); quarter with unknown-enough budget (≥ full teacher);
  // a quarter device whose budget can hold nothing beyond its own training.
  std::vector<Device> d = {Enroll(*c, 128 * kMiB, 1), Enroll(*c, 1 * kMiB, 2), Enroll(*c, 1, 3)};
  ASSERT_THAT(c->StartJob(cfg), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto t0 = c->FetchTask(d[0].id, d[0].token);
  auto t1 = c->FetchTask(d[1].id, d[1].token);
  auto t2 = c->FetchTask(d[2].id, d[2].token);
  ASSERT_THAT(t0, IsOk());
  ASSERT_THAT(t1, IsOk());
  ASSERT_THAT(t2, IsOk());
  EXPECT_EQ((*t0)->teacher, nullptr);
  ASSERT_NE((*t1)->teacher, nullptr);
  EXPECT_EQ(Rows(*(*t1)->teacher, "fc1.weight"), 16);  // the full central model
  EXPECT_EQ((*t1)->header.teacher_spec().layers(0).dense().out_features(), 16);
  EXPECT_DOUBLE_EQ((*t1)->header.distillation().weight(), 0.5);
  EXPECT_EQ((*t1)->teacher_encoding, v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
  EXPECT_EQ((*t2)->header.tier(), "quarter");
  EXPECT_EQ((*t2)->teacher, nullptr);  // a 1-byte budget holds no teacher
  EXPECT_DOUBLE_EQ((*t2)->header.distillation().weight(), 0.0);
  // The teacher's bytes count as downloaded: int8 weights, one float scale per row.
  ASSERT_THAT(Train(*c, d[1], **t1), IsOk());
}

TEST_F(CoordinatorSubModelTest, RandomSubsetsDifferPerClientAndScatterBack) {
  v1::JobConfig cfg = TieredJob(1, 2);
  cfg.mutable_sub_models()->set_extraction(v1::SubModelConfig::EXTRACTION_RANDOM_SUBSET);
  cfg.mutable_sub_models()->set_seed(7);
  auto c = Make();
  // Named devices: their subsets, drawn from (seed, id, round), are the same in every run.
  std::vector<Device> d = {Enroll(*c, 1 * kMiB, 1, "dev-a"), Enroll(*c, 1 * kMiB, 2, "dev-b")};
  auto job = c->StartJob(cfg);
  ASSERT_THAT(job, IsOk());
  auto before = c->ExportModel(*job);
  ASSERT_THAT(before, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  std::vector<TaskAssignment> tasks;
  for (const Device& dev : d) {
    auto task = c->FetchTask(dev.id, dev.token);
    ASSERT_THAT(task, IsOk());
    ASSERT_TRUE(task->has_value());
    EXPECT_EQ(Rows(*(*task)->model, "fc1.weight"), 4);
    tasks.push_back(**task);
  }
  // Each sub-model is a copy of some 4 rows of the central fc1: find them.
  auto rows_of = [&](const v1::ModelProto& sub) {
    std::vector<int> rows;
    const auto& full = before->parameters(0).values();
    const auto& part = sub.parameters(0).values();
    for (int j = 0; j < 4; ++j) {
      for (int r = 0; r < 16; ++r) {
        if (std::equal(part.begin() + j * 8, part.begin() + j * 8 + 8, full.begin() + r * 8)) {
          rows.push_back(r);
          break;
        }
      }
    }
    return rows;
  };
  const std::vector<int> rows0 = rows_of(*tasks[0].model), rows1 = rows_of(*tasks[1].model);
  ASSERT_EQ(rows0.size(), 4u);
  ASSERT_EQ(rows1.size(), 4u);
  EXPECT_NE(rows0, rows1);
  // Δ = 1 from client 0 only: exactly its rows of fc1.weight move by 1.
  v1::ModelProto delta = *tasks[0].model;
  for (v1::TensorProto& p : *delta.mutable_parameters()) {
    for (float& v : *p.mutable_values()) v = 1.0f;
  }
  ASSERT_THAT(c->SubmitUpdate(HeaderFor(d[0], tasks[0], 64), UpdateFromDeltaProto(d[0].id, 64, delta), 10),
              IsOk());
  ASSERT_THAT(c->Leave(d[1].id, d[1].token), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  auto after = c->ExportModel(*job);
  ASSERT_THAT(after, IsOk());
  for (int r = 0; r < 16; ++r) {
    const bool held = std::find(rows0.begin(), rows0.end(), r) != rows0.end();
    for (int k = 0; k < 8; ++k) {
      EXPECT_FLOAT_EQ(after->parameters(0).values(r * 8 + k),
                      before->parameters(0).values(r * 8 + k) + (held ? 1.0f : 0.0f));
    }
  }
}

}  // namespace
}  // namespace fedge::server

#include "aggregation/fed_cg.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "aggregation/state_codec.h"
#include "base/rng.h"
#include "gtest/gtest.h"

namespace fedge::aggregation {
namespace {

Update RandomUpdate(const ModelWeights& model, const std::string& id, double weight,
                    uint64_t seed, double scale) {
  base::Rng rng(seed);
  Update u;
  u.client_id = id;
  u.weight = weight;
  for (const Tensor& t : model) {
    Tensor d;
    d.name = t.name;
    d.shape = t.shape;
    d.values.resize(t.values.size());
    for (float& v : d.values) v = static_cast<float>(rng.Normal() * scale);
    u.tensors.push_back(std::move(d));
  }
  return u;
}

ModelDelta WeightedMeanOf(const std::vector<const Update*>& us) {
  ModelDelta d;
  for (const Update* u : us) d.total_weight += u->weight;
  for (size_t t = 0; t < us[0]->tensors.size(); ++t) {
    Tensor m = us[0]->tensors[t];
    std::fill(m.values.begin(), m.values.end(), 0.0f);
    for (const Update* u : us) {
      for (size_t i = 0; i < m.values.size(); ++i) {
        m.values[i] += static_cast<float>(u->weight / d.total_weight) * u->tensors[t].values[i];
      }
    }
    d.tensors.push_back(std::move(m));
  }
  d.num_updates = static_cast<int64_t>(us.size());
  return d;
}

struct Batch {
  std::vector<int32_t> y;
  std::vector<float> z;
};

Batch FixedBatch(int b, int nz, uint64_t seed) {
  base::Rng rng(seed);
  Batch out;
  for (int i = 0; i < b; ++i) out.y.push_back(static_cast<int32_t>(rng.UniformInt(10)));
  for (int i = 0; i < b * nz; ++i) out.z.push_back(static_cast<float>(rng.Normal()));
  return out;
}

FedCgOptions SmallOptions(int steps) {
  FedCgOptions o;
  o.distill_steps = steps;
  o.distill_batch = 8;
  o.learning_rate = 1e-3f;
  o.seed = 5;
  return o;
}

TEST(FedCgTest, DistillationReducesItsKlOnAFixedBatch) {
  auto model = FedCg::InitialModel(model::FedCgShape{}, 1).value();
  const Update a = RandomUpdate(model, "a", 100, 2, 0.3);
  const Update b = RandomUpdate(model, "b", 300, 3, 0.3);
  const std::vector<const Update*> us = {&a, &b};
  FedCgOptions options = SmallOptions(300);
  options.learning_rate = 3e-3f;
  auto fedcg = FedCg::Create(options).value();
  ASSERT_TRUE(fedcg->Apply(WeightedMeanOf(us), &model).ok());
  const Batch batch = FixedBatch(8, 100, 9);
  const double before = fedcg->DistillationLoss(us, model, batch.y, batch.z).value();
  EXPECT_GT(before, 1e-3);  // the average of two pairs is not their ensemble
  const ModelWeights averaged = model;
  ASSERT_TRUE(fedcg->ServerTrainingStep(us, &model).ok());
  const double after = fedcg->DistillationLoss(us, model, batch.y, batch.z).value();
  // A single C∘G pair cannot match a two-pair ensemble exactly: ~35% of the gap goes.
  EXPECT_LT(after, 0.8 * before) << "before " << before;
  EXPECT_LT(fedcg->last_report().last_kl, fedcg->last_report().first_kl);
  EXPECT_EQ(fedcg->last_report().steps, 300);
  EXPECT_NE(model[0].values, averaged[0].values);
  EXPECT_EQ(fedcg->rounds(), 1);
}

// The same with the paper's convolutional G (batch norm): the student trains on batch
// statistics, the teachers and the KL measurement run on running statistics, and the
// distillation still closes most of the gap; the running statistics are part of the model
// and move with the student's training forwards.
TEST(FedCgTest, DistillationReducesItsKlWithTheConvolutionalGenerator) {
  model::FedCgShape shape;
  shape.gan = model::FedCgGanArchitecture::kConvBatchNorm;
  auto model = FedCg::InitialModel(shape, 1).value();
  Update a = RandomUpdate(model, "a", 100, 2, 0.3);
  Update b = RandomUpdate(model, "b", 300, 3, 0.3);
  for (Update* u : {&a, &b}) {
    for (Tensor& t : u->tensors) {
      if (t.name.find("running_") != std::string::npos) {
        for (float& v : t.values) v = std::fabs(v);  // variances stay positive
      }
    }
  }
  const std::vector<const Update*> us = {&a, &b};
  FedCgOptions options = SmallOptions(200);
  options.shape = shape;
  options.learning_rate = 3e-3f;
  auto fedcg = FedCg::Create(options).value();
  ASSERT_TRUE(fedcg->Apply(WeightedMeanOf(us), &model).ok());
  const Batch batch = FixedBatch(8, 100, 9);
  const double before = fedcg->DistillationLoss(us, model, batch.y, batch.z).value();
  EXPECT_GT(before, 1e-3);
  const ModelWeights averaged = model;
  ASSERT_TRUE(fedcg->ServerTrainingStep(us, &model).ok());
  const double after = fedcg->DistillationLoss(us, model, batch.y, batch.z).value();
  EXPECT_LT(after, 0.8 * before) << "before " << before;
  bool running_moved = false;
  for (size_t i = 0; i < model.size(); ++i) {
    if (model[i].name == "G.bn1.running_mean") running_moved = model[i].values != averaged[i].values;
  }
  EXPECT_TRUE(running_moved);
}

TEST(FedCgTest, OneClientTeacherIsTheAveragedModelSoKlStartsAtZero) {
  auto model = FedCg::InitialModel(model::FedCgShape{}, 1).value();
  const Update a = RandomUpdate(model, "a", 50, 2, 0.3);
  auto fedcg = FedCg::Create(SmallOptions(0)).value();
  ASSERT_TRUE(fedcg->Apply(WeightedMeanOf({&a}), &model).ok());
  const Batch batch = FixedBatch(16, 100, 4);
  const std::vector<const Update*> us = {&a};
  EXPECT_NEAR(fedcg->DistillationLoss(us, model, batch.y, batch.z).value(), 0.0, 1e-5);
}

TEST(FedCgTest, RefusesWithoutApplyMissingTensorsAndSubModelUpdates) {
  auto model = FedCg::InitialModel(model::FedCgShape{}, 1).value();
  auto fedcg = FedCg::Create(SmallOptions(5)).value();
  Update a = RandomUpdate(model, "a", 10, 2, 0.1);
  const std::vector<const Update*> us = {&a};
  EXPECT_EQ(fedcg->ServerTrainingStep(us, &model).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(fedcg->Apply(WeightedMeanOf(us), &model).ok());
  const ModelWeights saved = model;
  Update missing = a;
  missing.tensors.pop_back();
  const std::vector<const Update*> um = {&missing};
  EXPECT_EQ(fedcg->ServerTrainingStep(um, &model).code(), absl::StatusCode::kInvalidArgument);
  Update masked = a;
  masked.tensors[0].held = CoordinateMask(static_cast<int64_t>(a.tensors[0].values.size()), true);
  const std::vector<const Update*> uk = {&masked};
  EXPECT_EQ(fedcg->ServerTrainingStep(uk, &model).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fedcg->ServerTrainingStep({}, &model).code(), absl::StatusCode::kInvalidArgument);
  Update zero = a;
  zero.weight = 0;
  const std::vector<const Update*> uz = {&zero};
  EXPECT_EQ(fedcg->ServerTrainingStep(uz, &model).code(), absl::StatusCode::kInvalidArgument);
  for (size_t i = 0; i < model.size(); ++i) EXPECT_EQ(model[i].values, saved[i].values);
  EXPECT_FALSE(FedCg::Create(SmallOptions(-1)).ok());
}

// Round 1 on `fedcg` (Apply + ServerTrainingStep with updates drawn from `seed`).
void RunRound(FedCg& fedcg, ModelWeights& model, uint64_t seed) {
  const Update a = RandomUpdate(model, "a", 10, seed, 0.1);
  const Update b = RandomUpdate(model, "b", 30, seed + 1, 0.1);
  const std::vector<const Update*> us = {&a, &b};
  ASSERT_TRUE(fedcg.Apply(WeightedMeanOf(us), &model).ok());
  ASSERT_TRUE(fedcg.ServerTrainingStep(us, &model).ok());
}

TEST(FedCgTest, StateRoundTripsWithTheDistillOptimizerAndRejectsGarbage) {
  const ModelWeights initial = FedCg::InitialModel(model::FedCgShape{}, 1).value();
  ModelWeights model = initial;
  FedCgOptions options = SmallOptions(3);
  options.persistent_distill_optimizer = true;
  auto fedcg = FedCg::Create(options).value();
  RunRound(*fedcg, model, 2);
  EXPECT_EQ(fedcg->distill_optimizer_steps(), 3);
  const std::string state = fedcg->SerializeState().value();
  auto restored = FedCg::Create(options).value();
  ASSERT_TRUE(restored->RestoreState(state).ok());
  EXPECT_EQ(restored->rounds(), 1);
  EXPECT_EQ(restored->distill_optimizer_steps(), 3);

  // Round 2 on the uninterrupted server, on the restored one, and on one whose Adam starts
  // afresh each round: the first two agree bit for bit, the third does not.
  ModelWeights m_restored = model, m_fresh = model;
  const FedCgOptions fresh_options = SmallOptions(3);  // the default: a fresh Adam each round
  auto fresh = FedCg::Create(fresh_options).value();
  ASSERT_TRUE(fresh->RestoreState(state).ok());
  RunRound(*fedcg, model, 7);
  RunRound(*restored, m_restored, 7);
  RunRound(*fresh, m_fresh, 7);
  EXPECT_EQ(fedcg->distill_optimizer_steps(), 6);
  EXPECT_EQ(fresh->distill_optimizer_steps(), 3);
  // The fresh-Adam server checkpoints no moments (a restore gives it none).
  auto fresh_restored = FedCg::Create(fresh_options).value();
  ASSERT_TRUE(fresh_restored->RestoreState(fresh->SerializeState().value()).ok());
  EXPECT_EQ(fresh_restored->distill_optimizer_steps(), 0);
  EXPECT_EQ(fresh_restored->rounds(), 2);
  bool any_differs = false;
  for (size_t i = 0; i < model.size(); ++i) {
    EXPECT_EQ(model[i].values, m_restored[i].values) << model[i].name;
    any_differs |= model[i].values != m_fresh[i].values;
  }
  EXPECT_TRUE(any_differs);

  std::string bad = state;
  bad[9] ^= 1;
  EXPECT_EQ(restored->RestoreState(bad).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(restored->RestoreState("FEDGEAV1xxxx").code(), absl::StatusCode::kDataLoss);
  // Moments for another network shape (a tensor of the wrong size) are refused, CRC intact.
  model::FedCgShape other;
  other.noise_dim = 50;
  FedCgOptions other_options = SmallOptions(3);
  other_options.shape = other;
  auto other_server = FedCg::Create(other_options).value();
  const absl::Status mismatch = other_server->RestoreState(state);
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(mismatch.message().find("optimizer tensor"), std::string::npos) << mismatch;
  EXPECT_EQ(other_server->rounds(), 0);
  // Moments with a step count of 0 (CRC recomputed, so only the content is wrong): refused.
  std::string body = state.substr(0, state.size() - 4);
  const int64_t zero = 0;
  std::memcpy(body.data() + 16, &zero, sizeof(zero));  // after the magic and the round count
  internal::StateWriter patched;
  patched.PutBytes(body.data(), body.size());
  EXPECT_EQ(restored->RestoreState(patched.Finish()).code(), absl::StatusCode::kDataLoss);

  // A state written before the optimizer was checkpointed (FEDGECG1: the round count only)
  // still restores; the distillation then starts a fresh Adam.
  internal::StateWriter w;
  w.PutBytes("FEDGECG1", 8);
  w.Put<int64_t>(4);
  auto old = FedCg::Create(SmallOptions(3)).value();
  ASSERT_TRUE(old->RestoreState(w.Finish()).ok());
  EXPECT_EQ(old->rounds(), 4);
  EXPECT_EQ(old->distill_optimizer_steps(), 0);
}

TEST(FedCgTest, RefusesUpdatesCarryingPrivateOrForeignTensors) {
  auto fed_cg = FedCg::Create(SmallOptions(1));
  ASSERT_TRUE(fed_cg.ok());
  const Strategy& s = **fed_cg;
  EXPECT_TRUE(s.CheckUpdateTensor("dev", "C.fc.weight").ok());
  EXPECT_TRUE(s.CheckUpdateTensor("dev", "G.fc1.bias").ok());
  const absl::Status e = s.CheckUpdateTensor("dev", "E.conv1.weight");
  EXPECT_EQ(e.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(e.message().find("never leave the device"), absl::string_view::npos) << e;
  EXPECT_NE(e.message().find("dev"), absl::string_view::npos) << e;
  EXPECT_FALSE(s.CheckUpdateTensor("dev", "D.fc.weight").ok());
  const absl::Status other = s.CheckUpdateTensor("dev", "fc1.weight");
  EXPECT_NE(other.message().find("C.* and G.*"), absl::string_view::npos) << other;

  // A whole update: the same names, and G's running variances stay ≥ 0.
  const model::FedCgShape shape = SmallOptions(1).shape;
  auto model = FedCg::InitialModel(shape, 1);
  ASSERT_TRUE(model.ok());
  Update u = RandomUpdate(*model, "dev", 1, 3, 0.01);
  EXPECT_TRUE(s.CheckUpdate(u, *model).ok());
  Tensor leaked;
  leaked.name = "E.conv1.weight";
  leaked.shape = {1};
  leaked.values = {0.5f};
  Update with_leak = u;
  with_leak.tensors.push_back(leaked);
  EXPECT_FALSE(s.CheckUpdate(with_leak, *model).ok());
  Tensor var;
  var.name = "G.bn.running_var";
  var.shape = {2};
  var.values = {1.0f, 1.0f};
  ModelWeights with_bn = *model;
  with_bn.push_back(var);
  Update bn = u;
  var.values = {-0.5f, -1.5f};  // 1 − 1.5 < 0 at entry 1
  bn.tensors.push_back(var);
  const absl::Status negative = s.CheckUpdate(bn, with_bn);
  EXPECT_EQ(negative.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(negative.message().find("G.bn.running_var[1]"), absl::string_view::npos) << negative;
  bn.tensors.back().values = {-0.5f, -0.5f};
  EXPECT_TRUE(s.CheckUpdate(bn, with_bn).ok());
}

TEST(FedCgTest, ReportsTheDistillationAndTheDevicesAccuracy) {
  auto fed_cg = FedCg::Create(SmallOptions(1));
  ASSERT_TRUE(fed_cg.ok());
  DeviceEvaluation devices;
  devices.clients = 2;
  devices.examples = 40;
  devices.correct = 30;
  devices.model_round = 4;
  v1::RoundMetrics m;
  (*fed_cg)->ReportRound(devices, &m);
  ASSERT_TRUE(m.has_fed_cg());
  EXPECT_DOUBLE_EQ(m.fed_cg().client_accuracy(), 0.75);
  EXPECT_EQ(m.fed_cg().clients_evaluated(), 2);
  EXPECT_EQ(m.fed_cg().eval_examples(), 40);
  EXPECT_EQ(m.fed_cg().evaluated_model_round(), 4);
  // Other strategies add nothing.
  auto fedavg = FedAvg::Create();
  v1::RoundMetrics none;
  ASSERT_TRUE(fedavg.ok());
  (*fedavg)->ReportRound(devices, &none);
  EXPECT_FALSE(none.has_fed_cg());
}

}  // namespace
}  // namespace fedge::aggregation

// FedCG jobs on the transport-free coordinator, driven by in-process devices that
// run client::FedCgClient as fedge-client does: the round (FedAvg of C and G, then the server
// distillation), the devices' evaluation in the round's metrics, an update naming a private
// tensor refused, and a restarted coordinator continuing a FedCG job exactly.
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "base/clock.h"
#include "client/fedcg_trainer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/fedcg_nets.h"
#include "server/coordinator.h"
#include "server/model_weights.h"
#include "server/store.h"
#include "tests/model_compare.h"
#include "tests/status_matchers.h"
#include "tests/synthetic_data.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kToken[] = "enroll-fedcg";

// Small and quick: 16×16 images (a 16-float feature), one epoch of each step, 10
// distillation steps.
v1::JobConfig TinyFedCgJob(int rounds, int per_round, int quorum) {
  v1::JobConfig job;
  job.set_name("fedcg");
  job.set_rounds(rounds);
  job.mutable_selection()->set_clients_per_round(per_round);
  job.mutable_round_policy()->set_quorum(quorum);
  job.mutable_round_policy()->set_deadline_seconds(600);
  job.mutable_local_training()->set_epochs(1);
  job.mutable_local_training()->set_batch_size(8);
  job.mutable_local_training()->set_learning_rate(1e-3);
  v1::FedCgParams& f = *job.mutable_strategy()->mutable_fed_cg();
  f.set_image_size(16);
  f.set_gan_epochs(1);
  f.set_distill_steps(10);
  f.set_eval_holdout_fraction(0.25);
  return job;
}

struct Device {
  std::string id, token;
  uint64_t seed = 0;
  std::unique_ptr<client::FedCgClient> net;  // created at the first task, as a device does
  client::FedCgDeviceData data;
};

class CoordinatorFedCgTest : public ::testing::Test {
 protected:
  std::unique_ptr<Coordinator> Make(Store* store = nullptr) {
    CoordinatorOptions o;
    o.clock = &clock_;
    o.enrollment_token = kToken;
    auto c = Coordinator::Create(o, store);
    EXPECT_THAT(c, IsOk());
    return std::move(c).value();
  }

  std::vector<Device> Enroll(Coordinator& c, int n) {
    std::vector<Device> devices(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      v1::RegisterRequest r;
      r.set_enrollment_token(kToken);
      r.mutable_profile()->set_num_examples(40);
      auto resp = c.Register(r);
      EXPECT_THAT(resp, IsOk());
      devices[i].id = resp->client_id();
      devices[i].token = resp->session_token();
      devices[i].seed = 10 + static_cast<uint64_t>(i);
    }
    return devices;
  }

  // The device's side of a round: fetch, evaluate and train its FedCgClient, upload (with
  // `extra` appended to the update). NotFound when it had no task.
  // `tamper`, when given, edits the update before it is submitted.
  absl::Status Work(Coordinator& c, Device& d, const aggregation::Tensor* extra = nullptr,
                    const std::function<void(aggregation::Update&)>& tamper = nullptr) {
    auto task = c.FetchTask(d.id, d.token);
    if (!task.ok()) return task.status();
    if (!task->has_value()) return absl::NotFoundError("no task");
    const TaskAssignment& t = **task;
    if (!t.header.has_fed_cg()) return absl::InternalError("not a FedCG task");
    const model::FedCgShape shape = model::FedCgShapeFromParams(t.header.fed_cg());
    if (d.net == nullptr) {
      auto net = client::FedCgClient::Create(shape, client::FedCgOptionsFromTask(t.header), d.seed);
      if (!net.ok()) return net.status();
      d.net = std::move(net).value();
      auto inputs = client::FedCgInputs(::fedge::testing::BandImages(40, 3, d.seed), shape);
      if (!inputs.ok()) return inputs.status();
      d.data = client::FedCgHoldOut(std::move(inputs).value(),
                                    t.header.fed_cg().eval_holdout_fraction(), d.seed);
    }
    auto update = client::FedCgDeviceRound(*d.net, *t.model, d.data,
                                           static_cast<int>(t.header.round() - 1));
    if (!update.ok()) return update.status();
    v1::UpdateHeader h;
    h.set_client_id(d.id);
    h.set_session_token(d.token);
    h.set_job_id(t.header.job_id());
    h.set_round(t.header.round());
    h.set_task_id(t.header.task_id());
    h.set_num_examples(update->num_examples);
    h.mutable_metrics()->set_train_loss(update->train_loss);
    h.mutable_metrics()->set_eval_accuracy(update->eval_accuracy);
    h.mutable_metrics()->set_eval_examples(update->eval_examples);
    aggregation::Update u = UpdateFromDeltaProto(d.id, update->num_examples, update->delta);
    if (extra != nullptr) u.tensors.push_back(*extra);
    if (tamper) tamper(u);
    return c.SubmitUpdate(h, u, static_cast<int64_t>(update->delta.ByteSizeLong()));
  }

  // One round with every device working, in device order.
  void Round(Coordinator& c, std::vector<Device>& devices) {
    ASSERT_THAT(c.Tick(), IsOk());
    for (Device& d : devices) ASSERT_THAT(Work(c, d), IsOk());
    ASSERT_THAT(c.Tick(), IsOk());
  }

  // Runs `job_config` (3 rounds, 2 devices) straight and with the coordinator restarted from
  // its store after round 1; expects the same final model bit for bit and returns it.
  v1::ModelProto RunStraightAndRestarted(const v1::JobConfig& job_config,
                                         const std::string& name) {
    auto run = [&](const std::string& dir, bool crash) -> v1::ModelProto {
      std::filesystem::remove_all(dir);
      std::string job_id;
      std::vector<Device> devices;
      {
        auto store = Store::Open(dir);
        EXPECT_THAT(store, IsOk());
        auto c = Make(store->get());
        devices = Enroll(*c, 2);
        auto job = c->StartJob(job_config);
        EXPECT_THAT(job, IsOk());
        job_id = *job;
        for (int r = 0; r < (crash ? 1 : 3); ++r) Round(*c, devices);
        if (!crash) return *c->ExportModel(job_id);
      }
      auto store = Store::Open(dir);
      EXPECT_THAT(store, IsOk());
      auto c = Make(store->get());
      EXPECT_EQ(c->running_job(), job_id);
      for (int r = 0; r < 2; ++r) Round(*c, devices);
      EXPECT_FALSE(c->running_job().has_value());
      return *c->ExportModel(job_id);
    };
    const v1::ModelProto straight = run(::testing::TempDir() + "/" + name + "_straight", false);
    const v1::ModelProto restarted = run(::testing::TempDir() + "/" + name + "_restarted", true);
    ::fedge::testing::ExpectSameParameters(straight, restarted);
    return straight;
  }

  // The job ran one round, which completed with these counts.
  static void ExpectOneRoundCompleted(Coordinator& c, const std::string& job, int participants,
                                      int rejected) {
    auto rounds = c.ListRounds(job);
    ASSERT_THAT(rounds, IsOk());
    ASSERT_EQ(rounds->size(), 1u);
    EXPECT_EQ((*rounds)[0].state(), v1::ROUND_STATE_COMPLETED);
    EXPECT_EQ((*rounds)[0].metrics().participants(), participants);
    EXPECT_EQ((*rounds)[0].metrics().rejected(), rejected);
  }

  base::ManualClock clock_;
};

TEST_F(CoordinatorFedCgTest, RoundsAverageDistillAndRecordTheDevicesAccuracy) {
  auto c = Make();
  std::vector<Device> devices = Enroll(*c, 2);
  auto job = c->StartJob(TinyFedCgJob(2, 2, 2));
  ASSERT_THAT(job, IsOk());
  auto initial = c->ExportModel(*job);
  ASSERT_THAT(initial, IsOk());
  EXPECT_EQ(initial->spec().name(), "fedcg");
  for (const v1::TensorProto& t : initial->parameters()) {
    EXPECT_TRUE(absl::StartsWith(t.name(), "C.") || absl::StartsWith(t.name(), "G.")) << t.name();
  }
  for (int r = 0; r < 2; ++r) Round(*c, devices);
  EXPECT_FALSE(c->running_job().has_value());
  auto rounds = c->ListRounds(*job);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 2u);
  for (const v1::RoundRecord& r : *rounds) {
    const v1::RoundMetrics& m = r.metrics();
    ASSERT_EQ(r.state(), v1::ROUND_STATE_COMPLETED);
    EXPECT_EQ(m.participants(), 2);
    EXPECT_FALSE(m.evaluated());
    const v1::FedCgRoundMetrics& f = m.fed_cg();
    EXPECT_EQ(f.distill_steps(), 10);
    EXPECT_GT(f.first_kl(), 0);
    EXPECT_GE(f.synthetic_accuracy(), 0);
    EXPECT_EQ(f.clients_evaluated(), 2);
    EXPECT_EQ(f.eval_examples(), 20);
    EXPECT_EQ(f.evaluated_model_round(), r.round() - 1);
    // The mean of the two devices' reports, weighted by their 10 examples each.
    ASSERT_EQ(m.clients_size(), 2);
    EXPECT_NEAR(f.client_accuracy(),
                (m.clients(0).eval_accuracy() + m.clients(1).eval_accuracy()) / 2, 1e-12);
  }
  // The round changed the global C and G.
  auto final_model = c->ExportModel(*job);
  ASSERT_THAT(final_model, IsOk());
  ASSERT_EQ(final_model->parameters_size(), initial->parameters_size());
  EXPECT_NE(final_model->parameters(0).values(0), initial->parameters(0).values(0));
}

TEST_F(CoordinatorFedCgTest, AnUpdateNamingAPrivateTensorIsRefusedAndTheRoundCompletes) {
  auto c = Make();
  std::vector<Device> devices = Enroll(*c, 3);
  auto job = c->StartJob(TinyFedCgJob(1, 3, 2));
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  ASSERT_THAT(Work(*c, devices[0]), IsOk());
  aggregation::Tensor leaked;
  leaked.name = "E.conv1.weight";
  leaked.shape = {6, 5, 5, 1};
  leaked.values.assign(150, 0.5f);
  EXPECT_THAT(Work(*c, devices[2], &leaked),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("E.conv1.weight"),
                                        HasSubstr("never leave the device"))));
  ASSERT_THAT(Work(*c, devices[1]), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  ExpectOneRoundCompleted(*c, *job, /*participants=*/2, /*rejected=*/1);
}

// A running variance is a variance: an update that would make one of G's negative (a buggy
// or hostile device) is refused naming the entry, and the round completes with the others.
TEST_F(CoordinatorFedCgTest, AnUpdateMakingARunningVarianceNegativeIsRefused) {
  auto c = Make();
  std::vector<Device> devices = Enroll(*c, 3);
  v1::JobConfig config = TinyFedCgJob(1, 3, 2);
  config.mutable_strategy()->mutable_fed_cg()->set_image_size(32);
  config.mutable_strategy()->mutable_fed_cg()->set_gan_architecture(v1::FEDCG_GAN_CONV_BATCHNORM);
  auto job = c->StartJob(config);
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  ASSERT_THAT(Work(*c, devices[0]), IsOk());
  bool tampered = false;
  EXPECT_THAT(Work(*c, devices[2], nullptr,
                   [&](aggregation::Update& u) {
                     for (aggregation::Tensor& t : u.tensors) {
                       if (t.name != "G.bn2.running_var") continue;
                       t.values[3] = -2.0f;  // the broadcast holds 1
                       tampered = true;
                     }
                   }),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("G.bn2.running_var[3]"),
                                        HasSubstr("below 0"))));
  EXPECT_TRUE(tampered);
  ASSERT_THAT(Work(*c, devices[1]), IsOk());
  ASSERT_THAT(c->Tick(), IsOk());
  ExpectOneRoundCompleted(*c, *job, /*participants=*/2, /*rejected=*/1);
  auto model = c->ExportModel(*job);
  ASSERT_THAT(model, IsOk());
  for (const v1::TensorProto& t : model->parameters()) {
    if (!absl::EndsWith(t.name(), ".running_var")) continue;
    for (float v : t.values()) EXPECT_GT(v, 0.0f) << t.name();
  }
}

// FedCg's state (its round count, which seeds the distillation's noise) is checkpointed with
// the model: a coordinator restarted after round 1 ends with exactly the model of an
// uninterrupted run.
TEST_F(CoordinatorFedCgTest, RestartedJobContinuesFromItsCheckpoint) {
  RunStraightAndRestarted(TinyFedCgJob(3, 2, 2), "fedcg");
}

// The paper's convolutional G (batch norm): its running statistics are tensors of the
// central model, averaged and distilled with it (they move, variances stay positive), and
// a restarted job still continues exactly.
TEST_F(CoordinatorFedCgTest, ConvolutionalGanJobAveragesRunningStatisticsAndRestartsExactly) {
  v1::JobConfig job = TinyFedCgJob(3, 2, 2);
  job.mutable_strategy()->mutable_fed_cg()->set_image_size(32);
  job.mutable_strategy()->mutable_fed_cg()->set_gan_architecture(v1::FEDCG_GAN_CONV_BATCHNORM);
  const v1::ModelProto model = RunStraightAndRestarted(job, "fedcg_conv");
  int running = 0;
  for (const v1::TensorProto& t : model.parameters()) {
    if (t.name() != "G.bn2.running_var" && t.name() != "G.bn2.running_mean") continue;
    ++running;
    const bool var = t.name() == "G.bn2.running_var";
    bool moved = false;
    for (float v : t.values()) {
      moved |= v != (var ? 1.0f : 0.0f);
      if (var) {
        EXPECT_GT(v, 0.0f);
      }
    }
    EXPECT_TRUE(moved) << t.name();
  }
  EXPECT_EQ(running, 2);
}

}  // namespace
}  // namespace fedge::server

// The simulator runs what ships: a virtual device of fedge-sim and a fedge device runtime
// (ClientRuntime over gRPC) with the same id, seed and data send the coordinator the same
// update — the same header field by field and the same payload bytes — and the two
// coordinators end the round with the same model, bit for bit. With int8 task weights and
// int8 stochastic-rounding updates, a side that skipped either encoding (trained from
// unquantized weights, or sent float32) would differ; with adaptive clipping, a side that
// left out the update's norm would count it as clipped.
//
// Lives here because it uses sim/, client/ and server/ together.
#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "base/clock.h"
#include "client/grpc/client_runtime.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/zoo.h"
#include "server/coordinator.h"
#include "server/grpc/grpc_server.h"
#include "sim/client_data.h"
#include "sim/sim_config.h"
#include "sim/simulator.h"
#include "tests/recording_interceptor.h"
#include "tests/status_matchers.h"

namespace fedge {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::RecordingFactory;
using ::fedge::testing::SentMessages;

constexpr char kToken[] = "parity-enrollment";

// One device, one round, a 12-24-3 MLP on synthetic data.
v1::SimConfig OneDeviceScenario() {
  v1::SimConfig c;
  v1::JobConfig& job = *c.mutable_job();
  job.set_name("parity");
  *job.mutable_model_spec() = model::MlpSpec({12, 24, 3});
  job.set_init_seed(4);
  job.set_rounds(1);
  job.mutable_selection()->set_clients_per_round(1);
  job.mutable_selection()->set_seed(2);
  job.mutable_round_policy()->set_quorum(1);
  job.mutable_round_policy()->set_deadline_seconds(0);  // none: the clocks below stand still
  job.mutable_local_training()->set_epochs(2);
  job.mutable_local_training()->set_batch_size(8);
  job.mutable_local_training()->set_learning_rate(0.05);
  job.mutable_local_training()->set_momentum(0.5);
  job.mutable_local_training()->set_shuffle_seed(31);
  c.set_population(1);
  v1::SyntheticData& s = *c.mutable_data()->mutable_synthetic();
  s.set_features(12);
  s.set_classes(3);
  s.set_examples_per_client(40);
  s.set_label_alpha(0.5);
  s.set_test_examples(60);
  s.set_seed(7);
  c.set_seed(13);
  return c;
}

// An update as it reached a coordinator.
struct Upload {
  v1::UpdateHeader header;
  std::string payload;
};

// The fields a transport or a host sets differently (credentials, the host's clock and
// memory, a resume offset); everything else must match.
v1::UpdateHeader Comparable(v1::UpdateHeader h) {
  h.clear_session_token();
  h.clear_resume_offset();
  h.mutable_metrics()->clear_train_seconds();
  h.mutable_metrics()->clear_peak_rss_bytes();
  return h;
}

struct RoundResult {
  Upload upload;
  v1::ModelProto model;
  v1::RoundMetrics metrics;
};

absl::StatusOr<RoundResult> RunSimulated(const v1::SimConfig& config) {
  RoundResult out;
  sim::SimulatorOptions options;
  options.threads = 1;
  int uploads = 0;
  options.on_upload = [&](const v1::UpdateHeader& h, std::string_view payload) {
    out.upload.header = h;
    out.upload.payload = std::string(payload);
    ++uploads;
  };
  absl::StatusOr<std::unique_ptr<sim::Simulator>> sim = sim::Simulator::Create(config, options);
  if (!sim.ok()) return sim.status();
  std::vector<sim::RoundReport> reports;
  absl::Status run = (*sim)->Run([&](const sim::RoundReport&) {});
  if (!run.ok()) return run;
  if (uploads != 1) return absl::InternalError(absl::StrCat(uploads, " simulated uploads"));
  absl::StatusOr<v1::ModelProto> model = (*sim)->ExportModel();
  if (!model.ok()) return model.status();
  out.model = *std::move(model);
  return out;
}

// The same job on a gRPC coordinator with one fedge device runtime as "v00000000" on the
// data the simulator gives its client 0; the device's messages recorded on its channel.
absl::StatusOr<RoundResult> RunOverGrpc(const v1::SimConfig& config) {
  absl::StatusOr<std::unique_ptr<sim::ClientDataSource>> data = sim::MakeClientDataSource(config);
  if (!data.ok()) return data.status();
  // The simulator's clock at its start, standing still: the job's id (and the DP noise
  // seeded from it) is the simulated job's, and nothing times out.
  base::ManualClock clock;
  server::CoordinatorOptions o;
  o.clock = &clock;
  o.enrollment_token = kToken;
  o.evaluation_data = (*data)->TestData();
  o.accept_requested_client_ids = true;
  o.dp_noise_seed = config.seed();  // as the simulator seeds it
  absl::StatusOr<std::unique_ptr<server::Coordinator>> coordinator =
      server::Coordinator::Create(o, nullptr);
  if (!coordinator.ok()) return coordinator.status();
  server::GrpcServerOptions so;
  so.listen_address = "127.0.0.1:0";
  so.credentials = grpc::InsecureServerCredentials();
  so.tick_interval = absl::Milliseconds(20);
  so.limits.max_wait = absl::Seconds(1);
  so.limits.retry_after_ms = 50;
  absl::StatusOr<std::unique_ptr<server::GrpcCoordinatorServer>> server =
      server::GrpcCoordinatorServer::Start(so, coordinator->get(), nullptr);
  if (!server.ok()) return server.status();

  SentMessages sent;
  client::ClientRuntimeOptions co;
  co.target = "127.0.0.1:" + std::to_string((*server)->port());
  co.enrollment_token = kToken;
  co.insecure = true;
  co.requested_client_id = "v00000000";
  co.data = std::make_shared<const data::Dataset>((*data)->ClientData(0));
  co.fetch_wait_seconds = 1;
  co.backoff.initial = absl::Milliseconds(50);
  co.backoff.max = absl::Milliseconds(500);
  co.interceptors = [&sent] {
    std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> v;
    v.push_back(std::make_unique<RecordingFactory>(&sent));
    return v;
  };
  absl::StatusOr<std::unique_ptr<client::ClientRuntime>> runtime =
      client::ClientRuntime::Create(std::move(co));
  if (!runtime.ok()) return runtime.status();
  std::atomic<bool> stop{false};
  absl::Status device_status;
  std::thread device([&] { device_status = (*runtime)->Run(stop); });
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Joiner() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } joiner{stop, device};

  // Started once the device is registered, so that its round samples it.
  for (int i = 0; i < 200 && (*coordinator)->ListClients()->empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  absl::StatusOr<std::string> job = (*coordinator)->StartJob(config.job());
  if (!job.ok()) return job.status();
  v1::JobStatus status;
  for (int i = 0; i < 1500; ++i) {
    absl::StatusOr<v1::JobStatus> s = (*coordinator)->GetJob(*job);
    if (!s.ok()) return s.status();
    status = *s;
    if (status.state() != v1::JOB_STATE_RUNNING) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (status.state() != v1::JOB_STATE_FINISHED) {
    return absl::InternalError(absl::StrCat("the gRPC job did not finish: ", status.message()));
  }
  stop = true;
  device.join();
  (*server)->Shutdown(absl::Seconds(1));

  RoundResult out;
  int uploads = 0;
  for (const auto& [method, bytes] : sent.Get()) {
    if (method.find("UploadUpdate") == std::string::npos) continue;
    v1::UpdateChunk chunk;
    if (!chunk.ParseFromString(bytes)) return absl::InternalError("an unparsable chunk");
    if (chunk.has_header()) {
      ++uploads;
      out.upload.header = chunk.header();
      out.upload.payload.clear();
    } else if (chunk.has_data()) {
      out.upload.payload += chunk.data().data();
    }
  }
  if (uploads != 1) return absl::InternalError(absl::StrCat(uploads, " device uploads"));
  absl::StatusOr<v1::ModelProto> model = (*coordinator)->ExportModel(*job);
  if (!model.ok()) return model.status();
  out.model = *std::move(model);
  return out;
}

void ExpectSameRound(const v1::SimConfig& raw) {
  absl::StatusOr<v1::SimConfig> config = sim::ValidateSimConfig(raw);
  ASSERT_THAT(config.status(), IsOk());
  absl::StatusOr<RoundResult> simulated = RunSimulated(*config);
  ASSERT_THAT(simulated.status(), IsOk());
  absl::StatusOr<RoundResult> fleet = RunOverGrpc(*config);
  ASSERT_THAT(fleet.status(), IsOk());
  const v1::UpdateHeader sim_header = Comparable(simulated->upload.header);
  const v1::UpdateHeader fleet_header = Comparable(fleet->upload.header);
  // Field by field, so that a difference names its field.
  EXPECT_EQ(sim_header.client_id(), fleet_header.client_id());
  EXPECT_EQ(sim_header.job_id(), fleet_header.job_id());
  EXPECT_EQ(sim_header.round(), fleet_header.round());
  EXPECT_EQ(sim_header.task_id(), fleet_header.task_id());
  EXPECT_EQ(sim_header.manifest().SerializeAsString(), fleet_header.manifest().SerializeAsString());
  EXPECT_EQ(sim_header.total_bytes(), fleet_header.total_bytes());
  EXPECT_EQ(sim_header.num_examples(), fleet_header.num_examples());
  EXPECT_EQ(sim_header.metrics().train_loss(), fleet_header.metrics().train_loss());
  EXPECT_EQ(sim_header.metrics().train_accuracy(), fleet_header.metrics().train_accuracy());
  EXPECT_EQ(sim_header.metrics().steps(), fleet_header.metrics().steps());
  EXPECT_EQ(sim_header.metrics().update_norm(), fleet_header.metrics().update_norm());
  EXPECT_GT(sim_header.metrics().update_norm(), 0);
  EXPECT_EQ(sim_header.metrics().eval_accuracy(), fleet_header.metrics().eval_accuracy());
  EXPECT_EQ(sim_header.metrics().eval_examples(), fleet_header.metrics().eval_examples());
  EXPECT_EQ(sim_header.refusal(), fleet_header.refusal());
  // And nothing else: every field of the header is one of the above.
  EXPECT_EQ(sim_header.SerializeAsString(), fleet_header.SerializeAsString());
  EXPECT_TRUE(simulated->upload.payload == fleet->upload.payload)
      << "the update payloads differ (" << simulated->upload.payload.size() << " and "
      << fleet->upload.payload.size() << " bytes)";
  // What the coordinators made of them: the same model, bit for bit.
  ASSERT_EQ(simulated->model.parameters_size(), fleet->model.parameters_size());
  for (int t = 0; t < simulated->model.parameters_size(); ++t) {
    EXPECT_EQ(simulated->model.parameters(t).SerializeAsString(),
              fleet->model.parameters(t).SerializeAsString())
        << "tensor " << simulated->model.parameters(t).name();
  }
}

TEST(SimFleetParityTest, QuantizedTransferBothWaysGivesTheSameUpdateAndModel) {
  v1::SimConfig c = OneDeviceScenario();
  c.mutable_job()->mutable_transfer()->set_task_encoding(v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
  c.mutable_job()->mutable_transfer()->set_update_encoding(
      v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
  ExpectSameRound(c);
}

TEST(SimFleetParityTest, Int4TaskWeightsGiveTheSameUpdateAndModel) {
  v1::SimConfig c = OneDeviceScenario();
  c.mutable_job()->mutable_transfer()->set_task_encoding(v1::TENSOR_ENCODING_INT4_BLOCK32);
  ExpectSameRound(c);
}

TEST(SimFleetParityTest, AdaptiveClippingDpGivesTheSameUpdateAndModel) {
  v1::SimConfig c = OneDeviceScenario();
  v1::PrivacyConfig& p = *c.mutable_job()->mutable_privacy();
  p.set_clip_norm(0.5);
  p.set_noise_multiplier(0.3);
  p.mutable_adaptive_clipping()->set_target_quantile(0.5);
  ExpectSameRound(c);
}

}  // namespace
}  // namespace fedge

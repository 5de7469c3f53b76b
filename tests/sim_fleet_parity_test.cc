// The simulator runs what ships: a virtual device of fedge-sim and a fedge device runtime
// (ClientRuntime over gRPC) with the same id, seed and data send the coordinator the same
// update — the same header field by field and the same payload bytes — and the two
// coordinators end the round with the same model, bit for bit. With int8 task weights and
// int8 stochastic-rounding updates, a side that skipped either encoding (trained from
// unquantized weights, or sent float32) would differ; with adaptive clipping, a side that
// left out the update's norm would count it as clipped.
//
// A secure-aggregation job (SecAgg+ with distributed DP) runs the same way: every virtual
// device and every runtime runs client::SecAggDevice, their noise shares seeded alike
// (ClientRuntimeOptions.testing_dp_noise_seed), and the two coordinators release the same
// sum and end with the same model bits.
//
// Lives here because it uses sim/, client/ and server/ together.
#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_format.h"
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
  Upload upload;  // the last update sent in the clear
  int uploads = 0;
  v1::ModelProto model;
  std::vector<v1::RoundMetrics> rounds;  // completed rounds' metrics
};

// The completed rounds' metrics among `records`.
std::vector<v1::RoundMetrics> Completed(const std::vector<v1::RoundRecord>& records) {
  std::vector<v1::RoundMetrics> out;
  for (const v1::RoundRecord& r : records) {
    if (r.state() == v1::ROUND_STATE_COMPLETED) out.push_back(r.metrics());
  }
  return out;
}

absl::StatusOr<RoundResult> RunSimulated(const v1::SimConfig& config) {
  RoundResult out;
  sim::SimulatorOptions options;
  options.threads = 1;
  options.on_upload = [&](const v1::UpdateHeader& h, std::string_view payload) {
    out.upload.header = h;
    out.upload.payload = std::string(payload);
    ++out.uploads;
  };
  absl::StatusOr<std::unique_ptr<sim::Simulator>> sim = sim::Simulator::Create(config, options);
  if (!sim.ok()) return sim.status();
  absl::Status run = (*sim)->Run([&](const sim::RoundReport&) {});
  if (!run.ok()) return run;
  absl::StatusOr<v1::ModelProto> model = (*sim)->ExportModel();
  if (!model.ok()) return model.status();
  out.model = *std::move(model);
  absl::StatusOr<std::vector<v1::RoundRecord>> records = (*sim)->ListRounds();
  if (!records.ok()) return records.status();
  out.rounds = Completed(*records);
  return out;
}

// The same job on a gRPC coordinator with a fedge device runtime per virtual client
// ("v00000000", ...), each on the data the simulator gives that client; the devices'
// messages recorded on their channels.
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
  const int devices = static_cast<int>(config.population());
  std::vector<std::unique_ptr<client::ClientRuntime>> runtimes;
  for (int i = 0; i < devices; ++i) {
    client::ClientRuntimeOptions co;
    co.target = "127.0.0.1:" + std::to_string((*server)->port());
    co.enrollment_token = kToken;
    co.insecure = true;
    co.requested_client_id = absl::StrFormat("v%08d", i);  // the simulator's ids
    co.data = std::make_shared<const data::Dataset>((*data)->ClientData(i));
    co.fetch_wait_seconds = 1;
    co.backoff.initial = absl::Milliseconds(50);
    co.backoff.max = absl::Milliseconds(500);
    co.testing_dp_noise_seed = config.seed();  // as the simulator seeds its devices' shares
    co.interceptors = [&sent] {
      std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> v;
      v.push_back(std::make_unique<RecordingFactory>(&sent));
      return v;
    };
    absl::StatusOr<std::unique_ptr<client::ClientRuntime>> runtime =
        client::ClientRuntime::Create(std::move(co));
    if (!runtime.ok()) return runtime.status();
    runtimes.push_back(*std::move(runtime));
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (auto& r : runtimes) {
    threads.emplace_back([&stop, runtime = r.get()] { runtime->Run(stop).IgnoreError(); });
  }
  struct Joiner {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~Joiner() {
      stop = true;
      for (std::thread& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } joiner{stop, threads};

  // Started once the devices are registered, so that the rounds sample them.
  for (int i = 0; i < 500 && static_cast<int>((*coordinator)->ListClients()->size()) < devices;
       ++i) {
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
  for (std::thread& t : threads) t.join();
  (*server)->Shutdown(absl::Seconds(1));

  RoundResult out;
  for (const auto& [method, bytes] : sent.Get()) {
    if (method.find("UploadUpdate") == std::string::npos) continue;
    v1::UpdateChunk chunk;
    if (!chunk.ParseFromString(bytes)) return absl::InternalError("an unparsable chunk");
    if (chunk.has_header()) {
      ++out.uploads;
      out.upload.header = chunk.header();
      out.upload.payload.clear();
    } else if (chunk.has_data()) {
      out.upload.payload += chunk.data().data();
    }
  }
  absl::StatusOr<v1::ModelProto> model = (*coordinator)->ExportModel(*job);
  if (!model.ok()) return model.status();
  out.model = *std::move(model);
  absl::StatusOr<std::vector<v1::RoundRecord>> records = (*coordinator)->ListRounds(*job);
  if (!records.ok()) return records.status();
  out.rounds = Completed(*records);
  return out;
}

void ExpectSameModel(const v1::ModelProto& a, const v1::ModelProto& b) {
  ASSERT_EQ(a.parameters_size(), b.parameters_size());
  for (int t = 0; t < a.parameters_size(); ++t) {
    EXPECT_EQ(a.parameters(t).SerializeAsString(), b.parameters(t).SerializeAsString())
        << "tensor " << a.parameters(t).name();
  }
}

void ExpectSameRound(const v1::SimConfig& raw) {
  absl::StatusOr<v1::SimConfig> config = sim::ValidateSimConfig(raw);
  ASSERT_THAT(config.status(), IsOk());
  absl::StatusOr<RoundResult> simulated = RunSimulated(*config);
  ASSERT_THAT(simulated.status(), IsOk());
  absl::StatusOr<RoundResult> fleet = RunOverGrpc(*config);
  ASSERT_THAT(fleet.status(), IsOk());
  ASSERT_EQ(simulated->uploads, 1);
  ASSERT_EQ(fleet->uploads, 1);
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
  ExpectSameModel(simulated->model, fleet->model);
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

// SecAgg+ with distributed DP and adaptive clipping (the count as one more masked
// coordinate), two rounds, nobody dropping: the virtual devices and the runtimes send their
// updates only masked, and the two coordinators release the same sums (their digests) and
// end with the same model bits.
void ExpectSameSecureJob(int devices, int threshold) {
  v1::SimConfig c = OneDeviceScenario();
  c.set_population(devices);
  v1::JobConfig& job = *c.mutable_job();
  job.set_rounds(2);
  job.mutable_selection()->set_clients_per_round(devices);
  job.mutable_round_policy()->set_quorum(threshold);
  v1::PrivacyConfig& p = *job.mutable_privacy();
  p.set_clip_norm(0.5);
  p.set_noise_multiplier(0.4);
  p.mutable_adaptive_clipping()->set_target_quantile(0.5);
  p.set_secure_aggregation_threshold(threshold);
  p.set_secure_aggregation_plus(true);
  absl::StatusOr<v1::SimConfig> config = sim::ValidateSimConfig(c);
  ASSERT_THAT(config.status(), IsOk());
  absl::StatusOr<RoundResult> simulated = RunSimulated(*config);
  ASSERT_THAT(simulated.status(), IsOk());
  absl::StatusOr<RoundResult> fleet = RunOverGrpc(*config);
  ASSERT_THAT(fleet.status(), IsOk());
  EXPECT_EQ(simulated->uploads, 0);  // nothing in the clear
  EXPECT_EQ(fleet->uploads, 0);
  ASSERT_EQ(simulated->rounds.size(), 2u);
  ASSERT_EQ(fleet->rounds.size(), 2u);
  for (size_t r = 0; r < 2; ++r) {
    const v1::SecureAggregationRoundMetrics& a = simulated->rounds[r].secure_aggregation();
    const v1::SecureAggregationRoundMetrics& b = fleet->rounds[r].secure_aggregation();
    EXPECT_EQ(a.masked(), devices);
    EXPECT_EQ(b.masked(), devices);
    EXPECT_FALSE(a.sum_digest().empty());
    EXPECT_EQ(a.sum_digest(), b.sum_digest()) << "round " << r + 1;
    EXPECT_EQ(simulated->rounds[r].dp_next_clip_norm(), fleet->rounds[r].dp_next_clip_norm());
  }
  ExpectSameModel(simulated->model, fleet->model);
}

TEST(SimFleetParityTest, SecAggPlusWithDistributedDpGivesTheSameSumsAndModel) {
  ExpectSameSecureJob(/*devices=*/6, /*threshold=*/4);
}

// The simulator's SecAgg+ job of 100 devices (sim/simulator_test.cc) without dropouts, over
// gRPC with 100 ClientRuntimes in this process.
TEST(SimFleetParityTest, HundredDeviceSecAggPlusJobGivesTheSameSumsAndModel) {
  ExpectSameSecureJob(/*devices=*/100, /*threshold=*/60);
}

}  // namespace
}  // namespace fedge
